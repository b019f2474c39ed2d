"""Tenant leases (module_utils/jailyard/lease.py): one node at a time mounts a tenant of shared storage.

Two "nodes" here are two node configs on this host (their own jails, run and
config directories, each with a cluster.conf naming it) over ONE tenants
directory, as two machines over one NFS export: every decision goes through
files in that directory, as it would through the server.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jailtest import REPO, make_config, wait_until
from jailyard import lease
from jailyard.config import Config
from jailyard.errors import JailError
from jailyard.expiry import expire_pass
from jailyard.lifecycle import converge, mount_tenant
from jailyard.mount import is_mounted
from jailyard.registry import load_plan
from jailyard.sessions import record_session

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

TTL = 600
CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE = 0x4000, 1 << 18


class Node:
    """A jail host of the cluster: a process in a mount namespace of its own (its mounts are
    its own, as on a machine of its own, and go when it ends), its own node config, run
    directory and cluster.conf, the SAME jails directory path as every other node (a plan
    on the shared storage names the jail root, which every node must agree on) and the
    shared tenants directory. Calls run in that process; exceptions come back as
    (type name, message, holder)."""

    def __init__(self, base: Path, images: Path, tenants: Path, jails: Path, name: str, barrier=None, ttl: int = TTL) -> None:
        base.mkdir()
        self.cfg = make_config(base, images, tenants_dir=tenants, jails_dir=jails)
        (base / "cluster.conf").write_text(f"# node config of {name}\nnode = {name}\nlease_ttl = {ttl}\n")
        self.name = name
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_node_main, args=(self.cfg, child, barrier), daemon=True)
        self.proc.start()

    def call(self, fn, *args):
        self.conn.send((fn, args))
        kind, value = self.conn.recv()
        if kind == "err":
            raise NodeError(*value)
        return value

    def close(self) -> None:
        if self.proc.is_alive():
            self.conn.send(None)
            self.proc.join(timeout=60)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


class NodeError(Exception):
    def __init__(self, kind: str, msg: str, holder: str | None) -> None:
        super().__init__(f"{kind}: {msg}")
        self.kind, self.msg, self.holder = kind, msg, holder


def _node_main(cfg: Config, conn, barrier) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0 or libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "unshare/mount --make-rprivate /")
    global BARRIER
    BARRIER = barrier
    while (msg := conn.recv()) is not None:
        fn, args = msg
        try:
            conn.send(("ok", fn(cfg, *args)))
        except BaseException as exc:  # noqa: BLE001 - sent back to the test, which raises it
            conn.send(("err", (type(exc).__name__, str(exc), getattr(exc, "holder", None))))


BARRIER = None


def do_converge(cfg: Config, params: dict) -> bool:
    return converge(cfg, params).changed


def do_mount(cfg: Config, name: str) -> None:
    mount_tenant(cfg, name)


def mounted(cfg: Config, name: str) -> bool:
    return is_mounted(load_plan(cfg, name))


def write(cfg: Config, name: str, rel: str, text: str) -> None:
    (cfg.jail_root(name) / rel).write_text(text)


def read(cfg: Config, name: str, rel: str) -> str:
    return (cfg.jail_root(name) / rel).read_text()


def do_expire(cfg: Config) -> dict:
    return expire_pass(cfg).as_dict()


def run_helper(cfg: Config, name: str) -> tuple[int, str]:
    helper = [sys.executable, "-I", "-S", str(REPO / "bin" / "jailyard-mount"), "--config", str(cfg.path), name]
    out = subprocess.run(helper, capture_output=True, text=True, check=False)
    return out.returncode, out.stderr


def race_mount(cfg: Config, name: str) -> str:
    BARRIER.wait()  # type: ignore[attr-defined]
    try:
        mount_tenant(cfg, name)
    except lease.LeaseHeld as exc:
        return f"refused:{exc.holder}"
    return "mounted"


@pytest.fixture
def cluster(tmp_path: Path, image_store: Path, mount_guard: None):
    """Two nodes, n1 and n2, over one tenants directory; (n1, n2, tenants dir)."""
    tenants, jails = tmp_path / "shared-tenants", tmp_path / "jails"
    tenants.mkdir()
    jails.mkdir()
    barrier = multiprocessing.get_context("fork").Barrier(2)
    made = []
    try:
        for name in ("n1", "n2"):
            made.append(Node(tmp_path / name, image_store, tenants, jails, name, barrier))
        yield made[0], made[1], tenants
    finally:
        for n in made:
            n.close()


@pytest.fixture
def dying_cluster(tmp_path: Path, image_store: Path, mount_guard: None):
    """n1 with a 2 s lease (a test kills it: its lease then expires soon) and n2, over one tenants
    directory; (n1, n2, tenants dir)."""
    tenants, jails = tmp_path / "shared-tenants", tmp_path / "jails"
    tenants.mkdir()
    jails.mkdir()
    made = []
    try:
        made.append(Node(tmp_path / "n1", image_store, tenants, jails, "n1", ttl=2))
        made.append(Node(tmp_path / "n2", image_store, tenants, jails, "n2"))
        yield made[0], made[1], tenants
    finally:
        for n in made:
            n.close()


def test_two_nodes_racing_to_mount_one_tenant_end_with_one_holder_100_times(cluster) -> None:
    """Reproduction: both nodes mount the same tenant at the same instant (a barrier), 100 tenants
    in a row; each time exactly one mounts it and holds its lease, the other is refused naming it."""
    n1, n2, tenants = cluster
    names = [f"race{i:03d}" for i in range(100)]
    for i, name in enumerate(names):
        n1.call(do_converge, {"name": name, "uid": 10001 + i, "state": "present"})
    for name in names:
        n1.conn.send((race_mount, (name,)))
        n2.conn.send((race_mount, (name,)))
        got = {n.name: n.conn.recv() for n in (n1, n2)}
        assert sorted(got.values()) in ([("ok", "mounted"), ("ok", "refused:n1")], [("ok", "mounted"), ("ok", "refused:n2")]), (name, got)
        winner, loser = (n1, n2) if got["n1"] == ("ok", "mounted") else (n2, n1)
        holder = lease.holder(tenants, name)
        assert holder is not None and holder[0] == winner.name
        assert winner.call(mounted, name) and not loser.call(mounted, name)
        winner.call(do_converge, {"name": name, "state": "unmounted"})
        assert lease.holder(tenants, name) is None


def _take_worker(tenants: str, node_name: str, names: list[str], barrier, results) -> None:
    mine = lease.Settings(node_name, TTL)
    for name in names:
        barrier.wait()
        try:
            results.put((name, node_name, f"took:{lease.acquire(tenants, name, mine)}"))
        except lease.LeaseHeld as exc:
            results.put((name, node_name, f"refused:{exc.holder}"))
        except BaseException as exc:  # noqa: BLE001
            results.put((name, node_name, f"error:{exc}"))


def test_two_nodes_racing_to_take_over_a_dead_nodes_lease_end_with_one_holder_100_times(tmp_path: Path) -> None:
    """Reproduction: a third node died holding 100 tenants' leases (expired); two nodes take over
    each at the same instant: exactly one new holder each time, a generation above the dead one's."""
    tenants = tmp_path / "tenants"
    names = [f"t{i:03d}" for i in range(100)]
    dead = lease.Settings("dead", 1)
    for name in names:
        (tenants / name).mkdir(parents=True)
        assert lease.acquire(str(tenants), name, dead) == 1
    assert wait_until(lambda: all(lease.holder(str(tenants), n) is None for n in names))
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=_take_worker, args=(str(tenants), who, names, barrier, results)) for who in ("n1", "n2")]
    for w in workers:
        w.start()
    outcomes: dict[str, dict[str, str]] = {}
    try:
        for _count in range(2 * len(names)):
            name, who, what = results.get(timeout=120)
            outcomes.setdefault(name, {})[who] = what
    finally:
        for w in workers:
            w.join(timeout=60)
    for name in names:
        got = outcomes[name]
        assert sorted(got.values()) in (["refused:n1", "took:2"], ["refused:n2", "took:2"]), (name, got)
        winner = next(who for who, what in got.items() if what.startswith("took"))
        assert lease.holder(str(tenants), name)[0] == winner  # type: ignore[index]
        assert sorted(os.listdir(tenants / name / "lease")) == ["g1", "g2"]  # no temp file left


