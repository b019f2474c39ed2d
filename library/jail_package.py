#!/usr/bin/python
# Copyright: jailyard contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: install, update and uninstall tenant packages (issue 15)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: jail_package
short_description: Install, update and uninstall tenant packages
description:
  - A tenant package is a directory or a tarball with C(config.json) (see docs/package.schema.json; name, version, program
    as an argv, environment, layout, limits, Debian C(depends), C(network)) and C(progs/), the files that become
    C(/home/NAME/progs) in the tenant's jail, with an optional C(progs/install_deps.sh).
  - V(present) installs or updates it (README, "Tenant packages"). A new tenant is created as an overlay tenant,
    an admin one when the package has C(install_deps.sh) or C(depends);
    the Debian C(depends) are installed by tenant root; C(progs/) is staged in the jail by the tenant itself;
    C(install_deps.sh) runs once per package content as tenant root inside the tenant's jail; then the tenant's
    C(~/progs) is switched to the new one. Files the tenant made itself are never lost (in C(~/progs), those the old
    version did not ship are carried over, or kept in C(~/progs.kept/) where the new version ships the same path).
    Last the spec gets the program, its environment and the registry record (RV(packages)).
  - Idempotent by content hash; a failed install leaves the tenant at its previous version, its log kept and its
    record saying C(result=failed) (the task fails naming the log).
  - V(absent) removes the packaged tenant (its home kept unless O(purge)); a tenant no package made is refused.
  - Hostile packages (absolute or C(..) paths, symlinks, hard links, device nodes, FIFOs, size or file-count bombs)
    are refused before anything changes; setuid bits and write bits for others are cleared.
  - With the action plugin (C(action_plugins/jail_package.py)), O(src) is a path on the controller, copied to the node;
    the module itself takes O(path) on the node.
version_added: "1.0.0"
author: jailyard contributors (@jailyard)
extends_documentation_fragment:
  - jailyard
options:
  path:
    description: The package on the node (a directory or a tarball). Required for O(state=present) unless O(packages).
    type: path
  src:
    description: The package on the controller; the action plugin copies it to the node and sets O(path).
    type: path
  name:
    description: The tenant, for O(state=absent).
    type: str
  state:
    description: V(present) installs or updates, V(absent) removes.
    type: str
    choices: [present, absent]
    default: present
  purge:
    description: With O(state=absent), also delete the tenant's home, upper layer and install logs.
    type: bool
    default: false
  sources:
    description: A sources.list text for the packages' Debian C(depends) (as the jail module's C(package_sources)).
    type: str
  packages:
    description: Many packages in one task, each as the options above (bulk).
    type: list
    elements: dict
    suboptions:
      path:
        description: As O(path).
        type: path
      src:
        description: As O(src).
        type: path
      name:
        description: As O(name).
        type: str
      state:
        description: As O(state).
        type: str
        choices: [present, absent]
        default: present
      purge:
        description: As O(purge).
        type: bool
        default: false
"""

EXAMPLES = r"""
- name: Install the hello package from the controller
  jail_package:
    src: files/hello-1.0.tar.gz

- name: Install many packages in one task
  jail_package:
    packages:
      - src: files/web
      - src: files/worker.tar.gz
      - name: old-app
        state: absent
"""

RETURN = r"""
packages:
  description: One entry per package, in order.
  returned: always
  type: list
  elements: dict
  sample:
    - name: hello
      action: update
      changed: true
      before: {name: hello, version: "1.0", hash: 0f1e..., result: ok}
      after: {name: hello, version: "1.1", hash: 9a8b..., program: [/home/hello/progs/run.sh], installed: "2026-12-01T17:00:00Z",
              result: ok, log: /var/lib/jailyard/tenants/hello/package/logs/20261201T170000Z-1.1.log}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.jailyard.config import CONFIG_OPTION, load_config
from ansible.module_utils.jailyard.errors import JailError
from ansible.module_utils.jailyard.package import install, uninstall

ITEM = {
    "path": {"type": "path"},
    "src": {"type": "path"},
    "name": {"type": "str"},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "purge": {"type": "bool", "default": False},
}


def one(cfg, item, check, sources):
    if item["state"] == "absent":
        if not item.get("name"):
            raise JailError("state=absent needs name")
        result = uninstall(cfg, item["name"], purge=item["purge"], check=check)
        return {**result, "action": "remove" if result["changed"] else "none"}
    if not item.get("path"):
        raise JailError("state=present needs path (or src, through the action plugin)")
    return install(cfg, item["path"], check=check, sources=sources)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **ITEM,
            "sources": {"type": "str"},
            "packages": {"type": "list", "elements": "dict", "options": ITEM},
            "config": CONFIG_OPTION,
        },
        supports_check_mode=True,
    )
    params = module.params
    items = params["packages"] if params["packages"] else [{key: params[key] for key in ITEM}]
    results = []
    try:
        cfg = load_config(params["config"])
        for item in items:
            results.append(one(cfg, item, module.check_mode, params["sources"]))
    except JailError as exc:
        module.fail_json(msg=str(exc), packages=results, changed=any(r["changed"] for r in results))
    changed = any(r["changed"] for r in results)
    diff = [
        {"before_header": r["name"], "after_header": r["name"], "before": r["before"], "after": r["after"]} for r in results if r["changed"]
    ]
    module.exit_json(changed=changed, packages=results, diff=diff)


if __name__ == "__main__":
    main()
