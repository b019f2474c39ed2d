"""`bench/run --quick` in the test suite so the benchmarks never rot: it prints one table,
writes its JSON, and leaves no mount, process or workspace behind."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the benchmarks mount jails")]

WORKSPACES = Path(os.environ.get("BENCH_TMPDIR", "/var/tmp"))


def _owner_gone(path: str) -> bool:
    """Workspaces are named jailyard-bench-<part>-<pid>-*: one whose process still runs is a concurrent run's."""
    name = next((c for c in path.split("/") if c.startswith("jailyard-bench-")), "")
    pid = next((int(p) for p in name.split("-")[2:] if p.isdigit()), None)
    return pid is None or not Path(f"/proc/{pid}").exists()


def bench_mounts() -> set[str]:
    targets = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=True).stdout
    return {t for t in targets.splitlines() if "jailyard-bench-" in t and _owner_gone(t)}


def bench_workspaces() -> set[Path]:
    return {p for p in WORKSPACES.glob("jailyard-bench-*") if _owner_gone(str(p))}


def test_quick_bench_prints_one_table_writes_json_and_cleans_up(tmp_path: Path) -> None:
    mounts_before = bench_mounts()
    workspaces_before = bench_workspaces()
    results = tmp_path / "results"
    out = subprocess.run(
        [str(REPO / "bench" / "run"), "--quick", "--no-install", "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    # Whatever happened, nothing it made may be left behind.
    assert bench_mounts() <= mounts_before, "the benchmark left mounts behind"
    assert bench_workspaces() <= workspaces_before, "the benchmark left a workspace behind"

    reports = list(results.glob("*-quick.json"))
    assert len(reports) == 1, (sorted(results.iterdir()), out.stderr[-5000:])
    report = json.loads(reports[0].read_text())
    broken = {
        name: part["status"] for name, part in report["parts"].items() if not str(part["status"]).startswith(("ok", "absent", "skipped"))
    }
    assert not broken, f"benchmark parts failed: {broken}\n{out.stderr[-5000:]}"
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]

    # Exactly one markdown table on stdout, headed by the machine it ran on.
    assert out.stdout.count("| Benchmark | Case |") == 1, out.stdout
    assert "Linux " in out.stdout and "CPUs" in out.stdout and "GiB RAM" in out.stdout
    assert "| scale (bind) | create 1 jail" in out.stdout
    assert "| scale (overlay) | expiry pass unmounting" in out.stdout
    assert "| modules | re-run" in out.stdout
    assert "x bare mount(2)" in out.stdout  # ratios against a peer measured in the same run

    assert report["quick"] is True and report["machine"]["nproc"] >= 1
    for part in ("scale", "modules"):
        assert report["parts"][part]["status"] == "ok", report["parts"][part]["status"]
        assert report["parts"][part]["rows"]
    assert all(r["median"] is not None for r in report["rows"] if r["benchmark"].startswith("scale ("))
    assert "| scale | setup |" in out.stdout  # where the workspace was: the node's disk or a RAM-backed ext4

    # Issue 20: the busy-host rows, each with a ratio against a peer measured in the same run.
    launch = report["parts"].get("launch", {})
    if str(launch.get("status", "")).startswith("ok"):
        for case in (
            "jailrun launches per second, 8 parallel callers",
            "jailrun p99 latency, 8 parallel callers",
            "jailrun supervisor memory per live session (PSS)",
            "kernel memory (Slab) per live jailrun session",
            "kernel memory (Slab) per mounted idle jail",
            "cold launch, today: jailrun starts python3",
            "cold launch, mount service",
            "cold launch, C mount step",
        ):
            assert f"| launch, busy host | {case}" in out.stdout, case
        assert "<= 1.15x harness" in out.stdout
    for case in ("jailctl list", "jail_info", "bulk converge with nothing to change", "expiry pass unmounting"):
        assert f"| scale on disk | {case}" in out.stdout, case
    busy = [r for r in report["rows"] if r["benchmark"] in ("launch, busy host", "scale on disk")]
    assert busy and all(r["ratio"] is not None for r in busy if not r["case"].startswith("warm jailrun in the same rounds")), [
        r["case"] for r in busy if r["ratio"] is None
    ]
    assert report["table"] == out.stdout
