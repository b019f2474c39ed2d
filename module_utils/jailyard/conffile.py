"""The format of /etc/jailyard/jailyard.conf, its trust checks and its defaults, without heavy imports.

One contract with the C launcher (docs/contracts.md, "/etc/jailyard/jailyard.conf"):
`KEYS` is the same table as `config_keys` in launcher/parse.c, and `read_config`
makes the checks jailrun's `load_config` makes, so the modules (which run as
root) never act on a config the launcher refuses. tests/config-corpus holds
both parsers to the same answers. `config.Config` is the typed view everything
else uses; the launcher's mount step, which starts a fresh interpreter on every
cold launch, reads the plain values from here.
"""

from __future__ import annotations

import errno
import posix  # not os (1 ms to import) nor re: the mount step reads this on every cold launch
import stat

from .errors import JailError

MAX_FILE = 65536  # JR_MAX_FILE: a larger config is refused
MAX_VALUE = 1023  # JR_PATH_MAX - 1: the longest value of any key
MAX_CALLERS = 64  # JR_MAX_CALLERS
CGROUP_NAME_MAX = 32  # JR_NAME_MAX
UID_LIMIT = 4294967294  # (uid_t)-1 is "no change" to the kernel
INT_LIMIT = 1 << 62

# key -> (type, min, max, default), in the order Config.render() writes them.
KEYS: dict[str, tuple[str, int, int, object]] = {
    "images_dir": ("path", 0, 0, "/var/lib/jailyard/images"),
    "tenants_dir": ("path", 0, 0, "/var/lib/jailyard/tenants"),
    "jails_dir": ("path", 0, 0, "/srv/jails"),
    "run_dir": ("path", 0, 0, "/run/jailyard"),
    "mount_helper": ("path", 0, 0, "/usr/local/lib/jailyard/jailyard-mount"),
    "python": ("path", 0, 0, "/usr/bin/python3"),
    "lib_dir": ("path", 0, 0, "/usr/local/lib/jailyard"),
    "allowed_callers": ("uids", 0, UID_LIMIT, (0, 33)),
    "uid_min": ("number", 1, UID_LIMIT, 10000),  # a tenant is never root
    "uid_max": ("number", 1, UID_LIMIT, 59999),
    "cgroup_name": ("cgroup", 0, 0, "jailyard"),
    "default_cpu": ("number", 0, INT_LIMIT, 60),
    "default_mem": ("number", 0, INT_LIMIT, 512 * 1024 * 1024),
    "default_procs": ("number", 0, INT_LIMIT, 64),
    "default_fsize": ("number", 0, INT_LIMIT, 1024 * 1024 * 1024),
    "default_nofile": ("number", 0, INT_LIMIT, 256),
    "default_wall": ("number", 0, INT_LIMIT, 0),
    # issue 17, tenant networks: the launcher only accepts these; network.py checks what they mean.
    "net_bridge": ("word", 0, 0, "jybr0"),
    "net_pool4": ("word", 0, 0, "10.231.0.0/24"),
    "net_pool6": ("word", 0, 0, "none"),
    "net_dns": ("word", 0, 0, "none"),
    "net_egress": ("word", 0, 0, "nat"),
    "net_host": ("number", 0, 1, 0),
    # Per-tenant disk limits (volume.py): auto (project quotas where the filesystem enforces them,
    # else volumes), quota or volume. The launcher only accepts it; config.Config checks the word.
    "disk_backend": ("word", 0, 0, "auto"),
    "ipc_path": ("path", 0, 0, "/run/ipc"),  # issue 15: the shared IPC directory in every jail
}
PATH_KEYS = tuple(k for k, entry in KEYS.items() if entry[0] == "path")
DEFAULTS: dict = {k: entry[3] for k, entry in KEYS.items()}

_ALLOWED = bytes([9, *range(0x20, 0x7F)])  # printable ASCII and tab only, comments included
_CGROUP_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_WORD_CHARS = _CGROUP_CHARS | frozenset(".:/,")
WORD_MAX = 255  # JR_WORD_MAX


def _digits(s: str) -> bool:
    """One or more ASCII digits (str.isdigit alone accepts '²' and other scripts' digits)."""
    return s.isascii() and s.isdigit()


def _short(value: str) -> str:
    return repr(value if len(value) <= 100 else value[:100] + "...")


def _valid_abs_path(p: str) -> bool:
    """launcher/parse.c valid_abs_path: absolute, normal form, no whitespace (the caller allows only ASCII)."""
    if not 1 <= len(p) <= MAX_VALUE or not p.startswith("/") or " " in p or "\t" in p:
        return False
    return p == "/" or all(c not in ("", ".", "..") for c in p[1:].split("/"))


