#!/usr/bin/python
# Copyright: jailyard contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: build, pack, install and garbage-collect the read-only base images of jails."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: jail_image
short_description: Build, pack, install and garbage-collect jail base images
description:
  - V(built) runs debootstrap (downloading once into a tarball cache) for a recipe (suite, mirror, packages),
    strips every setuid/setgid bit and file capability, names the tree by its content hash and makes it current.
    A recipe that was built before is not built again unless O(rebuild).
  - V(packed) makes a tar of an image and its sha256, for copying to other nodes.
  - V(installed) verifies an archive's sha256 and its content hash, unpacks it beside the others and makes it
    current; a corrupt or partial archive is refused and nothing half-copied is used.
  - O(gc) removes images that are neither current nor used by any tenant.
version_added: "1.0.0"
author: jailyard contributors (@jailyard)
extends_documentation_fragment:
  - jailyard
options:
  state:
    description: What to do.
    type: str
    choices: [built, packed, installed]
    default: built
  suite:
    description: Debian suite.
    type: str
    default: bookworm
  mirror:
    description: Debian mirror URL. Empty means the host's own apt mirror.
    type: str
    default: ""
  packages:
    description: Extra packages in the image.
    type: list
    elements: str
    default: []
  variant:
    description: debootstrap variant.
    type: str
    choices: [minbase, buildd]
    default: minbase
  files:
    description:
      - The jail's own files written over what debootstrap made (hosts, resolv.conf, hostname, policy-rc.d). They are
        part of the recipe, so a changed file builds a new image. Paths are relative to the image root, under C(etc/),
        C(usr/sbin/) or C(usr/local/); owner root.
      - Omitted, the module's built-in defaults are used (no network, hostname C(jail), no services).
    type: list
    elements: dict
    suboptions:
      path:
        description: Path inside the image, relative (C(etc/hosts)).
        type: str
        required: true
      content:
        description: The file's text.
        type: str
        required: true
      mode:
        description: Octal mode; setuid, setgid, sticky and other-writable bits are refused.
        type: str
        default: "0644"
  cache_dir:
    description: Where debootstrap's package tarballs are kept so a rebuild downloads nothing.
    type: path
    default: /var/cache/jailyard/debootstrap
  rebuild:
    description: Build again even if this recipe was built before.
    type: bool
    default: false
  image:
    description: The image to pack (an id or V(current)).
    type: str
    default: current
  archive:
    description: The archive to install (with V(installed)).
    type: path
  sha256:
    description: The archive's expected sha256 (with V(installed)).
    type: str
  gc:
    description: Also remove images that are neither current nor in use.
    type: bool
    default: false
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: The diff shows the current image and the images on the node before and after.
"""

EXAMPLES = r"""
- name: Build the base image with Python for a teaching lab
  jail_image:
    suite: bookworm
    packages: [python3, build-essential, vim-tiny]
    gc: true

- name: Build it with the jail's /etc from templates
  jail_image:
    files:
      - path: etc/resolv.conf
        content: "{{ lookup('ansible.builtin.template', 'etc/resolv.conf.j2') }}"
      - path: usr/sbin/policy-rc.d
        content: "#!/bin/sh\nexit 101\n"
        mode: "0755"

- name: Pack it on the build host
  jail_image:
    state: packed
  register: packed
"""

RETURN = r"""
image_id:
  description: The image built, packed or installed.
  returned: success
  type: str
  sample: 4079fae9ce8f40d2
archive:
  description: Path of the packed image (V(packed)).
  returned: when state is packed
  type: str
sha256:
  description: sha256 of the packed image (V(packed)).
  returned: when state is packed
  type: str
actions:
  description: What was (or would be) done.
  returned: always
  type: list
  elements: str
removed:
  description: Images removed by O(gc).
  returned: always
  type: list
  elements: str
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.jailyard import image, imagebuild
from ansible.module_utils.jailyard.config import CONFIG_OPTION, load_config
from ansible.module_utils.jailyard.errors import JailError