def n2_takes_over_from_dead_n1(n1: Node, n2: Node, tenants: Path, name: str) -> None:
    """n1 is killed with name mounted (its lease neither renewed nor released); once the lease has
    expired n2 mounts name and holds it."""
    n1.proc.kill()
    n1.proc.join()
    assert wait_until(lambda: lease.holder(tenants, name) is None)
    n2.call(do_mount, name)
    assert lease.holder(tenants, name)[0] == "n2"  # type: ignore[index]


def test_a_mount_on_another_node_is_refused_naming_the_holder_then_takes_over_when_it_expires(dying_cluster) -> None:
    """Node n1 mounts alice and dies (killed: its lease is never renewed nor released): n2 is
    refused while the lease runs, naming n1, and mounts alice once it has expired; alice's
    files written through n1 are there. A node that comes back finds its lease lost."""
    n1, n2, tenants = dying_cluster
    n1.call(do_converge, {"name": "alice", "uid": 10001, "state": "mounted"})
    n1.call(write, "alice", "home/alice/work", "written through n1")
    with pytest.raises(NodeError) as held:
        n2.call(do_mount, "alice")
    assert held.value.kind == "LeaseHeld" and held.value.holder == "n1"
    assert re.match(r"^tenant 'alice' is active on node n1 \(its lease runs until 20\d\d-", held.value.msg)
    assert not n2.call(mounted, "alice")
    n2_takes_over_from_dead_n1(n1, n2, tenants, "alice")  # n1 dies with alice mounted
    assert n2.call(read, "alice", "home/alice/work") == "written through n1"
    n2.call(do_converge, {"name": "alice", "state": "unmounted"})


