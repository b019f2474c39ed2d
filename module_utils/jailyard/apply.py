"""Apply: do a jail's planned steps, holding its lock. Check mode never gets here.

Each step is done so that doing it again changes nothing (ensure_dir, atomic
writes, reservations by symlink), never following a symlink below a
tenant-controlled path. A create that fails removes its staging dir and the
uid it reserved; an OSError (a full disk) names the jail and the path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import lease, leftovers, registry, service
from .config import Config
from .control import kill_sessions
from .errors import JailError
from .lock import tenant_lock
from .mount import mount_jail, open_trusted, unmount_jail
from .planner import Step
from .safefs import atomic_write, ensure_dir, opened, remove_tree
from .sessions import touch_lastuse


class _Run:
    """One jail's steps being applied: where they write, and what a failed create must undo."""

    def __init__(self, cfg: Config, name: str, lock: Any) -> None:
        self.cfg, self.name, self.lock = cfg, name, lock
        self.tenant_dir = cfg.tenant_dir(name)
        self.staging = cfg.tenants_dir / f"{leftovers.STAGING_PREFIX}{name}"
        self.reserved: int | None = None  # a uid this create reserved, until published
        self.creating = False

    def base(self, step: Step) -> Path:
        return self.staging if step.where == "staging" else self.tenant_dir


def apply_steps(cfg: Config, name: str, steps: list[Step], lock: Any) -> None:
    """Do the steps in order (the caller holds the tenant's lock, as `lock`)."""
    run = _Run(cfg, name, lock)
    if any(step.kind == "remove-tenant-dir" for step in steps):
        _refuse_purge_of_a_tenant_held_elsewhere(cfg, name)
    try:
        for step in steps:
            try:
                APPLY[step.kind](run, step)
            except JailError:
                raise
            except OSError as exc:
                where = step.path if step.path.startswith("/") else run.base(step) / step.path if step.path else run.base(step)
                raise JailError(f"jail {name}: cannot {step.kind.replace('-', ' ')} {where}: {exc.strerror}") from exc
    except BaseException:
        if run.creating:
            # Nothing half-created stays behind (a kill here is cleared by the next run).
            with opened(open_trusted(cfg.tenants_dir, cfg.tenants_dir)) as tenants_fd:
                remove_tree(tenants_fd, run.staging.name)
            if run.reserved is not None:
                registry.release_uid(cfg, run.reserved, name)
        raise


def _refuse_purge_of_a_tenant_held_elsewhere(cfg: Config, name: str) -> None:
    """A purge deletes the tenant's files on the shared storage: never while another node runs it."""
    leases = lease.settings_for(cfg.path)
    held = lease.holder(cfg.tenants_dir, name) if leases is not None else None
    if held is not None and held[0] != leases.node:  # type: ignore[union-attr]
        raise lease.LeaseHeld(name, *held)


def _take_uid(run: _Run, step: Step) -> None:
    """A uid reserved by an interrupted run of another name, taken under that name's lock (busy: refused)."""
    with tenant_lock(run.cfg, step.owner, wait=False) as locked:
        if not locked or not leftovers.reservation_is_stale(run.cfg, step.uid, step.owner):
            raise JailError(f"uid {step.uid} of jail {run.name} already belongs to tenant {step.owner!r}")
        registry.release_uid(run.cfg, step.uid, step.owner)


def _release_uid(run: _Run, step: Step) -> None:
    registry.release_uid(run.cfg, step.uid, step.owner)


def _remove_staging(run: _Run, step: Step) -> None:
    with opened(open_trusted(run.cfg.tenants_dir, run.cfg.tenants_dir)) as tenants_fd:
        remove_tree(tenants_fd, run.staging.name)


def _reserve_uid(run: _Run, step: Step) -> None:
    run.creating = True
    if registry.reserve_uid(run.cfg, step.uid, run.name):
        run.reserved = step.uid


def _keep_uid(run: _Run, step: Step) -> None:
    registry.reserve_uid(run.cfg, step.uid, run.name)


def _make_staging(run: _Run, step: Step) -> None:
    with opened(open_trusted(run.cfg.tenants_dir, run.cfg.tenants_dir)) as tenants_fd:
        remove_tree(tenants_fd, run.staging.name)
        os.mkdir(run.staging.name, 0o755, dir_fd=tenants_fd)


