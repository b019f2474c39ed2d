"""issue 17: what `net: private` costs, against `net: none` measured in the same run.

- warm launch (`jailrun NAME -- /bin/true`) of a private jail against a jail without a network,
  in alternating rounds (target: at most 1.2x; a private session setns()es into the tenant's
  namespace where a none session unshares a new one);
- mounting a private jail (the network made: namespace, veth, address, nftables, qdisc) against
  mounting the same jail without a network (`converge` state mounted after unmounted).

A bridge, pool and nftables table of the run's own (jyb<pid>, 10.254.K.0/24); removed at the end.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from typing import Any

import benchkit as bk


def net_rows(cfg: Any, converge: Any, loop: Any, loop_bin: str, jailrun: str, n: int, rounds: int = 5) -> list[dict]:
    bridge = f"jyb{os.getpid()}"[:15]
    cfg = dataclasses.replace(cfg, net_bridge=bridge, net_pool4=f"10.254.{os.getpid() % 200 + 20}.0/24")
    cfg.path.write_text(cfg.render())
    # A private jail binds its own resolv.conf over the image's, which built images have (imagebuild
    # writes one); the benchmark's busybox image gets one here.
    resolv = cfg.images_dir / "current" / "rootfs" / "etc" / "resolv.conf"
    if not resolv.exists():
        resolv.write_text("nameserver 127.0.0.1\n")
    rows: list[dict] = []
    try:
        converge(cfg, {"name": "netp", "uid": 10901, "state": "mounted", "net": "private"})
        converge(cfg, {"name": "netn", "uid": 10902, "state": "mounted"})
        samples: dict[str, list[float]] = {"private": [], "none": []}
        for _ in range(rounds):
            for mode, name in (("private", "netp"), ("none", "netn")):
                st = loop(loop_bin, max(1, n // rounds), [jailrun, name, "--", "/bin/true"])
                if st:
                    samples[mode] += st["samples"]
        p, z = bk.stats(samples["private"]), bk.stats(samples["none"])
        ok = bool(p["median"] and z["median"] and p["median"] <= 1.2 * z["median"])
        rows.append(bk.row("launch", "jailrun warm, net private", p, "ms", "net none", z, "<= 1.2x", ok))
        mounts: dict[str, list[float]] = {"private": [], "none": []}
        for _ in range(rounds):
            for mode, name in (("private", "netp"), ("none", "netn")):
                converge(cfg, {"name": name, "state": "unmounted"})
                t0 = time.perf_counter()
                converge(cfg, {"name": name, "state": "mounted"})
                mounts[mode].append((time.perf_counter() - t0) * 1000)
        rows.append(
            bk.row(
                "launch",
                "mount a jail with net private (converge)",
                bk.stats(mounts["private"]),
                "ms",
                "net none",
                bk.stats(mounts["none"]),
                note="namespace, veth, address, nftables batch: iproute2 and nft at mount only",
            )
        )
    except Exception as exc:  # noqa: BLE001 - a failed part is a row, the rest of the run goes on
        rows.append(bk.row("launch", "net private: failed", None, "", note=str(exc)[:200]))
    finally:
        for name in ("netp", "netn"):
            try:
                converge(cfg, {"name": name, "state": "absent", "purge": True, "force": True})
            except Exception:  # noqa: BLE001 - best effort; the workspace goes next
                pass
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
        subprocess.run(["nft", "delete", "table", "inet", f"jailyard_{bridge}"], capture_output=True, check=False)
    return rows
