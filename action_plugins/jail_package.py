# Copyright: jailyard contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of jail_package: each `src` (a directory or a tarball on the controller) is copied to the
node's temporary directory as one tarball and given to the module as `path`."""

from __future__ import annotations

import os
import tarfile
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def _send(self, src: str, tmp_local: str, index: int) -> str:
        src = self._find_needle("files", src)
        local = src
        if os.path.isdir(src):
            local = os.path.join(tmp_local, f"package-{index}.tar")
            with tarfile.open(local, "w") as tar:
                # symlinks are stored as symlinks (never followed), so the node refuses them as it would in a directory
                tar.add(src, arcname=".", recursive=True)
        remote = self._connection._shell.join_path(self._connection._shell.tmpdir, f"package-{index}.tar")
        self._transfer_file(local, remote)
        self._fixup_perms2((self._connection._shell.tmpdir, remote))
        return remote

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        self._make_tmp_path()
        try:
            with tempfile.TemporaryDirectory() as tmp_local:
                items = args.get("packages")
                if items:
                    items = [dict(item) for item in items]
                    for i, item in enumerate(items):
                        if item.get("src"):
                            item["path"] = self._send(item.pop("src"), tmp_local, i)
                    args["packages"] = items
                elif args.get("src"):
                    args["path"] = self._send(args.pop("src"), tmp_local, 0)
                result.update(self._execute_module(module_name="jail_package", module_args=args, task_vars=task_vars))
        except AnsibleActionFail as exc:
            result.update(failed=True, msg=str(exc))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
