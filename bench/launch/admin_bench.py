"""Issue 14 (tenant root): an admin tenant's warm launch against a plain overlay tenant's, and the mount
of an admin jail (the image idmapped under the overlay) against a plain overlay jail's, in the same run.

Called by bench/launch/run with the benchmark's config, jailrun and loop; two tenants of its own.
"""

from __future__ import annotations

import time

import benchkit as bk


def admin_rows(cfg, converge, jailrun: str, loop, loop_bin: str, n: int, n_mount: int) -> list[dict]:
    from jailyard.mount import mount_jail, unmount_jail
    from jailyard.plan import parse_plan

    tenants = {"admin": ("benchadm", 10002, True), "plain": ("benchovl", 10003, False)}
    rows: list[dict] = []
    try:
        for name, uid, admin in tenants.values():
            converge(cfg, {"name": name, "uid": uid, "layout": "overlay", "admin": admin, "state": "mounted"})
        # Warm launches, in alternating rounds so the machine's load falls on both alike.
        samples: dict[str, list[float]] = {k: [] for k in tenants}
        for _ in range(5):
            for key, (name, _uid, _admin) in tenants.items():
                st = loop(loop_bin, max(1, n // 5), [jailrun, name, "--", "/bin/true"])
                if st is None:
                    return [bk.row("launch", "jailrun, admin tenant (tenant root), warm", None, "ms", note=f"{key} failed")]
                samples[key] += st["samples"]
        adm, plain = bk.stats(samples["admin"]), bk.stats(samples["plain"])
        rows.append(
            bk.row(
                "launch",
                "jailrun, admin tenant (tenant root), warm",
                adm,
                "ms",
                "jailrun, plain overlay tenant",
                plain,
                "<= 1.2x",
                bool(adm["median"] and plain["median"] and adm["median"] <= 1.2 * plain["median"]),
                note="issue 14: the user namespace is made per launch (a child of the supervisor)",
            )
        )
        # The mount itself (in process, what the mount step does): unmount, then mount from the plan.
        mount_samples: dict[str, list[float]] = {k: [] for k in tenants}
        plans = {k: parse_plan((cfg.tenants_dir / name / "plan").read_text(), name) for k, (name, _u, _a) in tenants.items()}
        for _ in range(n_mount):
            for key, plan in plans.items():
                unmount_jail(plan.root)
                t0 = time.perf_counter()
                mount_jail(cfg, plan)
                mount_samples[key].append((time.perf_counter() - t0) * 1000.0)
        madm, mplain = bk.stats(mount_samples["admin"]), bk.stats(mount_samples["plain"])
        rows.append(
            bk.row(
                "launch",
                "mount of an admin jail (idmapped image under the overlay)",
                madm,
                "ms",
                "mount of a plain overlay jail",
                mplain,
                note="in process (mount.mount_jail), without the mount step's interpreter start",
            )
        )
    finally:
        for name, _uid, _admin in tenants.values():
            converge(cfg, {"name": name, "state": "absent", "purge": True, "force": True})
    return rows
