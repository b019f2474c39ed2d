#!/usr/bin/python
# Copyright: jailyard contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: create, mount, unmount and remove tenant jails (one or many)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: jail
short_description: Create, mount, unmount and remove tenant jails
description:
  - Converges one jail, or many with O(jails), to a state.
  - With O(service), the tenant's O(program) runs as a supervised service while the jail is mounted.
  - A jail is a tenant's spec (C(tenant.json)), mount plan, passwd/group and home under
    the tenants directory, mounted over the shared read-only base image at the jails directory.
  - C(changed) is true only when something changed; check mode reports exactly what a real run would do;
    diff mode shows the spec and the mount set before and after.
  - Every operation on tenant-writable paths refuses to follow symlinks.
version_added: "1.0.0"
author: jailyard contributors (@jailyard)
extends_documentation_fragment:
  - jailyard
options:
  name:
    description: The jail (tenant) name, matching C(^[a-z_][a-z0-9_-]{0,31}$). Required unless O(jails) is given.
    type: str
  state:
    description:
      - V(present) makes the spec, plan and home exist and leaves mounts as they are.
      - V(mounted) also mounts every mount of the plan, repairing a partly mounted jail.
      - V(unmounted) makes it exist with nothing mounted; refused while a session is live unless O(force); a running tenant service is stopped first.
      - V(absent) unmounts it and removes its spec; home and upper layer are kept unless O(purge).
    type: str
    choices: [present, mounted, unmounted, absent]
    default: mounted
  uid:
    description: Tenant uid, within the node's tenant range, not a host account nor another tenant's. Required to create.
    type: int
  gid:
    description:
      - Tenant gid. Defaults to the uid.
      - Another tenant's group (its uid, or a gid it was given) is refused unless O(shared_gid).
    type: int
  shared_gid:
    description:
      - Allow O(gid) to be another tenant's group, so the two tenants share files through group permissions.
      - Only checked when the jail is created.
    type: bool
    default: false
  layout:
    description: V(bind) (read-only base, private /home and /tmp) or V(overlay) (copy-on-write upper layer over the base).
    type: str
    choices: [bind, overlay]
  image:
    description: Base image id, or V(current) for the newest (applied at each fresh mount).
    type: str
  hostname:
    description: Hostname inside the jail. Defaults to the name.
    type: str
  net:
    description:
      - The jail's network. V(none) or V(false) (the default) gives each session only C(lo).
      - V(private) gives the tenant a network of its own while the jail is mounted (made at mount, removed at unmount,
        so launches do not pay for it), a veth port on the node's bridge with an address from the node's pool
        (C(net_pool4) in C(jailyard.conf)), behind an nftables policy that keeps it from the host's own addresses
        (but the resolvers C(net_dns) names) and from every other tenant, and its own C(/etc/resolv.conf).
        A mapping sets it up further - V(mode) (V(private)), V(address) (a static IPv4 address of the pool,
        else one is leased while mounted), V(address6), V(egress) (an allow-list, each a CIDR or
        C({cidr, proto, port}); unset allows anything but the host and other tenants) and V(publish) (host ports
        forwarded to the tenant, each C({host_port, port, proto})). O(limits.net_rate) caps its rate.
      - V(host) or V(true) lets C(jailrun --net) give the session the host's own network namespace. This is dangerous, the tenant
        sees every host interface and reaches every service bound to 127.0.0.1. Refused unless C(jailyard.conf)
        has C(net_host = 1).
    type: raw
  limits:
    description:
      - Limits the launcher enforces; C(jailrun) options may only tighten them. 0 means unlimited.
      - Keys left out keep the jail's value, or for a new jail the node's default.
    type: dict
    suboptions:
      cpu:
        description: CPU seconds per process.
        type: int
      mem:
        description: Memory in bytes for the tenant (cgroup) and address space per process.
        type: int
      procs:
        description: Processes of the tenant.
        type: int
      fsize:
        description: Largest file in bytes.
        type: int
      nofile:
        description: Open files per process.
        type: int
      wall:
        description: Wall-clock seconds per session.
        type: int
      net_rate:
        description: Bits per second each way for a O(net=private) jail (a tbf qdisc on both ends of its veth).
        type: int
      disk:
        description:
          - Disk quota of the tenant in bytes, with an optional V(K), V(M), V(G) or V(T) suffix (V(10G)), for everything
            it writes on the node (home, tmp, upper layer, whatever uid writes it there), as a project quota whose project id is
            the uid, where the tenants directory's filesystem has project quotas (the jail_storage role).
          - A quota below the current usage is applied and deletes nothing; writes fail with EDQUOT until the tenant frees space.
          - Unset or 0 means no quota (usage is still counted where the filesystem has project quotas).
          - Without project quotas (a kernel built without quota support), or with C(disk_backend = volume) in jailyard.conf, the
            tenant gets a volume of this size instead, made at create, its data in an ext4 image loop-mounted by the mount step;
            full, writes fail with ENOSPC. Growing it grows the volume; shrinking below its usage, or while mounted, is refused.
            A tenant that already has data outside a volume is not moved into one (refused). C(disk_backend = quota) refuses instead.
        type: raw
      inodes:
        description: >-
          Files (inodes) the tenant may hold, a project quota like O(limits.disk); 0 means none. In a volume, the size of its
          inode table, fixed at create (ext4 rounds it to whole tables and counts its own few).
        type: int
      cpu_weight:
        description:
          - The tenant's CPU share against other tenants, 1-10000, 100 being the default
            (cgroup v2 C(cpu.weight), v1 C(cpu.shares) = weight * 1024 / 100).
        type: int
      cpu_rate:
        description:
          - At most this many CPUs for the tenant as a whole (V(0.5), V(2)); cgroup C(cpu.max) or v1 C(cpu.cfs_quota_us)
            over 100 ms. 0 means no cap.
        type: float
      io_weight:
        description:
          - The tenant's block IO share, 1-10000 (v2 C(io.weight)); where only BFQ offers a weight it is capped at 1000;
            ignored where the kernel has neither.
        type: int
      memsw:
        description:
          - Memory plus swap of the tenant in bytes (suffixes as O(limits.disk)), not below O(limits.mem);
            v1 C(memory.memsw.limit_in_bytes), v2 C(memory.swap.max) = memsw - mem.
        type: raw
  program:
    description:
      - The tenant's program, a command line whose first word is an absolute path inside the jail, or a list of words
        (an argv, taken as it is).
      - C(jailrun NAME) with no program runs it, with O(environment) (its plan's C(exec) and C(env) lines), and so does
        O(service). A command line is split into words as a POSIX shell would (Python C(shlex.split)) but no shell runs
        it; write C(/bin/sh -c '...') for shell syntax.
    type: raw
  environment:
    description:
      - Variables of O(program)'s environment when C(jailrun NAME) runs it with no program given (C(--env) overrides
        them); names V([A-Za-z_][A-Za-z0-9_]*). Stored in the spec only when set; unset keeps the jail's.
    type: dict
  service:
    description:
      - Run O(program) as a service while the jail is V(mounted) (O(program) is then required), under the supervisor
        loop of C(module_utils/jailyard/service.py) through C(jailrun), restarted when it fails, after 1, 2, 4 ... up to
        60 seconds; an exit 0 ends it (the next task run starts it again).
      - Under systemd the loop is the unit C(jailyard@NAME.service) (the jail_launcher role installs the template), its
        output in the journal; elsewhere the loop runs detached, its output in C(/var/log/jailyard/service-NAME.log).
      - With O(state=mounted) it is started when it does not run (a running one is left alone, or restarted when
        O(program) changed). O(state=unmounted) and O(state=absent) stop it first, V(false) stops a running one,
        and O(state=present) leaves it as it is.
      - Stored in the spec only when true. Unset keeps the jail's value (false for a new jail).
    type: bool
  packages:
    description:
      - Debian packages for the tenant. With O(admin), those not yet installed (read from the jail's own dpkg status)
        are resolved and downloaded on the host with C(apt-get --download-only) (the jail needs no network), then
        installed into its overlay by tenant root with C(dpkg -i); already installed ones are left alone. The
        result lists them in RV(installed).
      - Not acted on in a run with O(state=unmounted) (installing mounts the jail).
      - Without O(admin), registry information only.
    type: list
    elements: str
  admin:
    description:
      - Tenant root (OpenVZ's VE root). The tenant's programs run as uid 0 of a user namespace whose ids 0-65535 are
        the tenant's own range of host ids (from 10^9, a function of its uid, the same on every node), so it can
        install software into its overlay; it gets no capability on the host (README, "Tenant root").
      - Needs O(layout=overlay). Set at creation; changing it later is refused (remove the jail and create it again).
      - Refused with one error, before anything is made, when the host has no user namespaces
        (C(/proc/sys/user/max_user_namespaces) 0), cannot idmap a mount of the images directory, or the range
        overlaps a host account, group or C(/etc/subuid)/C(/etc/subgid) range.
    type: bool
  package_sources:
    description:
      - A sources.list text for O(packages) (for example C(deb [trusted=yes] copy:/srv/repo ./)), used with a
        private lists directory instead of the host's apt sources. Unset uses the host's sources and lists.
    type: str
  purge:
    description: With V(absent), also delete the tenant's home and upper layer. Refused while a session is live.
    type: bool
    default: false
  force:
    description:
      - Unmount (or remove) even while sessions are live, ending them first (every process of each, SIGKILL,
        as C(jailctl kill)); the actions name them.
    type: bool
    default: false
  jails:
    description:
      - Many jails in one task, each a dict with the options above (O(name) required; O(state), O(purge) and O(force)
        default to the task's). Ansible checks each item's keys and types.
      - Every item is validated before anything changes.
      - If one jail fails (say, a live session refuses its unmount), the task fails at it and reports C(changed)
        for the jails changed before it, C(failed_jail), C(error) and C(not_attempted).
    type: list
    elements: dict
    suboptions:
      name:
        description: The jail name.
        type: str
        required: true
      state:
        description: As O(state); defaults to the task's.
        type: str
        choices: [present, mounted, unmounted, absent]
      uid:
        description: As O(uid).
        type: int
      gid:
        description: As O(gid).
        type: int
      shared_gid:
        description: As O(shared_gid).
        type: bool
      layout:
        description: As O(layout).
        type: str
        choices: [bind, overlay]
      image:
        description: As O(image).
        type: str
      hostname:
        description: As O(hostname).
        type: str
      net:
        description: As O(net).
        type: raw
      limits:
        description: As O(limits); unset keys keep the jail's or the node's defaults.
        type: dict
        suboptions:
          cpu:
            description: CPU seconds per process.
            type: int
          mem:
            description: Memory in bytes.
            type: int
          procs:
            description: Processes of the tenant.
            type: int
          fsize:
            description: Largest file in bytes.
            type: int
          nofile:
            description: Open files per process.
            type: int
          wall:
            description: Wall-clock seconds per session.
            type: int
          net_rate:
            description: As O(limits.net_rate).
            type: int
          disk:
            description: As O(limits.disk).
            type: raw
          inodes:
            description: As O(limits.inodes).
            type: int
          cpu_weight:
            description: As O(limits.cpu_weight).
            type: int
          cpu_rate:
            description: As O(limits.cpu_rate).
            type: float
          io_weight:
            description: As O(limits.io_weight).
            type: int
          memsw:
            description: As O(limits.memsw).
            type: raw
      program:
        description: As O(program).
        type: raw
      environment:
        description: As O(environment).
        type: dict
      service:
        description: As O(service).
        type: bool
      packages:
        description: As O(packages).
        type: list
        elements: str
      admin:
        description: As O(admin).
        type: bool
      purge:
        description: As O(purge); defaults to the task's.
        type: bool
      force:
        description: As O(force); defaults to the task's.
        type: bool
  exclusive:
    description: With O(jails), remove every jail that is not listed (homes kept unless O(purge)).
    type: bool
    default: false
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
"""

EXAMPLES = r"""
- name: Mount a jail for alice
  jail:
    name: alice
    uid: 10001

- name: Converge all tenants in one task, removing unlisted ones (homes kept)
  jail:
    jails:
      - {name: alice, uid: 10001}
      - {name: bob, uid: 10002, layout: overlay, limits: {mem: 268435456}}
      - {name: carol, uid: 10003, limits: {disk: 10G, inodes: 100000, cpu_weight: 200, cpu_rate: 0.5}}
    state: mounted
    exclusive: true

- name: Run carol's web console backend as a service (restarted on failure, stopped before an unmount)
  jail:
    name: carol
    uid: 10003
    program: /usr/bin/python3 /home/carol/console.py --port 8000
    service: true

- name: Give lab1 its own root (tenant root) and python3 in its overlay
  jail:
    name: lab1
    uid: 10010
    layout: overlay
    admin: true
    packages: [python3]

- name: Remove a jail and delete its home
  jail:
    name: bob
    state: absent
    purge: true
"""

RETURN = r"""
actions:
  description: What was (or in check mode would be) done, one line each.
  returned: always
  type: list
  elements: str
  sample: ["create jail alice (uid 10001, bind layout, image 3f2a9c1b0d4e)", "mount alice: / /home /tmp /etc/passwd /etc/group"]
jail:
  description: The jail after the task (single form).
  returned: when O(name) is given
  type: dict
  sample: {"state": "mounted", "spec": {"name": "alice", "uid": 10001}, "mounts": ["/srv/jails/alice"]}
results:
  description: Per-jail results (bulk form) for the jails that changed.
  returned: when O(jails) is given
  type: list
  elements: dict
installed:
  description: Per admin jail, the O(packages) it lacked and that were (in check mode, would be) installed.
  returned: always
  type: dict
  sample: {"lab1": ["python3"]}
count:
  description: Jails in the bulk form, and how many changed.
  returned: when O(jails) is given
  type: dict
  sample: {"total": 1000, "changed": 3}
failed_jail:
  description: The jail the task failed at.
  returned: on failure while applying
  type: str
  sample: bob
error:
  description: Why that jail failed.
  returned: on failure while applying
  type: str
not_attempted:
  description: The jails after the failed one, left as they were.
  returned: on failure while applying
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.jailyard.config import CONFIG_OPTION, load_config
from ansible.module_utils.jailyard.errors import JailError
from ansible.module_utils.jailyard.lifecycle import STATES, PartialFailure, converge_many
from ansible.module_utils.jailyard.packages import ensure_packages

LIMITS = {key: {"type": "int"} for key in ("cpu", "mem", "procs", "fsize", "nofile", "wall", "net_rate")}
# Resource guarantees (issue 16): sizes are raw (10G), checked by the spec, which names a bad value.
LIMITS.update({"disk": {"type": "raw"}, "inodes": {"type": "int"}, "cpu_weight": {"type": "int"}})
LIMITS.update({"cpu_rate": {"type": "float"}, "io_weight": {"type": "int"}, "memsw": {"type": "raw"}})
# One jail's options: the single form's, and each item of `jails` (unset: None, so the task's apply).
ITEM_OPTIONS = {
    "name": {"type": "str"},
    "state": {"type": "str", "choices": list(STATES)},
    "uid": {"type": "int"},
    "gid": {"type": "int"},
    "shared_gid": {"type": "bool"},
    "layout": {"type": "str", "choices": ["bind", "overlay"]},
    "image": {"type": "str"},
    "hostname": {"type": "str"},
    "net": {"type": "raw"},
    "limits": {"type": "dict", "options": LIMITS},
    "program": {"type": "raw"},
    "environment": {"type": "dict"},
    "service": {"type": "bool"},
    "packages": {"type": "list", "elements": "str"},
    "admin": {"type": "bool"},
    "purge": {"type": "bool"},
    "force": {"type": "bool"},
}
TASK_DEFAULTS = {"state": "mounted", "shared_gid": False, "purge": False, "force": False}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **{key: {**spec, "default": TASK_DEFAULTS[key]} if key in TASK_DEFAULTS else spec for key, spec in ITEM_OPTIONS.items()},
            "jails": {"type": "list", "elements": "dict", "options": {**ITEM_OPTIONS, "name": {"type": "str", "required": True}}},
            "exclusive": {"type": "bool", "default": False},
            "package_sources": {"type": "str"},
            "config": CONFIG_OPTION,
        },
        mutually_exclusive=[("name", "jails")],
        required_one_of=[("name", "jails")],
        supports_check_mode=True,
    )
    p = module.params
    single = p["jails"] is None
    try:
        cfg = load_config(p["config"])
        if single:
            items = [{k: p[k] for k in ITEM_OPTIONS}]
            defaults = {}
        else:
            items = p["jails"]
            defaults = {k: p[k] for k in ("state", "shared_gid", "purge", "force")}
        results = converge_many(cfg, items, check=module.check_mode, exclusive=p["exclusive"] and not single, defaults=defaults)
    except PartialFailure as exc:
        changed = [r for r in exc.results if r.changed]
        module.fail_json(
            msg=str(exc),
            changed=bool(changed),
            actions=[a for r in changed for a in r.actions],
            results=[r.as_dict() for r in changed],
            failed_jail=exc.failed,
            error=exc.error,
            not_attempted=exc.not_attempted,
        )
    except JailError as exc:
        module.fail_json(msg=str(exc))
    installed = _install_packages(results, module.check_mode, p["package_sources"], module)
    changed = [r for r in results if r.changed or r.name in installed]
    diff = [{"before": r.before, "after": r.after, "before_header": r.name, "after_header": r.name} for r in changed]
    actions = [a for r in results for a in r.actions]
    if single:
        r = results[0]
        module.exit_json(
            changed=r.changed or r.name in installed, actions=actions, jail=r.after, diff=diff[0] if diff else {}, installed=installed
        )
    module.exit_json(
        changed=bool(changed),
        actions=actions,
        results=[r.as_dict() for r in changed],
        count={"total": len(results), "changed": len(changed)},
        diff=diff,
        installed=installed,
    )


def _install_packages(results: list, check: bool, sources: str | None, module: AnsibleModule) -> dict[str, list[str]]:
    """The packages of the admin jails that lacked them: installed now (or, in check mode, that would be)."""
    done: dict[str, list[str]] = {}
    for r in results:
        spec = r.after.get("spec") or {}
        if not spec.get("admin") or not spec.get("packages") or r.after.get("state") == "unmounted":
            continue  # an unmounted jail stays so: its packages wait for the next present or mounted run
        if check and (r.before.get("spec") is None):
            done[r.name] = list(spec["packages"])  # a jail check mode did not create: every package would be installed
            continue
        try:
            names = ensure_packages(r.name, spec["packages"], check=check, sources=sources)
        except JailError as exc:
            module.fail_json(msg=f"packages of {r.name}: {exc}", installed=done)
        if names:
            done[r.name] = names
    return done


if __name__ == "__main__":
    main()
