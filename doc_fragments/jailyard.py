"""The documentation the jailyard modules share (jail, jail_info, jail_image): `extends_documentation_fragment: [jailyard]`."""

from __future__ import annotations


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    DOCUMENTATION = r"""
options:
  config:
    description:
      - The node config shared with the launcher, C(jailctl) and the other modules.
      - It must exist, be a regular file (not a symlink) owned by root and writable only by root, in a directory
        owned by root and writable only by root, as the launcher requires; otherwise the module fails naming it.
    type: path
    default: /etc/jailyard/jailyard.conf
notes:
  - Runs as root on the jail host.
"""
