#!/usr/bin/python3 -I -S
"""A prototype mount service for the cold-launch candidates (bench only, never installed).

    mountsvc.py --config CONF --socket PATH [--fork]

Listens on a unix SEQPACKET socket (mode 0600, so only root connects), and for each
connection: checks the peer is root (SO_PEERCRED), reads one jail name, runs the same
mount step a cold launch runs today (bin/jailyard_mount.py's main, which validates the name and
takes the tenant lock) in this already-started interpreter, and answers one byte, 0 when
the jail is mounted. With --fork each request runs in a fork of this warm process (the
"zygote" candidate): a request that crashes or leaks cannot harm the next one.
Prints "ready" once listening; exits on SIGTERM.
"""

import posix
import signal
import socket
import struct
import sys

sys.path.insert(0, sys.argv[0].rpartition("/")[0] + "/../../module_utils")
sys.path.insert(0, sys.argv[0].rpartition("/")[0] + "/../../bin")

import jailyard_mount as helper  # the mount step's program (bin/jailyard_mount.py)

from jailyard.lock import tenant_lock  # noqa: F401  (warm too: the step imports it lazily)


def serve(config: str, path: str, fork: bool) -> None:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old = posix.umask(0o177)
    srv.bind(path)
    posix.umask(old)
    srv.listen(64)
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        with conn:
            _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid != 0:
                conn.send(b"\x01")
                continue
            name = conn.recv(256).decode("ascii", "replace")
            if fork:
                child = posix.fork()
                if child == 0:
                    posix._exit(helper.main(["--config", config, name]))
                _, status = posix.waitpid(child, 0)
                code = posix.waitstatus_to_exitcode(status)
            else:
                code = helper.main(["--config", config, name])
            conn.send(b"\x00" if code == 0 else b"\x01")


def main() -> None:
    args = sys.argv[1:]
    config = args[args.index("--config") + 1]
    path = args[args.index("--socket") + 1]
    signal.signal(signal.SIGTERM, lambda *_: posix._exit(0))
    serve(config, path, "--fork" in args)


if __name__ == "__main__":
    main()
