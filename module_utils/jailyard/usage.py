"""Beancounters: per tenant, for memory, processes, CPU time, disk bytes and inodes, what it holds
now, its peak, its limit and how often the limit struck (OpenVZ's held, maxheld, limit, failcnt).

Read live from the tenant's cgroups (`<ctrl>/<cgroup_name>/<name>`, v1 or v2, made by its first
launch and kept until a purge or a reboot, so peaks and failure counts are since then) and from
its project quota. A value the node cannot tell is None: no cgroup yet, no controller, no quota.

- memory: v2 memory.current, memory.peak, memory.max, failcnt = memory.events `max` (times the
  limit was reached), oom_kills = memory.events `oom_kill`; v1 memory.usage_in_bytes,
  memory.max_usage_in_bytes, memory.limit_in_bytes, memory.failcnt, memory.oom_control `oom_kill`
  (v1 counts a kill only in the victim's own cgroup: a session with a cgroup of its own, --mem,
  --procs or --meta, counts there, and that goes when the session ends; failcnt is the tenant's).
- procs: pids.current, pids.peak (where the kernel has it), pids.max, failcnt = pids.events `max`.
- cpu: seconds used (v2 cpu.stat usage_usec, v1 cpuacct.usage), limit = cpu_rate in CPUs,
  failcnt = periods throttled by it (cpu.stat nr_throttled), throttled_seconds.
- disk, inodes: the tenant's project quota (quota.py), or its volume's statvfs (volume.py); the
  kernel keeps no count of refused writes (EDQUOT or ENOSPC) in either, so their failcnt is None
  and `full` says whether the limit is reached now (a volume: less than 1 MiB free, see below).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import quota
from .config import Config

CGROUP_ROOT = "/sys/fs/cgroup"
RESOURCES = ("memory", "procs", "cpu", "disk", "inodes")
VOLUME_FULL = 1 << 20  # bytes: a volume with less left free counts as full (ext4 refuses before 0)
UNLIMITED_V1 = 1 << 62  # v1 writes "no limit" as a page-rounded LONG_MAX


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    text = text.strip()
    if text == "max":
        return 0
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def _key(path: Path, key: str) -> int | None:
    text = _read(path)
    if text is None:
        return None
    for line in text.splitlines():
        name, sep, value = line.partition(" ")
        if name == key and sep:
            try:
                return int(value)
            except ValueError:
                return None
    return 0


def _limit(value: int | None) -> int | None:
    """0 (v2 'max') and v1's huge number both mean no limit: 0, as in the spec."""
    if value is None:
        return None
    return 0 if value >= UNLIMITED_V1 else value


def _dirs(cfg: Config, name: str, root: str) -> tuple[dict[str, Path], Path | None]:
    """Where each controller keeps the tenant's cgroup (v1: one dir per controller; a controller the
    unified hierarchy has: its dir there), and the tenant's v2 dir if there is a unified hierarchy."""
    dirs = {c: Path(root) / c / cfg.cgroup_name / name for c in ("memory", "pids", "cpu", "cpuacct")}
    for top in (Path(root), Path(root) / "unified"):
        controllers = _read(top / "cgroup.controllers")
        if controllers is None:
            continue
        v2 = top / cfg.cgroup_name / name
        for c in ("memory", "pids", "cpu"):
            if c in controllers.split():
                dirs[c] = v2
        return dirs, v2
    return dirs, None


def tenant_usage(cfg: Config, name: str, uid: int, limits: dict[str, Any], root: str = CGROUP_ROOT) -> dict[str, dict[str, Any]]:
    """The tenant's beancounters: {resource: {current, peak, limit, failcnt, ...}}."""
    dirs, v2 = _dirs(cfg, name, root)
    out: dict[str, dict[str, Any]] = {}
    mem = dirs["memory"]
    if v2 is not None and mem == v2:
        out["memory"] = {
            "current": _int(mem / "memory.current"),
            "peak": _int(mem / "memory.peak"),
            "limit": _limit(_int(mem / "memory.max")),
            "failcnt": _key(mem / "memory.events", "max"),
            "oom_kills": _key(mem / "memory.events", "oom_kill"),
        }
    else:
        out["memory"] = {
            "current": _int(mem / "memory.usage_in_bytes"),
            "peak": _int(mem / "memory.max_usage_in_bytes"),
            "limit": _limit(_int(mem / "memory.limit_in_bytes")),
            "failcnt": _int(mem / "memory.failcnt"),
            "oom_kills": _key(mem / "memory.oom_control", "oom_kill"),
        }
    pids = dirs["pids"]
    out["procs"] = {
        "current": _int(pids / "pids.current"),
        "peak": _int(pids / "pids.peak"),
        "limit": _limit(_int(pids / "pids.max")),
        "failcnt": _key(pids / "pids.events", "max"),
    }
    cpu = dirs["cpu"]
    if v2 is not None and cpu == v2:
        used = _key(v2 / "cpu.stat", "usage_usec")
        seconds = None if used is None else used / 1e6
        throttled = _key(cpu / "cpu.stat", "throttled_usec")
        throttled_s = None if throttled is None else throttled / 1e6
    else:
        used = _int(dirs["cpuacct"] / "cpuacct.usage")
        seconds = None if used is None else used / 1e9
        throttled = _key(cpu / "cpu.stat", "throttled_time")
        throttled_s = None if throttled is None else throttled / 1e9
    out["cpu"] = {
        "current": seconds,
        "peak": None,
        "limit": limits.get("cpu_rate", 0),
        "failcnt": _key(cpu / "cpu.stat", "nr_throttled"),
        "throttled_seconds": throttled_s,
    }
    disk: dict[str, Any] = {"current": None, "peak": None, "limit": limits.get("disk", 0), "failcnt": None, "full": None}
    inodes: dict[str, Any] = {"current": None, "peak": None, "limit": limits.get("inodes", 0), "failcnt": None, "full": None}
    tdir = cfg.tenant_dir(name)
    try:
        got = quota.get(tdir, quota.project_id(uid))
    except OSError:
        got = None
    if got is not None:
        disk.update(current=got["bytes"], limit=got["bytes_limit"])
        disk["full"] = bool(got["bytes_limit"]) and got["bytes"] >= got["bytes_limit"]
        inodes.update(current=got["inodes"], limit=got["inodes_limit"])
        inodes["full"] = bool(got["inodes_limit"]) and got["inodes"] >= got["inodes_limit"]
    elif (tdir / "vol").is_dir():
        try:
            sv = os.statvfs(tdir / "vol")  # a volume-backed tenant (volume.py): its filesystem's counts, while mounted
        except OSError:
            sv = None
        if sv is not None and sv.f_fsid != os.statvfs(tdir).f_fsid:
            disk.update(current=(sv.f_blocks - sv.f_bfree) * sv.f_frsize, limit=sv.f_blocks * sv.f_frsize)
            # ext4 refuses a write while a few blocks still show free (its reserve for the blocks
            # being written, a 64 KiB write failed with 88 KiB free): full = less than VOLUME_FULL left.
            disk["full"] = sv.f_bavail * sv.f_frsize < VOLUME_FULL
            inodes.update(current=sv.f_files - sv.f_ffree, limit=sv.f_files)
            inodes["full"] = sv.f_favail == 0
    out["disk"] = disk
    out["inodes"] = inodes
    return out
