"""Run the cluster scenario's tasks in a podman node through nsenter(1), not `podman exec`.

The containers.podman connection pays for one `podman exec` (a podman process,
runc, conmon and a cleanup process: 0.4-0.8 s on a busy 2-core machine) for
every step of every task, and a task takes 3 to 5 steps; the launcher role's
file-by-file copies made the scenario's converge and upgrade cost minutes.
This plugin enters the node's namespaces (mount, UTS, IPC, network and PID)
with nsenter from util-linux: a few milliseconds a step. Its commands stay in
the controller's cgroup (as community.docker's nsenter connection's do): the
roles' tasks do not care, and the sessions verify starts go through `podman
exec` (testinfra), into the node's cgroup. The node's
PID 1 is asked of podman once per connection, so a killed node is unreachable
(never a recycled host pid); commands get a clean environment, as `podman
exec` gives, and files are streamed in and out through the node's own view.

It is a test harness for molecule/cluster only (docs/testing.md): production
nodes are reached over SSH.
"""

from __future__ import annotations

import os
import shlex
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

DOCUMENTATION = r"""
name: jailyard_node
short_description: Run in a local podman container's namespaces through nsenter
description:
  - Resolves the container's PID 1 with C(podman inspect) (by the inventory host name) and runs
    every command under C(nsenter --target PID --mount --uts --ipc --net --pid).
options:
  remote_addr:
    description: The container's name.
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
"""

display = Display()

# What a command in the node sees of the environment: what `podman exec` gives, not the controller's.
NODE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8", "TERM": "xterm"}


class Connection(ConnectionBase):
    transport = "jailyard_node"
    # With ANSIBLE_PIPELINING (molecule.yml), a module is one command fed on stdin: no temporary
    # directory made, written, made executable and removed in the node for each.
    has_pipelining = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pid = None

    def _connect(self):
        if not self._connected:
            name = self.get_option("remote_addr")
            out = subprocess.run(
                ["podman", "inspect", "--type", "container", "--format", "{{.State.Running}} {{.State.Pid}}", name],
                capture_output=True,
                text=True,
                check=False,
            )
            running, pid = [*out.stdout.split(), "", ""][:2]
            if out.returncode != 0 or running != "true" or not pid.isdigit() or int(pid) <= 1:
                raise AnsibleConnectionFailure(f"container {name} is not running: {out.stdout.strip()} {out.stderr.strip()}")
            self._pid = pid
            self._connected = True
            display.vvv(f"nsenter into {name} (pid {pid})", host=name)
        return self

    def _nsenter(self, argv):
        return ["nsenter", f"--target={self._pid}", "--mount", "--uts", "--ipc", "--net", "--pid", "--", *argv]

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        self._connect()
        shell = self._play_context.executable or "/bin/sh"
        argv = self._nsenter([shell, "-c", to_text(cmd)])
        display.vvv(f"EXEC {shlex.join(argv)}", host=self._play_context.remote_addr)
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=NODE_ENV, cwd="/")
        stdout, stderr = p.communicate(in_data)
        return p.returncode, stdout, stderr

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        self._connect()
        with open(to_bytes(in_path), "rb") as src:
            p = subprocess.run(
                self._nsenter(["/bin/sh", "-c", 'cat > "$1"', "sh", out_path]),
                stdin=src,
                capture_output=True,
                env=NODE_ENV,
                cwd="/",
                check=False,
            )
        if p.returncode != 0:
            raise AnsibleError(f"cannot write {out_path}: {to_text(p.stderr)}")

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        self._connect()
        with open(to_bytes(out_path), "wb") as dst:
            p = subprocess.run(
                self._nsenter(["cat", "--", in_path]), stdout=dst, stderr=subprocess.PIPE, env=NODE_ENV, cwd="/", check=False
            )
        if p.returncode != 0:
            os.unlink(to_bytes(out_path))
            raise AnsibleError(f"cannot read {in_path}: {to_text(p.stderr)}")

    def close(self):
        self._connected = False
