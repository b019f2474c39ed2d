#!/usr/bin/python
# Copyright: jailyard contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: facts about tenant jails (spec, mounts, sessions, image)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: jail_info
short_description: Facts about tenant jails
description:
  - Returns, for one jail, a glob of names, or all jails, the spec, whether each mount of the plan
    is present, the live sessions (C(sessions) the launcher pids, C(session_info) caller, program, start,
    CPU and memory so far, terminal or not, as C(jailctl sessions --json)) and the image in use.
  - For a tenant service (C(service) true in the spec), C(service_status) tells whether its supervisor loop runs and,
    while it runs, its state (V(running) or V(backoff) between two starts), C(failures) in a row, C(starts),
    C(last_exit) (the launcher's status, 128+N for signal N), C(session) and C(next_start) (epoch seconds).
  - Reads each spec once and the mount table once, so it stays fast with ten thousand jails.
version_added: "1.0.0"
author: jailyard contributors (@jailyard)
extends_documentation_fragment:
  - jailyard
options:
  name:
    description: A jail name or a glob of names.
    type: str
    default: "*"
  disk_usage:
    description: Also add up each tenant's disk usage (walks its files, so slower).
    type: bool
    default: false
  usage:
    description:
      - Add each tenant's beancounters as C(usage), as C(jailctl stats --json) prints them, for V(memory), V(procs),
        V(cpu) (seconds), V(disk) (bytes) and V(inodes) (files), each with C(current), C(peak), C(limit) (0 is none)
        and C(failcnt) (how often the limit struck since the tenant's cgroup was made; V(null) where the node cannot
        tell, such as quotas, which keep no count and say C(full) instead).
      - Read live from the tenant's cgroups and its project quota (a dozen small reads per tenant).
    type: bool
    default: false
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Read-only; it runs the same in check mode.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
"""

EXAMPLES = r"""
- name: Gather facts about every jail
  jail_info:
  register: info

- name: Show the unmounted ones
  ansible.builtin.debug:
    msg: "{{ info.jails | rejectattr('mounted') | map(attribute='name') | list }}"
"""

RETURN = r"""
jails:
  description: One entry per jail, sorted by name.
  returned: always
  type: list
  elements: dict
  sample:
    - name: alice
      uid: 10001
      gid: 10001
      layout: bind
      image: current
      image_id: 3f2a9c1b0d4e
      hostname: alice
      net: false
      limits: {cpu: 60, mem: 536870912, procs: 64, fsize: 1073741824, nofile: 256, wall: 0}
      mounted: true
      mounts: [{target: /, mounted: true}]
      sessions: [4242]
      session_info:
        - {pid: 4242, tenant: alice, caller: 33, caller_name: www-data, program: /bin/sh, terminal: true,
           started: "2026-12-01T17:30:00Z", init: 4243, processes: 2, cpu_seconds: 0.12,
           memory_bytes: 3112960, memory_source: cgroup}
      root: /srv/jails/alice
      net_address: 10.231.0.2
      net_address6: null
      usage:
        memory: {current: 3112960, peak: 52428800, limit: 536870912, failcnt: 0, oom_kills: 0}
        procs: {current: 2, peak: 9, limit: 64, failcnt: 0}
        cpu: {current: 12.5, peak: null, limit: 0.5, failcnt: 240, throttled_seconds: 11.9}
        disk: {current: 1048576, peak: null, limit: 1073741824, failcnt: null, full: false}
        inodes: {current: 12, peak: null, limit: 10000, failcnt: null, full: false}
      service: true
      service_status: {running: true, state: running, failures: 1, starts: 2, last_exit: 137, session: 4242,
                       next_start: null, pid: 4240, program: [/usr/bin/python3, /home/alice/app.py]}
      program: [/home/alice/progs/run.sh, --port, "8000"]
      package: {name: alice, version: "1.2", hash: 5d41402abc4b2a76b9719d911017c592..., program: [/home/alice/progs/run.sh],
                installed: "2026-12-01T17:00:00Z", result: ok, log: /var/lib/jailyard/tenants/alice/package/logs/20261201T170000Z-1.2.log}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.jailyard.config import CONFIG_OPTION, load_config
from ansible.module_utils.jailyard.control import list_sessions
from ansible.module_utils.jailyard.errors import JailError
from ansible.module_utils.jailyard.lifecycle import jail_facts


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "default": "*"},
            "disk_usage": {"type": "bool", "default": False},
            "usage": {"type": "bool", "default": False},
            "config": CONFIG_OPTION,
        },
        supports_check_mode=True,
    )
    try:
        cfg = load_config(module.params["config"])
        facts = jail_facts(cfg, module.params["name"], module.params["disk_usage"], usage=module.params["usage"])
        by_tenant: dict = {}
        if any(fact["sessions"] for fact in facts):
            for s in list_sessions(cfg):  # one pass over /proc for all of them
                by_tenant.setdefault(s.tenant, []).append(s.as_dict())
        for fact in facts:
            fact["session_info"] = by_tenant.get(fact["name"], [])
    except JailError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, jails=facts)


if __name__ == "__main__":
    main()
