"""The format of /etc/jailyard/jailyard.conf and its defaults, without heavy imports.

The file is ``key = value`` lines; the C launcher parses the same format, so
both sides refuse unknown keys rather than guessing. `config.Config` is the
typed view everything else uses; the launcher's mount step, which starts a
fresh interpreter on every cold launch, reads the plain values from here.
"""

from __future__ import annotations

from .errors import JailError

PATH_KEYS = ("images_dir", "tenants_dir", "jails_dir", "run_dir", "mount_helper", "python", "lib_dir")
INT_KEYS = ("uid_min", "uid_max", "default_cpu", "default_mem", "default_procs", "default_fsize", "default_nofile", "default_wall")

DEFAULTS: dict = {
    "images_dir": "/var/lib/jailyard/images",
    "tenants_dir": "/var/lib/jailyard/tenants",
    "jails_dir": "/srv/jails",
    "run_dir": "/run/jailyard",
    "mount_helper": "/usr/local/lib/jailyard/jailyard-mount",
    "python": "/usr/bin/python3",
    "lib_dir": "/usr/local/lib/jailyard",
    "allowed_callers": (0, 33),
    "uid_min": 10000,
    "uid_max": 59999,
    "cgroup_name": "jailyard",
    "default_cpu": 60,
    "default_mem": 512 * 1024 * 1024,
    "default_procs": 64,
    "default_fsize": 1024 * 1024 * 1024,
    "default_nofile": 256,
    "default_wall": 0,
}


def parse_values(text: str, origin: str = "<config>") -> dict:
    """The keys set in text, checked and typed (paths stay strings); one error per bad line."""
    values: dict[str, object] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep or not key or not value:
            raise JailError(f"{origin}:{lineno}: expected 'key = value', got {raw!r}")
        if key in PATH_KEYS:
            if not value.startswith("/") or any(c.isspace() for c in value):
                raise JailError(f"{origin}:{lineno}: {key} must be an absolute path without spaces, got {value!r}")
            values[key] = value
        elif key in INT_KEYS:
            if not value.isdigit():
                raise JailError(f"{origin}:{lineno}: {key} must be a non-negative integer, got {value!r}")
            values[key] = int(value)
        elif key == "allowed_callers":
            uids = value.split()
            if not all(u.isdigit() for u in uids):
                raise JailError(f"{origin}:{lineno}: allowed_callers must be uids, got {value!r}")
            values[key] = tuple(int(u) for u in uids)
        elif key == "cgroup_name":
            if not value.replace("_", "").replace("-", "").isalnum():
                raise JailError(f"{origin}:{lineno}: cgroup_name must be [A-Za-z0-9_-]+, got {value!r}")
            values[key] = value
        else:
            raise JailError(f"{origin}:{lineno}: unknown key {key!r}")
    uid_min = values.get("uid_min", DEFAULTS["uid_min"])
    uid_max = values.get("uid_max", DEFAULTS["uid_max"])
    if not uid_min <= uid_max:  # type: ignore[operator]
        raise JailError(f"{origin}: uid_min {uid_min} is above uid_max {uid_max}")
    return values


def read_values(path: str) -> dict:
    """Every setting of the config file at path (defaults for the keys it leaves out)."""
    try:
        with open(path) as fh:
            text = fh.read()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise JailError(f"cannot read config {path}: {exc.strerror}") from exc
    return {**DEFAULTS, **parse_values(text, path)}


class ConfValues:
    """The settings of the config file at path as attributes, paths as strings: what
    the mount step needs of a `config.Config` without that module's imports."""

    def __init__(self, path: str) -> None:
        self.__dict__.update(read_values(path))