def _value(key: str, value: str) -> object:
    """The typed value of one key; JailError (without the line) if it is malformed."""
    kind, low, high = KEYS[key][:3]
    if kind == "path":
        if not _valid_abs_path(value):
            raise JailError(f"{key} must be an absolute path in normal form without spaces, got {_short(value)}")
        return value
    if kind == "uids":
        uids = []
        for tok in value.split():  # only space and tab can be here (bytes checked above)
            if not _digits(tok) or int(tok) > high:
                raise JailError(f"{key} must be uids from 0 to {high}, got {_short(tok)}")
            if len(uids) == MAX_CALLERS:
                raise JailError(f"more than {MAX_CALLERS} {key}")
            uids.append(int(tok))
        return tuple(uids)
    if kind == "number":
        if not _digits(value) or not low <= int(value) <= high:
            raise JailError(f"{key} must be a number from {low} to {high}, got {_short(value)}")
        return int(value)
    if kind == "word":
        if not (value and _WORD_CHARS.issuperset(value) and len(value) <= WORD_MAX):
            raise JailError(f"{key} must be [A-Za-z0-9_.:/,-]{{1,{WORD_MAX}}}, got {_short(value)}")
        return value
    if not (value and _CGROUP_CHARS.issuperset(value) and value.strip("_-") and len(value) <= CGROUP_NAME_MAX):
        raise JailError(f"{key} must be [A-Za-z0-9_-]{{1,{CGROUP_NAME_MAX}}} with a letter or digit, got {_short(value)}")
    return value


def parse_values(data: bytes | str, origin: str = "<config>") -> dict:
    """The keys set in data, checked and typed (paths stay strings); the first bad line is a JailError."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")  # anything but ASCII is refused below
    if len(data) > MAX_FILE:
        raise JailError(f"{origin}: config is larger than {MAX_FILE} bytes")
    values: dict[str, object] = {}
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the newline that ends the last line
    for lineno, raw in enumerate(lines, 1):
        bad = raw.translate(None, _ALLOWED)
        if bad:
            raise JailError(f"{origin}:{lineno}: byte 0x{bad[0]:02x} is not allowed (only printable ASCII and tab)")
        line = raw.decode("ascii").strip(" \t")
        if not line or line.startswith("#"):
            continue
        key, sep, value = (part.strip(" \t") for part in line.partition("="))
        if not sep or not key or not value:
            raise JailError(f"{origin}:{lineno}: expected 'key = value', got {_short(line)}")
        if key not in KEYS:
            raise JailError(f"{origin}:{lineno}: unknown key {_short(key)}")
        if key in values:
            raise JailError(f"{origin}:{lineno}: key {key!r} is given twice")
        if len(value) > MAX_VALUE:
            raise JailError(f"{origin}:{lineno}: the value of {key} is longer than {MAX_VALUE} bytes")
        try:
            values[key] = _value(key, value)
        except JailError as exc:
            raise JailError(f"{origin}:{lineno}: {exc}") from None
    uid_min = values.get("uid_min", DEFAULTS["uid_min"])
    uid_max = values.get("uid_max", DEFAULTS["uid_max"])
    if not uid_min <= uid_max:  # type: ignore[operator]
        raise JailError(f"{origin}: uid_min {uid_min} is above uid_max {uid_max}")
    return values


def _trusted(st: posix.stat_result) -> bool:
    """Owned by root and not writable by group or others (jailrun's trusted_stat)."""
    return st.st_uid == 0 and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def read_config(path: str) -> bytes:
    """The bytes of the config at path, with jailrun's trust checks: its directory
    and the file owned by root and writable only by root, the file regular and
    not a symlink, at most MAX_FILE bytes. A missing file is an error."""
    path = posix.fspath(path)
    if not path.startswith("/"):
        path = f"{posix.getcwd().rstrip('/')}/{path}"  # not normalized: "b/.." is the kernel's to resolve, as for jailrun
    head, name = path.rsplit("/", 1)
    directory = head.rstrip("/") or "/"
    try:
        dfd = posix.open(directory, posix.O_PATH | posix.O_DIRECTORY | posix.O_CLOEXEC)
    except OSError as exc:
        raise JailError(f"cannot open the directory of config {path}: {exc.strerror}") from None
    try:
        if not _trusted(posix.fstat(dfd)):
            raise JailError(f"config {path}: its directory {directory} is not owned by root or is writable by group or others")
        try:
            fd = posix.open(name, posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_CLOEXEC | posix.O_NOCTTY | posix.O_NONBLOCK, dir_fd=dfd)
        except FileNotFoundError:
            raise JailError(f"config {path} does not exist") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise JailError(f"config {path} is a symlink; give the file itself") from None
            raise JailError(f"cannot open config {path}: {exc.strerror}") from None
    finally:
        posix.close(dfd)
    try:
        st = posix.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _trusted(st):
            raise JailError(f"config {path} is not a regular file owned by root and writable only by root")
        chunks = []
        size = 0
        while size <= MAX_FILE:
            chunk = posix.read(fd, MAX_FILE + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise JailError(f"cannot read config {path}: {exc.strerror}") from None
    finally:
        posix.close(fd)
    if size > MAX_FILE:
        raise JailError(f"config {path} is larger than {MAX_FILE} bytes")
    return b"".join(chunks)


def read_values(path: str) -> dict:
    """Every setting of the trusted config file at path (defaults for the keys it leaves out)."""
    return {**DEFAULTS, **parse_values(read_config(path), posix.fspath(path))}


class ConfValues:
    """The settings of the config file at path as attributes, paths as strings: what
    the mount step needs of a `config.Config` without that module's imports."""

    def __init__(self, path: str) -> None:
        self.__dict__.update(read_values(path))