def _image_file(module: AnsibleModule, entry: dict) -> tuple[str, str, int]:
    try:
        mode = int(entry["mode"], 8)
    except ValueError:
        module.fail_json(msg=f"invalid mode {entry['mode']!r} for image file {entry['path']}: expected an octal string like '0644'")
    return entry["path"], entry["content"], mode


def _observed(cfg: object) -> dict:
    return {"current": image.current_image(cfg), "images": image.all_images(cfg)}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["built", "packed", "installed"], "default": "built"},
            "suite": {"type": "str", "default": "bookworm"},
            "mirror": {"type": "str", "default": ""},
            "packages": {"type": "list", "elements": "str", "default": []},
            "variant": {"type": "str", "choices": ["minbase", "buildd"], "default": "minbase"},
            "files": {
                "type": "list",
                "elements": "dict",
                "options": {
                    "path": {"type": "str", "required": True},
                    "content": {"type": "str", "required": True},
                    "mode": {"type": "str", "default": "0644"},
                },
            },
            "cache_dir": {"type": "path", "default": "/var/cache/jailyard/debootstrap"},
            "rebuild": {"type": "bool", "default": False},
            "image": {"type": "str", "default": "current"},
            "archive": {"type": "path"},
            "sha256": {"type": "str"},
            "gc": {"type": "bool", "default": False},
            "config": CONFIG_OPTION,
        },
        required_if=[("state", "installed", ("archive", "sha256"))],
        supports_check_mode=True,
    )
    p = module.params
    result = {"changed": False, "actions": [], "removed": []}
    try:
        cfg = load_config(p["config"])
        before = _observed(cfg)
        if p["state"] == "built":
            recipe = imagebuild.Recipe(
                suite=p["suite"],
                mirror=p["mirror"] or imagebuild.host_mirror(),
                packages=tuple(p["packages"]),
                variant=p["variant"],
                files=imagebuild.JAIL_FILES if p["files"] is None else tuple(_image_file(module, f) for f in p["files"]),
            )
            changed, image_id, actions = imagebuild.ensure_image(
                cfg, recipe, Path(p["cache_dir"]), rebuild=p["rebuild"], check=module.check_mode
            )
            result.update(changed=changed, image_id=image_id, actions=actions)
        elif p["state"] == "packed":
            image_id = image.resolve_image(cfg, p["image"])
            archive = Path(cfg.images_dir) / f"{image_id}.tar"
            if module.check_mode:
                result.update(changed=not archive.exists(), image_id=image_id, archive=str(archive))
            else:
                existed = archive.exists()
                archive, checksum = imagebuild.pack_image(cfg, image_id)
                result.update(changed=not existed, image_id=image_id, archive=str(archive), sha256=checksum)
        else:
            if module.check_mode:
                pending = imagebuild.install_pending(cfg, Path(p["archive"]))
                result.update(changed=pending, actions=[f"verify and install {p['archive']}"] if pending else [])
            else:
                changed, image_id = imagebuild.install_packed(cfg, Path(p["archive"]), p["sha256"])
                actions = [] if image_id in before["images"] else [f"install image {image_id} from {p['archive']}"]
                if changed and before["current"] != image_id:
                    actions.append(f"make image {image_id} current")
                result.update(changed=bool(actions), image_id=image_id, actions=actions)
        if p["gc"]:
            removed = image.gc_images(cfg, check=module.check_mode)
            result["removed"] = removed
            result["changed"] = result["changed"] or bool(removed)
        if module._diff:
            after = _observed(cfg)
            if module.check_mode:  # predicted: what would be current, what gc would leave
                new_id = result.get("image_id") if p["state"] != "packed" else None
                images = sorted((set(before["images"]) | ({new_id} if new_id else set())) - set(result["removed"]))
                after = {"current": new_id or before["current"], "images": images}
            result["diff"] = {"before": before, "after": after}
    except JailError as exc:
        module.fail_json(msg=str(exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
