"""Issue 15 (tenant packages): the install of a package with no dependencies (a new tenant: config.json
and one file in progs/, no install_deps.sh) against creating the same admin overlay tenant alone, and
100 packages (quick: 10) through one bulk `jail_package` task of ansible-playbook.

Called by bench/launch/run with the benchmark's config and jailrun; tenants of its own, removed after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchkit as bk

UID_BASE = 52000


def _package(base: Path, name: str, uid: int) -> Path:
    (base / "progs").mkdir(parents=True)
    config = {"name": name, "version": "1", "program": [f"/home/{name}/progs/run.sh"], "uid": uid}
    (base / "config.json").write_text(json.dumps(config))
    (base / "progs/run.sh").write_text("#!/bin/sh\necho hi\n")
    (base / "progs/run.sh").chmod(0o755)
    return base


def _ansible_playbook() -> str | None:
    candidates = [
        os.environ.get("ANSIBLE_PLAYBOOK"),
        str(Path(sys.executable).parent / "ansible-playbook"),
        shutil.which("ansible-playbook"),
    ]
    candidates.append(str(bk.REPO / ".venv" / "bin" / "ansible-playbook"))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def package_rows(cfg, converge, jailrun: str, quick: bool) -> list[dict]:
    from jailyard.package import install

    n = 3 if quick else 10
    bulk = 10 if quick else 100
    rows: list[dict] = []
    made: list[str] = []
    with tempfile.TemporaryDirectory(prefix="jailyard-bench-packages-") as tmp:
        work = Path(tmp)
        try:
            inst, plain = [], []
            for i in range(n):  # alternating, so the machine's load falls on both alike
                name, uid = f"pkgb{i}", UID_BASE + i
                made.append(name)
                t0 = time.perf_counter()
                install(cfg, _package(work / name, name, uid), jailrun=jailrun)
                inst.append((time.perf_counter() - t0) * 1000.0)
                peer = f"pkgp{i}"
                made.append(peer)
                t0 = time.perf_counter()
                converge(cfg, {"name": peer, "uid": UID_BASE + 500 + i, "layout": "overlay", "state": "present"})
                plain.append((time.perf_counter() - t0) * 1000.0)
            rows.append(
                bk.row(
                    "packages",
                    "install of a package with no dependencies (new tenant)",
                    bk.stats(inst),
                    "ms",
                    "creating the same overlay tenant",
                    bk.stats(plain),
                    note="issue 15: read and hash, create, stage and switch in the jail (2 jailrun sessions), spec",
                )
            )
            ansible = _ansible_playbook()
            if ansible is None:
                rows.append(
                    bk.row("packages", f"{bulk} packages, one bulk jail_package task", None, "s", note="ansible-playbook not found")
                )
                return rows
            items = []
            for i in range(bulk):
                name = f"pkgk{i}"
                made.append(name)
                items.append({"src": str(_package(work / name, name, UID_BASE + 1000 + i))})
            book = work / "bulk.yml"
            task = {"jail_package": {"packages": items, "config": str(cfg.path)}}
            book.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [task]}]))
            env = {
                **os.environ,
                "PATH": f"{Path(jailrun).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",  # the module finds this jailrun
                "ANSIBLE_LIBRARY": str(bk.REPO / "library"),
                "ANSIBLE_MODULE_UTILS": str(bk.REPO / "module_utils"),
                "ANSIBLE_ACTION_PLUGINS": str(bk.REPO / "action_plugins"),
                "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_LOCALHOST_WARNING": "0",
            }
            t0 = time.perf_counter()
            out = subprocess.run([ansible, "-i", "localhost,", str(book)], capture_output=True, text=True, env=env, cwd=work, check=False)
            elapsed = time.perf_counter() - t0
            ok = out.returncode == 0
            rows.append(
                bk.row(
                    "packages",
                    f"{bulk} packages, one bulk jail_package task (ansible-playbook)",
                    elapsed if ok else None,
                    "s",
                    note="issue 15: new tenants, no dependencies" + ("" if ok else f"; failed: {out.stdout[-300:]}"),
                )
            )
        finally:
            for name in made:
                try:
                    converge(cfg, {"name": name, "state": "absent", "purge": True, "force": True})
                except Exception as exc:  # noqa: BLE001  a benchmark cleans up what it can and says what it could not
                    bk.log(f"bench/packages: cannot remove {name}: {exc}")
    return rows