def test_a_node_that_lost_its_lease_is_told_by_its_expiry_pass_and_unmounts_the_idle_jail(cluster) -> None:
    """n1's lease on erin ran out while n1 still had erin mounted (n1 was cut off) and n2
    took erin over: n1's next expiry pass reports it lost, does not take it back, and takes
    erin off n1 although it was used just now (warm launches there would not look at the
    lease): the next mount on n1 is refused naming n2, and n2 keeps erin and its lease."""
    n1, n2, tenants = cluster
    n1.call(do_converge, {"name": "erin", "uid": 10005, "state": "mounted"})
    lease_dir = tenants / "erin" / "lease"
    (lease_dir / "g1").write_text("node n1\nexpires 1\n")  # what time does to a lease nobody renews
    n2.call(do_mount, "erin")
    n2.call(write, "erin", "home/erin/work", "written through n2")
    report = n1.call(do_expire)
    assert report["leases_lost"] == ["erin"] and report["leases_renewed"] == []
    assert report["unmounted"] == ["erin"] and not n1.call(mounted, "erin")
    assert lease.holder(tenants, "erin")[0] == "n2"  # type: ignore[index]
    assert n2.call(mounted, "erin") and n2.call(read, "erin", "home/erin/work") == "written through n2"
    with pytest.raises(NodeError) as held:
        n1.call(do_mount, "erin")
    assert held.value.kind == "LeaseHeld" and held.value.holder == "n2"
    n2.call(do_converge, {"name": "erin", "state": "unmounted"})
    assert lease.holder(tenants, "erin") is None


def test_a_node_that_lost_its_lease_keeps_a_jail_with_a_live_session(cluster) -> None:
    """As above, but a session runs in erin on n1: the pass reports the lease lost and leaves
    the jail mounted (it never ends a session), and reports it again at the next pass."""
    n1, n2, tenants = cluster
    n1.call(do_converge, {"name": "erin", "uid": 10005, "state": "mounted"})
    (tenants / "erin" / "lease" / "g1").write_text("node n1\nexpires 1\n")
    n2.call(do_mount, "erin")
    with subprocess.Popen(["sleep", "600"]) as sleeper:
        try:
            record_session(n1.cfg, "erin", sleeper.pid)
            for _pass in range(2):
                report = n1.call(do_expire)
                assert report["leases_lost"] == ["erin"] and "erin" not in report["unmounted"], report
                assert n1.call(mounted, "erin")
        finally:
            sleeper.kill()
    n2.call(do_converge, {"name": "erin", "state": "unmounted"})
    n1.call(do_converge, {"name": "erin", "state": "unmounted"})
    assert lease.holder(tenants, "erin") is None  # n1 released nothing: it is not the holder


def test_the_mount_step_refuses_with_one_line_naming_the_holder(cluster) -> None:
    """What jailrun prints on a node that does not hold the tenant: the mount step's one line
    (its fast path: the plan exists and names the current image), exit 1 (jailrun: 124)."""
    n1, n2, tenants = cluster
    n1.call(do_converge, {"name": "bob", "uid": 10002, "layout": "overlay", "state": "mounted"})
    code, err = n2.call(run_helper, "bob")
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("jailyard-mount: tenant 'bob' is active on node n1 "), err
    assert not n2.call(mounted, "bob")
    # Released by the unmount on n1: the same step on n2 mounts it and takes the lease.
    n1.call(do_converge, {"name": "bob", "state": "unmounted"})
    assert n2.call(run_helper, "bob") == (0, "")
    assert n2.call(mounted, "bob") and lease.holder(tenants, "bob")[0] == "n2"  # type: ignore[index]
    n2.call(do_converge, {"name": "bob", "state": "unmounted"})


def test_expiry_renews_the_lease_of_a_mounted_jail_and_releases_it_when_it_unmounts(cluster) -> None:
    n1, n2, tenants = cluster
    n1.call(do_converge, {"name": "carol", "uid": 10003, "state": "mounted"})
    before = lease.holder(tenants, "carol")
    assert before is not None and before[0] == "n1"
    assert wait_until(lambda: int(time.time()) > before[1] - TTL)  # a renewal now is a later expiry
    first = n1.call(do_expire)  # the first pass keeps everything, and renews
    assert first["leases_renewed"] == ["carol"]
    renewed = lease.holder(tenants, "carol")
    assert renewed is not None and renewed[0] == "n1" and renewed[1] > before[1]
    second = n1.call(do_expire)  # idle since the first: unmounted, released
    assert second["unmounted"] == ["carol"] and lease.holder(tenants, "carol") is None
    n2.call(do_mount, "carol")
    assert lease.holder(tenants, "carol")[0] == "n2"  # type: ignore[index]
    n2.call(do_converge, {"name": "carol", "state": "unmounted"})


