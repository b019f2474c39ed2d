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
    is present, the live sessions and the image in use.
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
      sessions: []
      root: /srv/jails/alice
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.jailyard.config import CONFIG_OPTION, load_config
from ansible.module_utils.jailyard.errors import JailError
from ansible.module_utils.jailyard.lifecycle import jail_facts


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "default": "*"},
            "disk_usage": {"type": "bool", "default": False},
            "config": CONFIG_OPTION,
        },
        supports_check_mode=True,
    )
    try:
        facts = jail_facts(load_config(module.params["config"]), module.params["name"], module.params["disk_usage"])
    except JailError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, jails=facts)


if __name__ == "__main__":
    main()
