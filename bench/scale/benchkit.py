"""Shared pieces of the jailyard benchmarks: timing statistics, result rows, machine facts,
a throwaway workspace that is always cleaned up, and a private mount namespace.

Used by bench/run, bench/scale/run and bench/modules/run. Stdlib only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "module_utils"))

WORKSPACE_PREFIX = "jailyard-bench-"
WORKSPACE_PARENT = Path(os.environ.get("BENCH_TMPDIR", "/var/tmp"))

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8


def log(*parts: object) -> None:
    """Progress goes to stderr; stdout is kept for the one table bench/run prints."""
    print(*parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- statistics and rows


def stats(samples: Iterable[float]) -> dict[str, Any]:
    xs = sorted(float(x) for x in samples)
    if not xs:
        return {"n": 0, "min": None, "median": None, "samples": []}
    return {"n": len(xs), "min": xs[0], "median": statistics.median(xs), "samples": xs}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def row(
    group: str,
    case: str,
    st: dict[str, Any] | float | None,
    unit: str,
    peer: str | None = None,
    peer_st: dict[str, Any] | float | None = None,
    target: str | None = None,
    ok: bool | None = None,
    note: str = "",
) -> dict[str, Any]:
    """One line of the results table. Ratios are median over median, both measured in this run."""
    if isinstance(st, (int, float)):
        st = stats([st])
    if isinstance(peer_st, (int, float)):
        peer_st = stats([peer_st])
    ratio = None
    if st and peer_st and st.get("median") is not None and peer_st.get("median"):
        ratio = st["median"] / peer_st["median"]
    return {
        "benchmark": group,
        "case": case,
        "min": st.get("min") if st else None,
        "median": st.get("median") if st else None,
        "n": st.get("n") if st else None,
        "unit": unit,
        "peer": peer,
        "peer_median": peer_st.get("median") if peer_st else None,
        "ratio": ratio,
        "target": target,
        "ok": ok,
        "note": note,
    }


def fmt_num(x: float | None) -> str:
    if x is None:
        return "-"
    ax = abs(x)
    if ax == 0:
        return "0"
    if ax >= 100:
        return f"{x:,.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 0.1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def print_row(r: dict[str, Any]) -> None:
    """A one-line summary of a row, as each benchmark goes (to stderr)."""
    ratio = f"  {r['ratio']:.2f}x {r['peer']}" if r.get("ratio") is not None else ""
    verdict = {True: "  [target met]", False: "  [TARGET MISSED]", None: ""}[r.get("ok")]
    tgt = f" (target {r['target']})" if r.get("target") else ""
    log(f"  {r['benchmark']}: {r['case']}: min {fmt_num(r['min'])} median {fmt_num(r['median'])} {r['unit']}{ratio}{tgt}{verdict}")


# ---------------------------------------------------------------- machine facts


def meminfo() -> dict[str, int]:
    """/proc/meminfo in KiB."""
    values = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0])
    return values


def machine() -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "kernel": platform.release(),
        "nproc": os.cpu_count(),
        "memory_gib": round(meminfo()["MemTotal"] / 1024 / 1024, 1),
        "python": platform.python_version(),
        "host": platform.node(),
    }


# ---------------------------------------------------------------- mounts and cleanup


def read_targets() -> list[str]:
    """Mount points of this process's namespace, in mount order, unescaped."""
    from jailyard.mountinfo import read_mountinfo

    return [m.target for m in read_mountinfo()]


def umount_under(root: str | Path) -> int:
    """Detach every mount at or below root, deepest (latest) first; returns how many."""
    root = str(root).rstrip("/")
    count = 0
    for _ in range(3):  # a detached parent can hide children from a single read; read again
        targets = [t for t in read_targets() if t == root or t.startswith(root + "/")]
        if not targets:
            break
        for target in reversed(targets):
            if _libc.umount2(target.encode(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0:
                count += 1
    return count


class Workspace:
    """A temp dir under /var/tmp/jailyard-bench-*; close() unmounts everything under it, then removes it.

    Removal is refused while anything is still mounted below it, so a recursive
    delete can never reach through a bind mount into the image or a home.
    """

    def __init__(self, label: str, parent: Path | None = None):
        parent = parent or WORKSPACE_PARENT
        parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f"{WORKSPACE_PREFIX}{label}-{os.getpid()}-", dir=parent))

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self.path.exists():
            return
        umount_under(self.path)
        left = [t for t in read_targets() if t.startswith(str(self.path) + "/")]
        if left:
            log(f"bench: NOT removing {self.path}: still mounted: {left[:3]}")
            return
        shutil.rmtree(self.path, ignore_errors=True)


def sweep_stale_workspaces() -> None:
    """Remove workspaces of earlier runs that were killed (their pid is gone): mounts first."""
    for ws in WORKSPACE_PARENT.glob(f"{WORKSPACE_PREFIX}*"):
        parts = ws.name[len(WORKSPACE_PREFIX) :].split("-")
        pid = next((int(p) for p in parts if p.isdigit()), None)
        if pid is not None and Path(f"/proc/{pid}").exists():
            continue
        n = umount_under(ws)
        if not any(t.startswith(str(ws) + "/") or t == str(ws) for t in read_targets()):
            shutil.rmtree(ws, ignore_errors=True)
            log(f"bench: removed stale workspace {ws}" + (f" ({n} mounts detached)" if n else ""))


