"""Fixtures for the launcher's root tests: a private jailyard node under /tmp with its own jailrun build.

One session-wide node: a busybox image (plus the static `attack` program in
/bin), a root-owned config, a jailrun built with that config path baked in
and installed setuid root (its audit log, AUDIT_LOG, in the node's own `log/`,
so a test reads only this session's launches), and tenants made through the Python side
(`jailyard.lifecycle.converge`, state present: the launcher mounts them on
demand through the real mount helper). Teardown unmounts everything under the
node in reverse order (jails, the template namespace pin) and removes the
test's cgroups, even after failures; the mount table must end as it began.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "module_utils"))

from jailyard.config import Config  # noqa: E402
from jailyard.lifecycle import converge  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
from jailtest import make_busybox_rootfs, remove_cgroups  # noqa: E402

HERE = Path(__file__).resolve().parent
IMAGE_ID = "0123456789abcdef"
CGROUP_NAME = f"jailyard-test-{os.getpid()}"  # per session: concurrent sessions never remove each other's
TENANTS = {"alice": 47101, "bob": 47102, "carol": 47103, "dave": 47104}
NET_TENANTS = {"dave"}  # their spec allows --net

if os.geteuid() != 0:
    pytest.skip("the launcher tests need root", allow_module_level=True)


def _findmnt() -> list[str]:
    return subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=True).stdout.splitlines()


def _mounts_under(base: Path) -> list[str]:
    prefix = f"{base}/"
    with open("/proc/self/mountinfo") as fh:
        targets = [line.split()[4] for line in fh]
    return [t.replace("\\040", " ") for t in targets if t.startswith(prefix)]


def _unmount_all(base: Path) -> None:
    for target in reversed(_mounts_under(base)):
        subprocess.run(["umount", "-l", target], check=False)


def _make_rootfs(rootfs: Path, attack: Path) -> None:
    """The shared busybox tree, plus the attack program and the launcher's IPC mount point."""
    try:
        make_busybox_rootfs(rootfs)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    (rootfs / "run/jailyard/ipc").mkdir(parents=True, exist_ok=True)
    shutil.copy2(attack, rootfs / "bin/attack")


@dataclass
class Node:
    base: Path
    cfg: Config
    jailrun: str
    attack: str  # host copy of the attack program
    evil_so: str  # an LD_PRELOAD payload that leaves a marker when loaded
    audit_log: Path  # the audit log baked into every jailrun this session builds

    def build_jailrun(self, build: Path, conf: Path) -> str:
        """Another jailrun with its own config, logging to the node's audit log; returns its path."""
        build_jailrun(build, conf, self.audit_log)
        return str(build / "jailrun")

    def run(self, *argv: str, user: int | None = None, env: dict | None = None, timeout: float = 60, **kw):
        return subprocess.run(
            [self.jailrun, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            user=user,
            env=env if env is not None else {"PATH": "/usr/bin:/bin"},
            **kw,
        )

    def home(self, name: str) -> Path:
        return self.cfg.tenants_dir / name / "home" / name


def build_jailrun(build: Path, conf: Path, audit_log: Path) -> None:
    subprocess.run(["make", "-s", "-C", str(REPO / "launcher"), f"BUILD={build}", f"CONFIG={conf}", f"AUDIT_LOG={audit_log}"], check=True)


@pytest.fixture(scope="session")
def node():
    base = Path(tempfile.mkdtemp(prefix="jailrun-test-", dir="/tmp"))
    base.chmod(0o755)  # the config's directory must be root-owned and not writable by others
    try:
        build = base / "build"
        build.mkdir()
        attack = build / "attack"
        subprocess.run(["gcc", "-static", "-O2", "-o", str(attack), str(HERE / "attack.c")], check=True)
        evil = build / "evil.so"
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(evil), str(HERE / "evil_preload.c")], check=True)
        images = base / "images"
        _make_rootfs(images / IMAGE_ID / "rootfs", attack)
        (images / "current").symlink_to(IMAGE_ID)
        for d in ("tenants", "jails", "run"):
            (base / d).mkdir()
        cfg = Config(
            images_dir=images,
            tenants_dir=base / "tenants",
            jails_dir=base / "jails",
            run_dir=base / "run",
            mount_helper=REPO / "bin" / "jailyard-mount",
            lib_dir=REPO / "module_utils",
            cgroup_name=CGROUP_NAME,
            net_host=1,  # NET_TENANTS have net: host, which the config must allow (issue 17)
        )
        conf = base / "jailyard.conf"
        conf.write_text(cfg.render())
        conf.chmod(0o644)
        cfg = Config(**{**cfg.__dict__, "path": conf})
        audit_log = base / "log" / "launch.log"  # the launcher makes log/ itself (root, 0750)
        build_jailrun(build, conf, audit_log)
        jailrun = build / "jailrun"
        os.chown(jailrun, 0, 0)
        jailrun.chmod(0o4755)
        for name, uid in TENANTS.items():
            converge(cfg, {"name": name, "uid": uid, "state": "present", "net": name in NET_TENANTS})
        yield Node(base, cfg, str(jailrun), str(attack), str(evil), audit_log)
    finally:
        _unmount_all(base)
        remove_cgroups(CGROUP_NAME)
        if not _mounts_under(base):  # never delete through a mount that is still there
            shutil.rmtree(base, ignore_errors=True)
        # Only our own mounts are ours to judge: concurrent sessions on this host mount and unmount theirs
        # meanwhile (seen: a parallel launcher session's jails made a whole-table comparison fail).
        left = [t for t in _findmnt() if t == str(base) or t.startswith(f"{base}/")]
        assert not left, f"mounts left behind: {left}"
