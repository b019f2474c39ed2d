"""Launch benchmarks for a busy host (issue 20), called by bench/launch/run in its workspace:

- concurrency(): N parallel callers (conc.c) launching `/bin/true` for a fixed time, jailrun
  against bubblewrap at the same N in the same run: launches per second, p50 and p99.
- session_memory(): K sleeping sessions at once, jailrun against bubblewrap: the
  supervisors' resident memory (PSS/RSS from /proc/PID/smaps_rollup) and the kernel's
  (Slab, KernelStack, PageTables deltas of /proc/meminfo) per session.
- cold_candidates(): the cold launch (jail not mounted) by each way of mounting it that
  issue 20 asks to compare, against a warm launch of the same jail in the same rounds.

Each returns (rows, raw). Every process and mount made here is gone when they return,
also after a failure or a signal (their finally blocks; the caller's workspace unmounts the rest).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import benchkit as bk

HERE = Path(__file__).resolve().parent
G = "launch, busy host"


def build_tools(build: Path, launcher_dir: Path) -> None:
    for tool in ("conc", "chain", "cmount"):
        subprocess.run(["cc", "-O2", "-I", str(launcher_dir), "-o", str(build / tool), str(HERE / f"{tool}.c")], check=True)


def percentile(xs: list[float], q: float) -> float | None:
    """Nearest-rank percentile of xs (q in 0..100)."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


# ---------------------------------------------------------------- concurrency


def run_parallel(conc: str, callers: int, seconds: float, tenants: int, argv: list[str], out: Path) -> dict[str, Any]:
    """conc.c with `callers` workers; the launches it timed, throughput and percentiles (ms)."""
    for old in out.parent.glob(out.name + ".*"):
        old.unlink()
    env = {"PATH": "/usr/bin:/bin"}
    r = subprocess.run([conc, str(callers), str(seconds), str(out), str(tenants), *argv], env=env, capture_output=True, text=True)
    ok_ms, failed, last_end = [], 0, 0.0
    for f in out.parent.glob(out.name + ".*"):
        for line in f.read_text().split("\n"):
            if not line:
                continue
            start, wall, status = line.split()
            last_end = max(last_end, float(start) + float(wall))
            if status == "0":
                ok_ms.append(float(wall) / 1000)
            else:
                failed += 1
        f.unlink()
    window = max(last_end / 1e6, seconds)
    return {
        "callers": callers,
        "launches": len(ok_ms),
        "failed": failed,
        "window_s": window,
        "per_s": len(ok_ms) / window,
        "p50": percentile(ok_ms, 50),
        "p99": percentile(ok_ms, 99),
        "min": min(ok_ms) if ok_ms else None,
        "rc": r.returncode,
        "stderr": r.stderr[-500:],
    }


def concurrency(
    conc: str, jailrun_argv: list[str], bwrap_argv: list[str], tenants: int, levels: tuple[int, ...], seconds: float, work: Path
) -> tuple[list[dict], dict]:
    """jailrun_argv/bwrap_argv hold "@@" where the tenant index goes: worker i launches in tenant
    i % tenants (a jail of its own up to `tenants` callers, as many students of one course)."""
    rows, raw = [], {}
    for k, callers in enumerate(levels):
        order = [("jailrun", jailrun_argv), ("bubblewrap", bwrap_argv)]
        if k % 2:
            order.reverse()  # neither side always runs first (load from elsewhere falls on both alike)
        res = {}
        for name, argv in order:
            bk.log(f"launch: {callers} parallel callers, {name}, {seconds:g} s")
            res[name] = run_parallel(conc, callers, seconds, tenants, argv, work / f"conc-{name}")
            if res[name]["failed"] or res[name]["rc"]:
                bk.log(f"launch: {name}: {res[name]['failed']} launches failed; {res[name]['stderr']}")
        raw[f"callers_{callers}"] = res
        j, b = res["jailrun"], res["bubblewrap"]
        label = f"{callers} parallel callers, {tenants:,} tenants mounted"
        fail_note = f"; {j['failed']} failed" if j["failed"] else ""
        thr_target, thr_ok = None, None
        if callers == 32:
            thr_target = ">= 1.5x bubblewrap"
            thr_ok = bool(b["per_s"] and j["per_s"] >= 1.5 * b["per_s"])
        rows.append(
            bk.row(
                G,
                f"jailrun launches per second, {label}",
                j["per_s"],
                "launches/s",
                "bubblewrap",
                b["per_s"] or None,
                thr_target,
                thr_ok,
                note=f"above 1 = more than the peer; {j['launches']:,} launches in {j['window_s']:.1f} s{fail_note}; "
                f"bubblewrap {b['launches']:,} in {b['window_s']:.1f} s" + (f", {b['failed']} failed" if b["failed"] else ""),
            )
        )
        rows.append(
            bk.row(
                G,
                f"jailrun p50 latency, {label}",
                {"n": j["launches"], "min": j["min"], "median": j["p50"]},
                "ms",
                "bubblewrap p50",
                {"median": b["p50"]},
                note=f"bubblewrap p99 {bk.fmt_num(b['p99'])} ms",
            )
        )
        rows.append(
            bk.row(
                G,
                f"jailrun p99 latency, {label}",
                {"n": j["launches"], "min": j["min"], "median": j["p99"]},
                "ms",
                "jailrun p50",
                {"median": j["p50"]},
                "<= 3x p50",
                bool(j["p50"] and j["p99"] is not None and j["p99"] <= 3 * j["p50"]),
            )
        )
    return rows, raw