def _ensure_dir(run: _Run, step: Step) -> None:
    parent, leaf = step.path.rpartition("/")[::2]
    base = run.base(step)
    with opened(os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)) as bfd:
        if not parent:
            ensure_dir(bfd, leaf, step.mode, step.uid, step.gid, what=f"{run.name}/{step.path}")
            return
        with opened(os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=bfd)) as pfd:
            ensure_dir(pfd, leaf, step.mode, step.uid, step.gid, what=f"{run.name}/{step.path}")


def _write_file(run: _Run, step: Step) -> None:
    path = run.base(step) / step.path
    try:
        if step.where == "staging":
            # A private dir that appears by one rename when done: written in place.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            with os.fdopen(fd, "w") as fh:
                fh.write(step.text)
        else:
            atomic_write(path, step.text, 0o644, durable=step.durable)
    except OSError as exc:
        raise JailError(f"jail {run.name}: cannot write {path}: {exc.strerror}") from exc


def _publish(run: _Run, step: Step) -> None:
    os.rename(run.staging, run.tenant_dir)
    run.creating = False


def _mount(run: _Run, step: Step) -> None:
    if step.plan is None:
        raise JailError(f"internal error: a mount step of {run.name} without its plan")
    leases = lease.settings_for(run.cfg.path)
    if leases is not None:
        lease.acquire(run.cfg.tenants_dir, run.name, leases)  # LeaseHeld: another node has it; nothing mounted
    mount_jail(run.cfg, step.plan)
    touch_lastuse(run.cfg, run.name)


def _stop_service(run: _Run, step: Step) -> None:
    service.stop(run.cfg, run.name)


def _start_service(run: _Run, step: Step) -> None:
    # Module attributes read at each call: tests point them at their own launcher and log directory.
    service.start(run.cfg, run.name, log_dir=service.LOG_DIR, jailrun=service.JAILRUN)


def _end_sessions(run: _Run, step: Step) -> None:
    kill_sessions(run.cfg, run.name)  # every process of each; returns once their launchers are gone


def _unmount(run: _Run, step: Step) -> None:
    unmount_jail(step.path, step.hint, detach=step.detach)
    leases = lease.settings_for(run.cfg.path)
    if leases is not None:
        lease.release(run.cfg.tenants_dir, run.name, leases)


def _remove_cgroups(run: _Run, step: Step) -> None:
    for path in step.paths:
        leftovers.remove_cgroup(Path(path))


def _remove(run: _Run, step: Step) -> None:
    with opened(open_trusted(run.tenant_dir, run.cfg.tenants_dir)) as tfd:
        remove_tree(tfd, step.path)


def _remove_tenant_dir(run: _Run, step: Step) -> None:
    with opened(open_trusted(run.cfg.tenants_dir, run.cfg.tenants_dir)) as tenants_fd:
        os.rmdir(run.name, dir_fd=tenants_fd)


def _remove_root(run: _Run, step: Step) -> None:
    try:
        os.rmdir(step.path)  # never a recursive removal under the jails dir
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise JailError(f"cannot remove jail root {step.path}: {exc.strerror}") from exc


def _remove_record(run: _Run, step: Step) -> None:
    leftovers.remove_run_record(Path(step.path))


def _drop_lock(run: _Run, step: Step) -> None:
    run.lock.unlink_locked()


APPLY = {
    "stop-service": _stop_service,
    "start-service": _start_service,
    "end-sessions": _end_sessions,
    "take-uid": _take_uid,
    "release-uid": _release_uid,
    "remove-staging": _remove_staging,
    "reserve-uid": _reserve_uid,
    "keep-uid": _keep_uid,
    "make-staging": _make_staging,
    "ensure-dir": _ensure_dir,
    "write-file": _write_file,
    "publish": _publish,
    "mount": _mount,
    "unmount": _unmount,
    "remove-cgroups": _remove_cgroups,
    "remove": _remove,
    "remove-tenant-dir": _remove_tenant_dir,
    "remove-root": _remove_root,
    "remove-record": _remove_record,
    "drop-lock": _drop_lock,
}
