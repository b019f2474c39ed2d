"""Node configuration: /etc/jailyard/jailyard.conf, shared with the launcher.

The file is ``key = value`` lines; the C launcher parses the same format with
the same trust checks (conffile, docs/contracts.md), so both sides refuse what
either would refuse rather than guessing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .conffile import DEFAULTS, PATH_KEYS, parse_values, read_config

DEFAULT_CONFIG_PATH = Path("/etc/jailyard/jailyard.conf")
# The `config` option of every module (documented once, in doc_fragments/jailyard.py).
CONFIG_OPTION = {"type": "path", "default": str(DEFAULT_CONFIG_PATH)}


@dataclasses.dataclass(frozen=True)
class Config:
    """The node config with typed fields; conffile holds the format and the defaults."""

    images_dir: Path = Path(DEFAULTS["images_dir"])
    tenants_dir: Path = Path(DEFAULTS["tenants_dir"])
    jails_dir: Path = Path(DEFAULTS["jails_dir"])
    run_dir: Path = Path(DEFAULTS["run_dir"])
    mount_helper: Path = Path(DEFAULTS["mount_helper"])
    python: Path = Path(DEFAULTS["python"])
    lib_dir: Path = Path(DEFAULTS["lib_dir"])
    allowed_callers: tuple[int, ...] = DEFAULTS["allowed_callers"]
    uid_min: int = DEFAULTS["uid_min"]
    uid_max: int = DEFAULTS["uid_max"]
    cgroup_name: str = DEFAULTS["cgroup_name"]
    default_cpu: int = DEFAULTS["default_cpu"]
    default_mem: int = DEFAULTS["default_mem"]
    default_procs: int = DEFAULTS["default_procs"]
    default_fsize: int = DEFAULTS["default_fsize"]
    default_nofile: int = DEFAULTS["default_nofile"]
    default_wall: int = DEFAULTS["default_wall"]
    # issue 17: tenant networks (network.NetConf reads and checks them)
    net_bridge: str = DEFAULTS["net_bridge"]
    net_pool4: str = DEFAULTS["net_pool4"]
    net_pool6: str = DEFAULTS["net_pool6"]
    net_dns: str = DEFAULTS["net_dns"]
    net_egress: str = DEFAULTS["net_egress"]
    net_host: int = DEFAULTS["net_host"]
    disk_backend: str = DEFAULTS["disk_backend"]  # auto, quota or volume (volume.py)
    ipc_path: Path = Path(DEFAULTS["ipc_path"])  # issue 15: where <run_dir>/ipc is in every jail
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


def parse_config(text: bytes | str, origin: str = "<config>") -> Config:
    values = parse_values(text, origin)
    return Config(**{k: Path(v) if k in PATH_KEYS else v for k, v in values.items()})  # type: ignore[arg-type]


def load_config(path: str | Path = DEFAULT_CONFIG_PATH) -> Config:
    """Read the node config, trusted as the launcher trusts it; a missing file is an error."""
    path = Path(path)
    return dataclasses.replace(parse_config(read_config(path), str(path)), path=path)