class Interrupted(BaseException):
    pass


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP/SIGINT unwind through every finally block (cleanup runs), then exit."""

    def handler(signum: int, frame: object) -> None:
        signal.signal(signum, signal.SIG_IGN)  # a second signal must not interrupt the cleanup
        raise Interrupted(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def reexec_in_private_mount_namespace() -> None:
    """Run this script again in a private mount namespace (unless already there).

    The scale benchmark makes up to 50,000 mounts; in their own namespace they
    do not slow or confuse anything else on the node (other tests compare the
    host's mount table, the launch benchmark measures with a known number of
    mounts), and the kernel drops them all if the run is killed with SIGKILL.
    The root here is private already, so mounts cost the same as on the host.
    """
    if os.environ.get("JAILYARD_BENCH_NS") == "1":
        return
    unshare = shutil.which("unshare")
    if unshare is None:
        log("bench: unshare(1) not found; running in the host mount namespace")
        return
    env = {**os.environ, "JAILYARD_BENCH_NS": "1"}
    os.execve(unshare, [unshare, "--mount", "--propagation", "private", sys.executable, *sys.argv], env)


def workspace_parent(need_gib: float, label: str) -> tuple[Path | None, str]:
    """Where workspaces go: /var/tmp (BENCH_TMPDIR) when its disk has room, else a fresh ext4 on a
    RAM-backed loop device mounted in this process's private mount namespace (BENCH_RAMDISK=1 forces
    it). The loop device is set to clear itself, so it goes when the namespace does, even on SIGKILL.
    Returns (parent or None for the default, a sentence saying which)."""
    free_gib = shutil.disk_usage(WORKSPACE_PARENT).free / 2**30
    if os.environ.get("BENCH_RAMDISK") != "1" and free_gib >= need_gib:
        return None, f"workspace on the node's disk ({WORKSPACE_PARENT}, {free_gib:.0f} GiB free)"
    if os.environ.get("JAILYARD_BENCH_NS") != "1":
        raise SystemExit(f"bench: only {free_gib:.1f} GiB free in {WORKSPACE_PARENT} (need {need_gib}); set BENCH_TMPDIR")
    size_gib = max(2, int(need_gib * 2))
    image = Path(f"/dev/shm/{WORKSPACE_PREFIX}{label}-{os.getpid()}.img")
    mnt = Path(tempfile.mkdtemp(prefix=f"{WORKSPACE_PREFIX}{label}fs-{os.getpid()}-", dir=WORKSPACE_PARENT))
    try:
        subprocess.run(["truncate", "-s", f"{size_gib}G", str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image)], check=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    finally:
        image.unlink(missing_ok=True)  # the loop device holds it until the unmount
    why = "" if free_gib >= need_gib else f": the node's disk had {free_gib:.1f} GiB free"
    return mnt, f"workspace on a fresh ext4 on a RAM-backed loop device{why} (disk latency not included)"


def release_parent(parent: Path | None) -> None:
    if parent is None:
        return
    umount_under(parent)
    try:
        parent.rmdir()
    except OSError:
        pass


def write_json(path: str | Path | None, data: dict[str, Any]) -> None:
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------- images and configs


def make_busybox_rootfs(rootfs: Path) -> None:
    """The tests' minimal busybox tree (tests/jailtest.py), the same one every test jail uses."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    from jailtest import make_busybox_rootfs as make_tree

    try:
        make_tree(rootfs)
    except FileNotFoundError as exc:
        raise SystemExit(f"bench: {exc}") from None


IMAGE_ID = "be0c4b0c4b0c4b0c"


def make_image_store(base: Path, rootfs_from: Path | None = None) -> Path:
    """An images dir with one image and `current` pointing at it (busybox unless a tree is given)."""
    images = base / "images"
    (images / IMAGE_ID).mkdir(parents=True)
    if rootfs_from is None:
        make_busybox_rootfs(images / IMAGE_ID / "rootfs")
    else:
        (images / IMAGE_ID / "rootfs").symlink_to(rootfs_from)  # an admin symlink above the trusted root
    (images / "current").symlink_to(IMAGE_ID)
    return images


def make_config(base: Path, images: Path) -> Any:
    """A jailyard config with every path under base (never the node's /var/lib/jailyard), jails and run on tmpfs."""
    from jailyard.config import Config

    for d in ("tenants", "jails", "run"):
        (base / d).mkdir(parents=True, exist_ok=True)
    # The jails directory on a tmpfs of its own, as the jail_launcher role sets up a node
    # (jail_launcher_jails_tmpfs): jail mounts are then not children of the filesystem that
    # holds the image and the homes. Callers run in a private mount namespace.
    if not os.path.ismount(base / "jails"):
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=64m", "jailyard-bench-jails", str(base / "jails")], check=True)
    # The run dir (locks, last use, sessions) on a tmpfs too, as a node's /run/jailyard is: on the
    # workspace's disk, creating 10,000 lock and last-use files waited on its journal, up to 8 ms a file.
    if not os.path.ismount(base / "run"):
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=256m", "jailyard-bench-run", str(base / "run")], check=True)
    values = {
        "images_dir": images,
        "tenants_dir": base / "tenants",
        "jails_dir": base / "jails",
        "run_dir": base / "run",
        "mount_helper": REPO / "bin" / "jailyard-mount",
        "lib_dir": REPO / "module_utils",
    }
    cfg = Config(**values)
    (base / "jailyard.conf").write_text(cfg.render())
    return Config(**{**values, "path": base / "jailyard.conf"})


def tree_size(path: Path) -> dict[str, int]:
    """Entries, bytes allocated and inodes of a tree (hard links counted once), without following symlinks."""
    seen: set[tuple[int, int]] = set()
    entries = blocks = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames + [""] if dirpath == str(path) else dirnames + filenames:
            p = os.path.join(dirpath, name) if name else dirpath
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            entries += 1
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            blocks += st.st_blocks
    return {"entries": entries, "bytes": blocks * 512, "inodes": len(seen)}


def fs_used(path: Path) -> tuple[int, int]:
    """(bytes used, inodes used) of the filesystem holding path."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_files - st.f_ffree
