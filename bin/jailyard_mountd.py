"""The mount service: the launcher's mount step, kept started (docs/design.md, "A launch").

    python3 -I -S jailyard-mount --serve --config CONF [--socket PATH] [--idle SECONDS]

A cold launch spends most of its time starting the mount step's interpreter.
This runs the same step (jailyard_mount.mount_step: one Python implementation
of mounting) in a process that is already running: under systemd the socket
unit jailyard-mount.socket starts it on the first connection and hands it the
listening socket (LISTEN_FDS); elsewhere it binds <run_dir>/mount.sock itself.
It exits after --idle seconds without a request (0: never); the socket unit
starts it again.

The protocol: one SEQPACKET connection per request, one packet with the jail
name and, as SCM_RIGHTS, the tenant's lock file descriptor, which the caller
holds exclusively; one byte back, 0 when the jail is mounted. The only verb is
"mount this jail as its plan says". What it trusts and refuses:
- the peer: only root (SO_PEERCRED uid 0; the socket is 0600 root too), and
  only a peer in this process's own mount namespace (else its mounts would not
  be the caller's);
- the name: only as a name, checked with the tenants' pattern;
- the descriptor: only if it is <run_dir>/locks/NAME.lock (same device and
  inode) and this process can take the lock on it without waiting, which it
  can exactly when it is the caller's own locked open file; otherwise it
  refuses and the caller runs the step itself;
- everything else (config, plan, spec, image) it reads from the root-owned
  files with the step's own checks, for every request.
"""

from __future__ import annotations

import fcntl
import posix
import select
import socket
import stat
import struct
import sys
import syslog

from jailyard_mount import mount_step

from jailyard.conffile import ConfValues
from jailyard.errors import JailError
from jailyard.plan import is_valid_name

SOCKET_NAME = "mount.sock"  # launcher/mountsvc.h MOUNT_SERVICE_SOCKET
SD_LISTEN_FDS_START = 3
MOUNTED, REFUSED = b"\x00", b"\x01"


def main(argv: list[str]) -> int:
    args = list(argv)
    config = path = None
    idle = 0.0
    try:
        while args:
            opt = args.pop(0)
            if opt == "--config":
                config = args.pop(0)
            elif opt == "--socket":
                path = args.pop(0)
            elif opt == "--idle":
                idle = float(args.pop(0))
            else:
                raise ValueError(opt)
    except (IndexError, ValueError):
        print("jailyard-mount: usage: jailyard-mount --serve --config CONF [--socket PATH] [--idle SECONDS]", file=sys.stderr)
        return 2
    if config is None:
        print("jailyard-mount: --serve needs --config", file=sys.stderr)
        return 2
    try:
        cfg = ConfValues(config)
    except JailError as exc:
        print(f"jailyard-mount: {exc}", file=sys.stderr)
        return 1
    srv = listening_socket(path or f"{cfg.run_dir}/{SOCKET_NAME}")
    print(f"jailyard-mount: serving on {srv.getsockname() or 'the socket from systemd'}", flush=True)
    serve(srv, config, idle)
    return 0


def listening_socket(path: str) -> socket.socket:
    """The socket systemd passed (LISTEN_PID is us, LISTEN_FDS 1), else path bound now (0600 root)."""
    env = posix.environ
    if env.get(b"LISTEN_PID") == str(posix.getpid()).encode() and env.get(b"LISTEN_FDS") == b"1":
        return socket.socket(fileno=SD_LISTEN_FDS_START)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        if stat.S_ISSOCK(posix.lstat(path).st_mode):
            posix.unlink(path)  # left by a service that was killed
    except FileNotFoundError:
        pass
    old = posix.umask(0o177)
    try:
        srv.bind(path)
    finally:
        posix.umask(old)
    srv.listen(128)
    return srv


def serve(srv: socket.socket, config: str, idle: float) -> None:
    own_ns = posix.readlink("/proc/self/ns/mnt")
    while True:
        if idle > 0 and not select.select([srv], [], [], idle)[0]:
            return  # idle: the socket unit starts a new one on the next request
        conn, _addr = srv.accept()
        with conn:
            conn.settimeout(10)  # a request is one packet, sent with the connect
            try:
                answer = handle(conn, config, own_ns)
            except (OSError, JailError, UnicodeDecodeError, ValueError) as exc:
                log(syslog.LOG_ERR, f"request refused: {exc}")
                answer = REFUSED
            except Exception as exc:  # noqa: BLE001  a bug must cost one launch its service, not every launch
                log(syslog.LOG_ERR, f"internal error: {type(exc).__name__}: {exc}")
                answer = REFUSED
            try:
                conn.send(answer)
            except OSError:
                pass  # the caller went away; it never launches without checking the mounts itself


def handle(conn: socket.socket, config: str, own_ns: str) -> bytes:
    # The packet first, whoever sent it: its descriptors are closed below in every case, and a
    # refusal read before it would reset the connection instead of answering.
    msg, ancdata, flags, _addr = conn.recvmsg(64, socket.CMSG_SPACE(2 * 4))
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += struct.unpack(f"{len(data) // 4}i", data[: len(data) - len(data) % 4])
    try:
        pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if uid != 0:
            raise JailError(f"peer uid {uid} is not root")
        if posix.readlink(f"/proc/{pid}/ns/mnt") != own_ns:
            raise JailError(f"peer pid {pid} is in another mount namespace")
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) != 1:
            raise JailError("expected one packet with a name and one descriptor")
        name = msg.decode("ascii")
        if not is_valid_name(name):
            raise JailError(f"invalid jail name {name!r}")
        cfg = ConfValues(config)
        check_lock(cfg, name, fds[0])
        actions = mount_step(cfg, config, name)
    finally:
        for fd in fds:
            posix.close(fd)
    if actions:
        log(syslog.LOG_INFO, "; ".join(actions))
    return MOUNTED


def check_lock(cfg: ConfValues, name: str, fd: int) -> None:
    """fd must be the tenant's lock file, held by the caller: then taking it again does not wait."""
    path = f"{cfg.run_dir}/locks/{name}.lock"
    held, there = posix.fstat(fd), posix.stat(path, follow_symlinks=False)
    if not stat.S_ISREG(held.st_mode) or (held.st_dev, held.st_ino) != (there.st_dev, there.st_ino):
        raise JailError(f"the descriptor sent for {name} is not {path}")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise JailError(f"{path} is locked by someone else than the caller") from None


def log(priority: int, text: str) -> None:
    print(f"jailyard-mount: {text}", file=sys.stderr, flush=True)
    syslog.syslog(priority, f"jailyard-mount: {text}")