# ---------------------------------------------------------------- memory per live session


def children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                kids += [int(x) for x in fh.read().split()]
    except OSError:
        pass
    return kids


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def rollup(pid: int) -> dict[str, int]:
    """Rss and Pss of a process in KiB (smaps_rollup)."""
    values = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss"):
                    values[key] = int(rest.split()[0])
    except OSError:
        pass
    return values


KERNEL_KEYS = ("Slab", "SUnreclaim", "KernelStack", "PageTables")


def start_sessions(argvs: list[list[str]], program: str, batch: int, timeout: float, procs: list[subprocess.Popen]) -> None:
    """Start one session per argv into procs, `batch` at a time, each batch waited for until its program runs.
    Their stderr goes to one temporary file (a pipe each would be 1,000 descriptors)."""
    errors = tempfile.TemporaryFile("w+")
    for i in range(0, len(argvs), batch):
        started = [
            subprocess.Popen(a, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True)
            for a in argvs[i : i + batch]
        ]
        procs += started
        deadline = time.monotonic() + timeout
        for p in started:
            while not any(comm(x) == program for x in tree(p.pid)[1:]):
                if p.poll() is not None:
                    errors.seek(0)
                    raise RuntimeError(f"session {p.args[:3]} ended: exit {p.returncode}: {errors.read()[-300:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"session {p.args[:3]} did not start its program in {timeout:.0f} s")
                time.sleep(0.005)
    errors.close()


def stop_sessions(procs: list[subprocess.Popen]) -> None:
    """SIGKILL every process of every session (the supervisor first: its session dies with it), reap."""
    for p in procs:
        pids = tree(p.pid) if p.poll() is None else []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            bk.log(f"launch: session {p.pid} did not end")


def measure_sessions(argvs: list[list[str]], program: str, batch: int) -> dict[str, Any]:
    procs: list[subprocess.Popen] = []
    try:
        m0 = bk.meminfo()
        t0 = time.monotonic()
        start_sessions(argvs, program, batch, 120, procs)
        started_s = time.monotonic() - t0
        time.sleep(0.5)  # let what the launches freed (RCU-deferred) go before reading
        m1 = bk.meminfo()
        sup_pss = sup_rss = prog_pss = 0
        nproc = 0
        for p in procs:
            for pid in tree(p.pid):
                r = rollup(pid)
                nproc += 1
                if comm(pid) == program:
                    prog_pss += r.get("Pss", 0)
                else:
                    sup_pss += r.get("Pss", 0)
                    sup_rss += r.get("Rss", 0)
    finally:
        stop_sessions(procs)
    n = len(argvs)
    time.sleep(0.5)
    m2 = bk.meminfo()
    return {
        "sessions": n,
        "processes_per_session": nproc / n,
        "start_s": started_s,
        "supervisor_pss_kib": sup_pss / n,
        "supervisor_rss_kib": sup_rss / n,
        "program_pss_kib": prog_pss / n,
        **{f"{k.lower()}_kib": (m1[k] - m0[k]) / n for k in KERNEL_KEYS},
        **{f"{k.lower()}_kib_after_stop": (m2[k] - m0[k]) / n for k in KERNEL_KEYS},
    }


def session_memory(
    jailrun: str, bwrap_for: Any, names: list[str], roots: list[str], slab_per_jail: float | None, mounted: int, program: str = "/bin/sleep"
) -> tuple[list[dict], dict]:
    """len(names) sleeping sessions at once, one per tenant, jailrun then bubblewrap (bwrap_for(root, argv))."""
    n = len(names)
    # A first launch per tenant makes its cgroups: done before, so only sessions are counted.
    for name in names:
        subprocess.run([jailrun, name, "--", "/bin/true"], stdin=subprocess.DEVNULL, capture_output=True)
    prog = [program, "3600"]
    base = Path(program).name
    j = measure_sessions([[jailrun, name, "--", *prog] for name in names], base, batch=16)
    b = measure_sessions([bwrap_for(root, prog) for root in roots], base, batch=16)
    raw = {"jailrun": j, "bubblewrap": b, "slab_per_mounted_jail_kib": slab_per_jail}
    label = f"{n:,} sleeping sessions, one per tenant"
    rows = [
        bk.row(
            G,
            f"jailrun supervisor memory per live session (PSS), {label}",
            j["supervisor_pss_kib"],
            "KiB",
            "bubblewrap's",
            b["supervisor_pss_kib"],
            note=f"RSS {bk.fmt_num(j['supervisor_rss_kib'])} KiB (bubblewrap {bk.fmt_num(b['supervisor_rss_kib'])}); "
            f"{j['processes_per_session']:.0f} processes per session with the program, "
            f"bubblewrap {b['processes_per_session']:.0f}; the program's own PSS {bk.fmt_num(j['program_pss_kib'])} KiB",
        ),
        bk.row(
            G,
            f"kernel memory (Slab) per live jailrun session, {label}",
            j["slab_kib"],
            "KiB",
            "bubblewrap session",
            b["slab_kib"],
            note=f"SUnreclaim {bk.fmt_num(j['sunreclaim_kib'])} KiB (bubblewrap {bk.fmt_num(b['sunreclaim_kib'])}); "
            f"kernel stacks + page tables {bk.fmt_num(j['kernelstack_kib'] + j['pagetables_kib'])} KiB "
            f"(bubblewrap {bk.fmt_num(b['kernelstack_kib'] + b['pagetables_kib'])}); Slab left after the sessions end "
            f"{bk.fmt_num(j['slab_kib_after_stop'])} KiB (bubblewrap {bk.fmt_num(b['slab_kib_after_stop'])}); "
            "host-wide counters: other work on the node moves them",
        ),
    ]
    if slab_per_jail is not None:
        rows.append(
            bk.row(
                G,
                f"kernel memory (Slab) per mounted idle jail, {mounted:,} jails mounted",
                slab_per_jail,
                "KiB",
                "a live jailrun session",
                j["slab_kib"],
                note="Slab delta across mounting them (converge_many); the scale part has it against bare mount(2)",
            )
        )
    return rows, raw


# ---------------------------------------------------------------- cold launch candidates


MS_FLAGS = {"ro": 1, "nosuid": 2, "nodev": 4, "noexec": 8}


def cmount_args(cfg: Any, name: str) -> list[str]:
    from jailyard.registry import load_plan

    plan = load_plan(cfg, name)
    args = []
    for entry, target in zip(plan.mounts, plan.targets(), strict=True):
        if entry.fstype != "bind":
            raise ValueError("the C mount step candidate handles bind jails only")
        args += [entry.source, target, str(sum(MS_FLAGS[o] for o in entry.options))]
    return args


def start_service(script: Path, config: str, sock: Path, fork: bool) -> subprocess.Popen:
    sock.unlink(missing_ok=True)
    argv = ["/usr/bin/python3", "-I", "-S", str(script), "--config", config, "--socket", str(sock)] + (["--fork"] if fork else [])
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    assert p.stdout is not None
    if p.stdout.readline().strip() != "ready":
        p.kill()
        p.wait()
        raise RuntimeError("the prototype mount service did not start")
    return p


BUILT = "the mount service as built: jailrun asks jailyard-mount --serve over <run_dir>/mount.sock"


def start_real_service(cfg: Any, sock: Path) -> subprocess.Popen:
    sock.unlink(missing_ok=True)
    script = Path(__file__).resolve().parents[2] / "bin" / "jailyard-mount"
    argv = ["/usr/bin/python3", "-I", "-S", str(script), "--serve", "--config", str(cfg.path), "--socket", str(sock)]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    assert p.stdout is not None
    if not p.stdout.readline().startswith("jailyard-mount: serving on"):
        p.kill()
        p.wait()
        raise RuntimeError("the mount service did not start")
    return p


def cold_candidates(cfg: Any, converge: Any, build: Path, jailrun: str, name: str, n: int, jails: int) -> tuple[list[dict], dict]:
    """Each candidate after the same unmount, in rounds (one sample of each per round), and a warm
    launch of the same jail in the same rounds as the peer."""
    chain = str(build / "chain")
    launch = [jailrun, name, "--", "/bin/true"]
    services: list[subprocess.Popen] = []
    samples: dict[str, list[float]] = {}
    try:
        svc_sock, zyg_sock = cfg.run_dir / "svc.sock", cfg.run_dir / "zyg.sock"
        services.append(start_service(HERE / "mountsvc.py", str(cfg.path), svc_sock, fork=False))
        services.append(start_service(HERE / "mountsvc.py", str(cfg.path), zyg_sock, fork=True))
        # The built service (bin/jailyard_mountd.py): bound aside, and moved to <run_dir>/mount.sock
        # only for its own samples, since jailrun asks whatever listens there.
        real_sock, asked_sock = cfg.run_dir / "real.sock", cfg.run_dir / "mount.sock"
        services.append(start_real_service(cfg, real_sock))
        converge(cfg, {"name": name, "state": "mounted"})
        cm = cmount_args(cfg, name)
        candidates = {
            "today: jailrun starts python3 -I -S jailyard-mount": ["-", name, *launch],
            "mount service: a running Python mounts it, asked over a unix socket": [str(svc_sock), name, *launch],
            BUILT: ["-", name, *launch],
            "zygote: a fork of a running Python mounts it": [str(zyg_sock), name, *launch],
            "C mount step: a spawned C program makes the plan's mount(2) calls": ["-", name, str(build / "cmount"), *cm, "::", *launch],
        }
        samples = {k: [] for k in [*candidates, "warm"]}
        for i in range(n):
            keys = list(candidates)
            keys = keys[i % len(keys) :] + keys[: i % len(keys)]
            for key in keys:
                converge(cfg, {"name": name, "state": "unmounted"})
                if key == BUILT:
                    real_sock.rename(asked_sock)
                try:
                    r = subprocess.run([chain, *candidates[key]], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
                finally:
                    if key == BUILT:
                        asked_sock.rename(real_sock)
                if r.returncode != 0:
                    bk.log(f"launch: cold candidate {key!r} failed: {r.stderr.strip()[-300:]}")
                    continue
                samples[key].append(float(r.stdout) / 1000)
            converge(cfg, {"name": name, "state": "mounted"})
            for _ in range(2):
                r = subprocess.run([chain, "-", name, *launch], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
                if r.returncode == 0:
                    samples["warm"].append(float(r.stdout) / 1000)
    finally:
        for p in services:
            p.terminate()
            p.wait(timeout=10)
        converge(cfg, {"name": name, "state": "mounted"})
    warm = bk.stats(samples["warm"])
    rows = []
    for key in candidates:
        st = bk.stats(samples[key]) if samples[key] else None
        rows.append(
            bk.row(
                G,
                f"cold launch, {key}, {jails:,} jails mounted",
                st,
                "ms",
                "warm jailrun, same rounds",
                warm,
                "<= 2x warm",
                bool(st and warm["median"] and st["median"] <= 2 * warm["median"]),
                note="" if st else "did not run here",
            )
        )
    rows.append(bk.row(G, f"warm jailrun in the same rounds, {jails:,} jails mounted", warm, "ms", note="the peer of the cold rows"))
    return rows, {k: bk.stats(v) for k, v in samples.items()}
