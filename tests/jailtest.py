"""Helpers shared by the test packages (imported as `jailtest`; conftest.py files cannot be imported reliably)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "module_utils") not in sys.path:
    sys.path.insert(0, str(REPO / "module_utils"))

from jailyard.config import Config  # noqa: E402

TEST_IMAGE_ID = "0123456789abcdef"


def ansible_env(**extra: str) -> dict[str, str]:
    """The environment for running this checkout's modules with ansible or ansible-playbook on localhost."""
    import os

    return {
        **os.environ,
        "ANSIBLE_LIBRARY": str(REPO / "library"),
        "ANSIBLE_MODULE_UTILS": str(REPO / "module_utils"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        **extra,
    }


def wait_until(condition, seconds: float = 30) -> bool:
    """Poll condition every 10 ms for up to `seconds`; its last answer."""
    import time

    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def remove_cgroups(name: str) -> bool:
    """Remove every cgroup a test or benchmark run made under <ctrl>/<name> (v1 and v2), deepest
    first; a just-emptied cgroup can refuse for a moment, so a few rounds. False if some stayed."""
    import time

    for _ in range(5):
        tops = [t for t in [*Path("/sys/fs/cgroup").glob(f"*/{name}"), Path("/sys/fs/cgroup") / name] if t.is_dir()]
        for top in tops:
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                try:
                    d.rmdir()
                except OSError:
                    pass
            try:
                top.rmdir()
            except OSError:
                pass
        if not any(t.is_dir() for t in tops):
            return True
        time.sleep(0.2)
    return False


def make_busybox_rootfs(rootfs: Path) -> None:
    """A minimal Debian-like tree: busybox-static and its applets, enough to run `id`, `sh`, `cat`.

    Shared by the tests and bench/ (so no pytest here); FileNotFoundError without busybox.
    """
    busybox = shutil.which("busybox")
    if busybox is None:
        raise FileNotFoundError("busybox-static is not installed (apt-get install busybox-static)")
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "home", "tmp", "root", "proc", "dev", "sys", "run", "var/tmp"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, rootfs / "bin/busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = rootfs / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc/group").write_text("root:x:0:\n")
    (rootfs / "etc/debian_version").write_text("12.0\n")
    (rootfs / "tmp").chmod(0o1777)


def _under(target: str, root: Path) -> bool:
    return target == str(root) or target.startswith(f"{root}/")


def make_config(base: Path, images: Path, **overrides: object) -> Config:
    for d in ("tenants", "jails", "run"):
        (base / d).mkdir(exist_ok=True)
    values = {
        "images_dir": images,
        "tenants_dir": base / "tenants",
        "jails_dir": base / "jails",
        "run_dir": base / "run",
        "mount_helper": REPO / "bin" / "jailyard-mount",
        "lib_dir": REPO / "module_utils",
    }
    values.update(overrides)
    cfg = Config(**values)  # type: ignore[arg-type]
    (base / "jailyard.conf").write_text(cfg.render())
    return Config(**{**values, "path": base / "jailyard.conf"})  # type: ignore[arg-type]
