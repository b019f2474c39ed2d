"""What interrupted runs and purged tenants leave behind, found and removed.

- `.new-<name>` in the tenants dir: a create killed before its rename.
- `.uids/<uid> -> <name>` whose tenant does not keep that uid: a create killed
  after reserving it, or a purge killed after deleting the home.
- The tenant's cgroups (`<ctrl>/<cgroup_name>/<name>` in v1 and v2), its
  session records and last-use stamp under run_dir: left by every session,
  removed only when the tenant is purged.

Each is judged under the tenant's lock (a live create holds it while its
staging dir and reservation exist), by `lifecycle`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from . import registry
from .config import Config
from .errors import JailError
from .plan import is_valid_name

STAGING_PREFIX = ".new-"
CGROUP_ROOT = "/sys/fs/cgroup"


class Strays:
    """Staging dirs and uid reservations by tenant name.

    Both indexes have an entry per tenant (the uid index at 10,000 tenants:
    35 ms, 0.14 s on a busy node), so a run reads the tenants dir only when
    exclusive (else it looks for each name's staging dir), and the uid index
    only when it may find a stray there: exclusive runs, creates, purges,
    removals of names without a spec.
    """

    def __init__(self, cfg: Config, scan: bool = False) -> None:
        """scan: read the tenants dir and the uid index now (an exclusive run); else has_staging looks per name."""
        self.staging: set[str] = set()
        self.tenant_dirs: set[str] = set()
        self.uids: dict[str, list[int]] = {}
        self.scanned = self.uids_read = scan
        if scan:
            self._scan_tenants(cfg)
            self.read_uids(cfg)

    def has_staging(self, cfg: Config, name: str) -> bool:
        if self.scanned:
            return name in self.staging
        return os.path.lexists(f"{cfg.tenants_dir}/{STAGING_PREFIX}{name}")

    def _scan_tenants(self, cfg: Config) -> None:
        try:
            with os.scandir(cfg.tenants_dir) as entries:
                for entry in entries:
                    name = entry.name[len(STAGING_PREFIX) :]
                    if entry.name.startswith(STAGING_PREFIX) and is_valid_name(name):
                        self.staging.add(name)
                    else:
                        self.tenant_dirs.add(entry.name)
        except FileNotFoundError:
            pass

    def read_uids(self, cfg: Config) -> None:
        self.uids_read = True
        try:
            with os.scandir(cfg.uid_index()) as entries:
                for entry in entries:
                    if not entry.name.isdigit():
                        continue
                    try:
                        owner = os.readlink(entry.path)
                    except OSError:
                        continue
                    self.uids.setdefault(owner, []).append(int(entry.name))
        except FileNotFoundError:
            pass

    def orphans(self) -> set[str]:
        """Names with a staging dir, or a uid reservation but no tenant dir: only an interrupted run left them."""
        return self.staging | {n for n in self.uids if is_valid_name(n) and n not in self.tenant_dirs}


def kept_uid(cfg: Config, name: str, spec_uid: int | None) -> int | None:
    """The uid a tenant keeps reserved: its spec's, else (a kept home) the home's owner."""
    if spec_uid is not None:
        return spec_uid
    try:
        return os.stat(f"{cfg.tenants_dir}/{name}/home/{name}", follow_symlinks=False).st_uid
    except (FileNotFoundError, NotADirectoryError):
        return None


def reservation_is_stale(cfg: Config, uid: int, owner: str) -> bool:
    """Whether .uids/<uid> -> owner is left over (call it holding owner's lock)."""
    if registry.uid_owner(cfg, uid) != owner:
        return False
    spec = registry.load_spec(cfg, owner)
    return kept_uid(cfg, owner, spec.uid if spec else None) != uid


def tenant_cgroups(cfg: Config, name: str, root: str = CGROUP_ROOT) -> list[Path]:
    """The tenant's cgroup directories, v1 (one per controller) and v2 (root or root/unified), deepest first."""
    found: list[Path] = []
    for top in [*Path(root).glob(f"*/{cfg.cgroup_name}/{name}"), Path(root) / cfg.cgroup_name / name]:
        if top.is_dir() and not top.is_symlink():
            found += sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            found.append(top)
    return found


def rmdir_cgroup(path: str | Path) -> bool:
    """rmdir a cgroup; one whose last process just died may refuse (EBUSY) for a moment while the
    kernel takes it offline, so an empty one is tried a few times. False: processes inside, or gone."""
    for attempt in range(6):
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return False
        except OSError:
            try:
                with open(f"{path}/cgroup.procs") as fh:
                    if fh.read().strip():
                        return False  # a live process: not stale after all
            except OSError:
                return False
            time.sleep(0.01 * 2**attempt)  # at most 0.6 s in all, only for a cgroup that refuses
    return False


def remove_cgroup(path: Path) -> None:
    if not rmdir_cgroup(path) and path.is_dir():
        raise JailError(f"cannot remove cgroup {path}: processes are still in it")


def run_records(cfg: Config, name: str) -> list[Path]:
    """The tenant's session records dir, last-use stamp and service state (a killed loop's), where they exist."""
    paths = (cfg.sessions_dir(name), cfg.lastuse_path(name), cfg.run_dir / "services" / name)
    return [p for p in paths if os.path.lexists(p)]


def remove_run_record(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for entry in os.listdir(path):  # ended session records: the caller refused live ones
            os.unlink(path / entry)
        os.rmdir(path)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass  # a service loop stopped by this run removed its own state