def test_a_purge_on_another_node_is_refused_while_the_tenant_runs_and_nothing_is_lost(cluster) -> None:
    """Reproduction: n2 purges frank while n1 has it mounted: refused before any step,
    naming n1; frank's files and mounts on n1 are untouched. Once n1 lets go, n2 may purge."""
    n1, n2, tenants = cluster
    n1.call(do_converge, {"name": "frank", "uid": 10006, "state": "mounted"})
    n1.call(write, "frank", "home/frank/keep", "mine")
    with pytest.raises(NodeError) as held:
        n2.call(do_converge, {"name": "frank", "state": "absent", "purge": True})
    assert "tenant 'frank' is active on node n1 " in held.value.msg, held.value.msg
    assert n1.call(mounted, "frank") and n1.call(read, "frank", "home/frank/keep") == "mine"
    assert (tenants / "frank" / "home" / "frank" / "keep").read_text() == "mine"
    n1.call(do_converge, {"name": "frank", "state": "unmounted"})
    n2.call(do_converge, {"name": "frank", "state": "absent", "purge": True})
    assert not (tenants / "frank").exists()


def test_no_cluster_conf_means_no_lease(tmp_path: Path, image_store: Path, mount_guard: None) -> None:
    """One node (no cluster.conf, or lease_ttl 0): mounting writes no lease."""
    cfg = make_config(tmp_path, image_store)
    converge(cfg, {"name": "solo", "uid": 10005, "state": "mounted"})
    assert not (cfg.tenant_dir("solo") / "lease").exists()
    (tmp_path / "cluster.conf").write_text("lease_ttl = 0\n")
    assert lease.settings_for(cfg.path) is None
    converge(cfg, {"name": "solo", "state": "unmounted"})


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("node = a b\n", r"node must be .* got 'a b'"),
        ("node = -x\n", r"node must be .* got '-x'"),
        ("lease_ttl = 1h\n", r"lease_ttl must be seconds .* got '1h'"),
        ("lease_ttl = 1\nlease_ttl = 2\n", r":2: expected 'node = NAME' or 'lease_ttl = SECONDS' once each"),
        ("ttl = 5\n", r":1: expected .* got 'ttl = 5'"),
    ],
)
def test_a_bad_cluster_conf_is_refused_naming_the_value(tmp_path: Path, text: str, error: str) -> None:
    (tmp_path / "cluster.conf").write_text(text)
    with pytest.raises(JailError, match=error):
        lease.settings_for(tmp_path / "jailyard.conf")


def test_a_cluster_conf_others_may_write_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "cluster.conf"
    conf.write_text("node = n1\nlease_ttl = 60\n")
    conf.chmod(0o666)
    with pytest.raises(JailError, match="not a regular file owned by root and writable only by root"):
        lease.settings_for(tmp_path / "jailyard.conf")


def test_an_overlay_tenant_with_a_disk_limit_follows_its_lease_to_another_node_with_its_upper_layer(dying_cluster) -> None:
    """State that follows the tenant (issue 18): an overlay tenant with limits.disk keeps its home and
    upper layer (what it installed) in its volume, one ext4 image in its directory on the shared
    storage (volume.py; OpenVZ's ploop). n1 mounts it, the tenant's home and its root get a file
    each, n1 dies; n2, once the lease has expired, attaches the same image and mounts it: both
    files are there, and the disk limit still holds there."""
    n1, n2, tenants = dying_cluster
    n1.call(do_converge, {"name": "bob", "uid": 10002, "layout": "overlay", "state": "mounted", "limits": {"disk": 16 << 20}})
    assert (tenants / "bob/volume.img").is_file(), "the tenant's data is not in a volume on the shared storage"
    n1.call(write, "bob", "home/bob/work", "written through n1")
    n1.call(write, "bob", "etc/installed", "in the upper layer")
    n2_takes_over_from_dead_n1(n1, n2, tenants, "bob")  # n1 dies with bob mounted
    assert n2.call(read, "bob", "home/bob/work") == "written through n1"
    assert n2.call(read, "bob", "etc/installed") == "in the upper layer"
    with pytest.raises(NodeError) as full:
        n2.call(write, "bob", "home/bob/big", "x" * (32 << 20))
    assert "No space left" in full.value.msg or "quota" in full.value.msg.lower(), full.value.msg
    n2.call(do_converge, {"name": "bob", "state": "unmounted"})
