"""Node configuration: /etc/jailyard/jailyard.conf, shared with the launcher.

The file is ``key = value`` lines; the C launcher parses the same format, so
both sides refuse unknown keys rather than guessing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .errors import JailError

DEFAULT_CONFIG_PATH = Path("/etc/jailyard/jailyard.conf")

_PATH_KEYS = ("images_dir", "tenants_dir", "jails_dir", "run_dir", "mount_helper", "python", "lib_dir")
_INT_KEYS = (
    "uid_min",
    "uid_max",
    "default_cpu",
    "default_mem",
    "default_procs",
    "default_fsize",
    "default_nofile",
    "default_wall",
)


@dataclasses.dataclass(frozen=True)
class Config:
    images_dir: Path = Path("/var/lib/jailyard/images")
    tenants_dir: Path = Path("/var/lib/jailyard/tenants")
    jails_dir: Path = Path("/srv/jails")
    run_dir: Path = Path("/run/jailyard")
    mount_helper: Path = Path("/usr/local/lib/jailyard/jailyard-mount")
    python: Path = Path("/usr/bin/python3")
    lib_dir: Path = Path("/usr/local/lib/jailyard")
    allowed_callers: tuple[int, ...] = (0, 33)
    uid_min: int = 10000
    uid_max: int = 59999
    cgroup_name: str = "jailyard"
    default_cpu: int = 60
    default_mem: int = 512 * 1024 * 1024
    default_procs: int = 64
    default_fsize: int = 1024 * 1024 * 1024
    default_nofile: int = 256
    default_wall: int = 0
    path: Path | None = None

    def default_limits(self) -> dict[str, int]:
        return {
            "cpu": self.default_cpu,
            "mem": self.default_mem,
            "procs": self.default_procs,
            "fsize": self.default_fsize,
            "nofile": self.default_nofile,
            "wall": self.default_wall,
        }

    # Paths derived from the configured roots, in one place.
    def tenant_dir(self, name: str) -> Path:
        return self.tenants_dir / name

    def jail_root(self, name: str) -> Path:
        return self.jails_dir / name

    def sessions_dir(self, name: str) -> Path:
        return self.run_dir / "sessions" / name

    def lastuse_path(self, name: str) -> Path:
        return self.run_dir / "lastuse" / name

    def uid_index(self) -> Path:
        return self.tenants_dir / ".uids"

    def render(self) -> str:
        """The file text for this config (used by tests and jailctl; the role uses a template)."""
        lines = []
        for f in dataclasses.fields(self):
            if f.name == "path":
                continue
            value = getattr(self, f.name)
            if f.name == "allowed_callers":
                value = " ".join(str(u) for u in value)
            lines.append(f"{f.name} = {value}")
        return "\n".join(lines) + "\n"


def parse_config(text: str, origin: str = "<config>") -> Config:
    values: dict[str, object] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep or not key or not value:
            raise JailError(f"{origin}:{lineno}: expected 'key = value', got {raw!r}")
        if key in _PATH_KEYS:
            if not value.startswith("/") or any(c.isspace() for c in value):
                raise JailError(f"{origin}:{lineno}: {key} must be an absolute path without spaces, got {value!r}")
            values[key] = Path(value)
        elif key in _INT_KEYS:
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
    cfg = Config(**values)  # type: ignore[arg-type]
    if not cfg.uid_min <= cfg.uid_max:
        raise JailError(f"{origin}: uid_min {cfg.uid_min} is above uid_max {cfg.uid_max}")
    return cfg


def load_config(path: str | Path = DEFAULT_CONFIG_PATH) -> Config:
    """Read the node config; a missing file means the built-in defaults."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Config(path=path)
    except OSError as exc:
        raise JailError(f"cannot read config {path}: {exc.strerror}") from exc
    return dataclasses.replace(parse_config(text, str(path)), path=path)
