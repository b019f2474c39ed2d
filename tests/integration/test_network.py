"""A network of its own per tenant (issue 17): `net: private`, as root, through the real launcher.

One node for the module: a busybox image, a config with a bridge and pools of
this run's own (jyt<pid>, 10.251.K.0/24; nothing another run or the host uses),
a jailrun built for that config, and a "server" network namespace the test
makes itself, its port on the same bridge (10.252.K.2): TCP 8080 (allowed),
8081 (forbidden to alice), 8082 (a bulk download) and a tiny UDP DNS
responder on 53 that answers svc.jailyard.test. Teardown removes everything
even when a test fails: tenants purged, veths, the bridge, the test's nftables
table, namespaces, mounts.

Before the fix a networked tenant shared the host's namespace: it reached a
host service on 127.0.0.1 and every other tenant, and had no DNS.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from jailtest import REPO, make_busybox_rootfs, remove_cgroups
from jailyard import network
from jailyard.config import Config
from jailyard.errors import JailError
from jailyard.lifecycle import converge

if os.geteuid() != 0:
    pytest.skip("network tests need root", allow_module_level=True)
if not all(shutil.which(t) for t in ("nft", "ip", "tc", "nsenter", "unshare", "gcc", "make")):
    pytest.skip("needs nft, iproute2, util-linux, gcc and make", allow_module_level=True)

K = os.getpid() % 200 + 20
BRIDGE = f"jyt{os.getpid()}"[:15]
POOL4 = f"10.251.{K}.0/24"
GW4 = f"10.251.{K}.1"
SRV = f"10.252.{K}.2"
DNS_NAME, DNS_ANSWER = "svc.jailyard.test", "192.0.2.77"
BULK = 5_000_000
CGROUP_NAME = f"jailyard-test-net-{os.getpid()}"
IMAGE_ID = "0123456789abcdef"

SERVER = r"""
import socket, struct, sys, threading
def serve_tcp(port, payload):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", port)); s.listen(64)
    def loop():
        while True:
            c, _a = s.accept()
            try:
                c.sendall(payload)
            except OSError:
                pass
            c.close()
    threading.Thread(target=loop, daemon=True).start()
def serve_dns(name, answer):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 53))
    def loop():
        while True:
            q, peer = s.recvfrom(512)
            i, labels = 12, []
            while q[i]:
                labels.append(q[i + 1:i + 1 + q[i]].decode()); i += 1 + q[i]
            qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
            question = q[12:i + 5]
            hit = ".".join(labels).lower() == name and qtype == 1
            head = q[:2] + struct.pack("!HHHHH", 0x8180 if hit else 0x8183, 1, 1 if hit else 0, 0, 0)
            rr = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(answer) if hit else b""
            s.sendto(head + question + rr, peer)
    threading.Thread(target=loop, daemon=True).start()
args = sys.argv[1:]
for spec in args:
    kind, _, rest = spec.partition("=")
    if kind == "tcp":
        port, _, text = rest.partition(":"); serve_tcp(int(port), text.encode() + b"\n")
    elif kind == "bulk":
        port, _, size = rest.partition(":"); serve_tcp(int(port), b"x" * int(size))
    elif kind == "dns":
        serve_dns(*rest.split(":"))
print("ready", flush=True)
sys.stdin.read()
"""


def sh(*argv: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60, check=check)


class Node:
    def __init__(self, base: Path, cfg: Config, jailrun: str) -> None:
        self.base, self.cfg, self.jailrun = base, cfg, jailrun
        self.procs: list[subprocess.Popen] = []

    def run(self, name: str, script: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.jailrun, name, "--", "sh", "-c", script], capture_output=True, text=True, timeout=timeout, env={"PATH": "/usr/bin:/bin"}
        )

    def serve(self, netns: str, *specs: str) -> None:
        """A server in a network namespace (the test's or a tenant's), stopped at teardown."""
        script = self.base / "server.py"
        script.write_text(SERVER)
        proc = subprocess.Popen(
            ["nsenter", f"--net={netns}", sys.executable, str(script), *specs], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.procs.append(proc)
        assert proc.stdout.readline().strip() == "ready"

    def address(self, name: str) -> str:
        return network.read_record(self.cfg, name)["address"]


def _links_on(bridge: str) -> list[str]:
    out = sh("ip", "-o", "link", "show", "master", bridge, check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def _ns_mounts(base: Path) -> list[str]:
    with open("/proc/self/mountinfo") as fh:
        return [line.split()[4] for line in fh if line.split()[4].startswith(f"{base}/")]


@pytest.fixture(scope="module")
def node():
    base = Path(tempfile.mkdtemp(prefix="jailyard-net-", dir="/tmp"))
    base.chmod(0o755)
    srv_ns = base / "srvns"
    try:
        images = base / "images"
        make_busybox_rootfs(images / IMAGE_ID / "rootfs")
        (images / IMAGE_ID / "rootfs/etc/resolv.conf").write_text("nameserver 127.0.0.1\n")
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
            net_bridge=BRIDGE,
            net_pool4=POOL4,
            net_dns=SRV,
        )
        conf = base / "jailyard.conf"
        conf.write_text(cfg.render())
        cfg = Config(**{**cfg.__dict__, "path": conf})
        build = base / "build"
        sh(
            "make",
            "-s",
            "-C",
            str(REPO / "launcher"),
            f"BUILD={build}",
            f"CONFIG={conf}",
            f"AUDIT_LOG={base}/log/launch.log",
            f"{build}/jailrun",
        )
        jailrun = build / "jailrun"
        jailrun.chmod(0o4755)
        # The bridge, the base table and the test's server namespace on the bridge.
        network.ensure_base(cfg)
        srv_ns.touch()
        sh("unshare", f"--net={srv_ns}", "true")
        port = f"jys{os.getpid()}"[:15]
        sh("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", str(srv_ns))
        sh(
            "ip",
            "-batch",
            "-",
            stdin=f"link set {port} master {BRIDGE}\nlink set dev {port} type bridge_slave isolated on\nlink set {port} up\n",
        )
        sh("ip", "route", "add", f"10.252.{K}.0/24", "dev", BRIDGE)
        inside = f"link set lo up\naddr add {SRV}/24 dev eth0\nlink set eth0 up\nroute add default via {GW4} dev eth0 onlink\n"
        sh("nsenter", f"--net={srv_ns}", "ip", "-batch", "-", stdin=inside)
        n = Node(base, cfg, str(jailrun))
        n.serve(str(srv_ns), "tcp=8080:ok-8080", "tcp=8081:ok-8081", f"bulk=8082:{BULK}", f"dns={DNS_NAME}:{DNS_ANSWER}")
        tenants = {
            "alice": {"uid": 47201, "net": {"mode": "private", "egress": [{"cidr": f"{SRV}/32", "proto": "tcp", "port": 8080}]}},
            "bob": {"uid": 47202, "net": "private"},
            "dave": {"uid": 47204, "net": "private", "limits": {"net_rate": 10_000_000}},
        }
        for name, item in tenants.items():
            converge(cfg, {"name": name, "state": "mounted", **item})
        yield n
    finally:
        for proc in locals().get("n", Node(base, None, "")).procs:  # type: ignore[arg-type]
            proc.kill()
            proc.wait()
        if "cfg" in locals() and getattr(cfg, "path", None):
            for name in ("alice", "bob", "carol", "dave", "erin", "frank"):
                try:
                    converge(cfg, {"name": name, "state": "absent", "purge": True, "force": True})
                except JailError:
                    pass
        for link in _links_on(BRIDGE):
            sh("ip", "link", "del", link, check=False)
        sh("ip", "link", "del", BRIDGE, check=False)
        sh("nft", "delete", "table", "inet", f"jailyard_{BRIDGE}", check=False)
        for target in reversed(_ns_mounts(base)):
            subprocess.run(["umount", "-l", target], check=False)
        remove_cgroups(CGROUP_NAME)
        if not _ns_mounts(base):
            shutil.rmtree(base, ignore_errors=True)


class HostListener:
    """A TCP listener of the host's own, counting connections."""

    def __init__(self, addr: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop:
            try:
                conn, _peer = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.sendall(b"host\n")
            conn.close()

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.sock.close()


def test_private_tenant_reaches_the_allowed_server_and_nothing_else(node: Node) -> None:
    """alice (egress: the server's TCP 8080 only) reaches it; not 8081, not bob, not the host on 127.0.0.1 or the bridge."""
    ok = node.run("alice", f"nc -w 3 {SRV} 8080 </dev/null")
    assert ok.stdout.strip() == "ok-8080", ok.stderr
    local, bridge = HostListener("127.0.0.1"), HostListener(GW4)
    bob = node.address("bob")
    node.serve(network.netns_path(node.cfg, "bob"), "tcp=9000:bob")
    try:
        # The negatives are not vacuous: bob's listener and the forbidden port are there.
        with socket.create_connection((bob, 9000), timeout=5) as s:
            assert s.recv(16) == b"bob\n"
        assert node.run("bob", f"nc -w 3 {SRV} 8081 </dev/null").stdout.strip() == "ok-8081"
        probes = {
            "forbidden port": f"{SRV} 8081",
            "another tenant": f"{bob} 9000",
            "host on 127.0.0.1": f"127.0.0.1 {local.port}",
            "host on the bridge": f"{GW4} {bridge.port}",
        }
        for what, target in probes.items():
            out = node.run("alice", f"nc -w 2 {target} </dev/null; echo rc=$?")
            assert "ok-" not in out.stdout and "bob" not in out.stdout and "host" not in out.stdout, f"alice reached {what}: {out.stdout}"
        # bob (egress: anything) is kept from the host and alice all the same.
        out = node.run("bob", f"nc -w 2 {GW4} {bridge.port} </dev/null; nc -w 2 {node.address('alice')} 22 </dev/null; echo done")
        assert "host" not in out.stdout
        assert local.accepted == 0 and bridge.accepted == 0
    finally:
        local.close()
        bridge.close()


def test_rate_limit_10_mbit(node: Node) -> None:
    """dave has limits.net_rate 10,000,000 bit/s: a 5 MB download takes 4 s within 15% (timed inside the jail)."""
    script = f"read a x </proc/uptime; n=$(nc -w 10 {SRV} 8082 </dev/null | wc -c); read b x </proc/uptime; echo $n $a $b"
    out = node.run("dave", script, timeout=120)
    size, start, end = out.stdout.split()
    assert int(size) == BULK, out.stderr
    seconds = float(end) - float(start)
    rate = int(size) * 8 / seconds
    print(f"net_rate 10,000,000 bit/s: measured {rate / 1e6:.2f} Mbit/s over {seconds:.2f} s")
    assert 0.85 * 10_000_000 <= rate <= 1.15 * 10_000_000, f"{rate / 1e6:.2f} Mbit/s over {seconds:.2f} s"
    # Unlimited, bob is far faster: the limit is dave's own.
    out = node.run("bob", script, timeout=120)
    size, start, end = out.stdout.split()
    assert int(size) == BULK and int(size) * 8 / max(float(end) - float(start), 0.01) > 20_000_000


def test_jail_facts_show_the_tenants_address(node: Node) -> None:
    from jailyard.lifecycle import jail_facts

    (fact,) = jail_facts(node.cfg, "alice")
    assert fact["net"]["mode"] == "private" and fact["net_address"] == node.address("alice")


def test_dns_resolves_through_the_configured_resolver(node: Node) -> None:
    """resolv.conf inside names net_dns; the test's responder answers (alice's egress does not list it: DNS is allowed apart)."""
    out = node.run("alice", f"cat /etc/resolv.conf; nslookup {DNS_NAME}")
    assert f"nameserver {SRV}" in out.stdout
    assert DNS_ANSWER in out.stdout, out.stdout + out.stderr


def _net_state(node: Node) -> dict:
    table = network._nft_table(f"jailyard_{BRIDGE}")
    links = sorted(_links_on(BRIDGE))
    # Only this test's bridge ports: other runs on the host add and remove qdiscs of their own meanwhile.
    qdiscs = "".join(sh("tc", "qdisc", "show", "dev", link).stdout for link in links)
    return {
        "links": links,
        "chains": sorted(c for c in table["chains"] if c.startswith(("t_", "p_"))),
        "elements": sorted(str(e) for elems in table["maps"].values() for e in elems),
        "rules": table["rules"],
        "tbf": qdiscs.count("qdisc tbf"),
        "leases": sorted(os.listdir(node.cfg.run_dir / "net" / "leases")),
        "netns": sorted(os.listdir(node.cfg.run_dir / "netns")),
    }


def test_a_thousand_launches_then_purge_leave_nothing(node: Node) -> None:
    """Launches never add to the network (one per tenant, made at mount); a purge removes all of it."""
    converge(node.cfg, {"name": "erin", "uid": 47205, "state": "mounted", "net": "private", "limits": {"net_rate": 50_000_000}})
    before = _net_state(node)
    assert len(before["links"]) == 5  # the server's port and 4 tenants
    for i in range(1000):
        r = subprocess.run([node.jailrun, "erin", "--", "true"], capture_output=True, timeout=60)
        assert r.returncode == 0, (i, r.stderr)
    assert _net_state(node) == before
    converge(node.cfg, {"name": "erin", "state": "absent", "purge": True})
    after = _net_state(node)
    assert len(after["links"]) == 4 and "erin" not in after["netns"]
    assert after["rules"] < before["rules"] and len(after["chains"]) == len(before["chains"]) - 2
    assert after["tbf"] == before["tbf"] - 1 or after["tbf"] == before["tbf"] - 2  # erin's qdiscs went with its veth
    assert len(after["leases"]) == len(before["leases"]) - 1


def test_unmount_returns_the_lease_and_mount_repairs_a_half_made_network(node: Node) -> None:
    converge(node.cfg, {"name": "frank", "uid": 47206, "state": "mounted", "net": "private"})
    record = network.read_record(node.cfg, "frank")
    want = {"name": "frank", "uid": 47206, "state": "mounted", "net": "private"}
    # Half made: the veth is gone. A converge repairs it (check mode says so first), as it does mounts.
    sh("ip", "link", "del", record["veth"])
    assert converge(node.cfg, want, check=True).actions == ["set up the network of frank"]
    assert converge(node.cfg, want).changed and os.path.exists(f"/sys/class/net/{record['veth']}")
    assert node.run("frank", f"nc -w 3 {SRV} 8080 </dev/null").stdout.strip() == "ok-8080"
    # The namespace is gone: the launcher finds the jail not ready and its mount step makes it again.
    subprocess.run(["umount", "-l", network.netns_path(node.cfg, "frank")], check=True)
    assert node.run("frank", f"nc -w 3 {SRV} 8080 </dev/null").stdout.strip() == "ok-8080"
    again = converge(node.cfg, want)
    assert not again.changed, again.actions
    converge(node.cfg, {"name": "frank", "state": "unmounted"})
    assert network.leases_of(node.cfg, "frank") == [] and network.read_record(node.cfg, "frank") is None
    assert not os.path.exists(f"/sys/class/net/{record['veth']}")
    converge(node.cfg, {"name": "frank", "state": "absent", "purge": True})


def test_bad_input_one_clear_error_nothing_half_made(node: Node) -> None:
    cfg = node.cfg
    alice = node.address("alice")
    with pytest.raises(JailError, match=r"net.address 10.9.9.9 of carol is outside the pool"):
        converge(cfg, {"name": "carol", "uid": 47203, "net": {"mode": "private", "address": "10.9.9.9"}})
    with pytest.raises(JailError, match=r"malformed CIDR '10.0.0.1/8' in net.egress of carol"):
        converge(cfg, {"name": "carol", "uid": 47203, "net": {"mode": "private", "egress": ["10.0.0.1/8"]}})
    assert not (cfg.tenants_dir / "carol").exists()
    before = _net_state(node)
    with pytest.raises(JailError, match=rf"net.address {alice} of carol is used by tenant 'alice'"):
        converge(cfg, {"name": "carol", "uid": 47203, "net": {"mode": "private", "address": alice}})
    assert _net_state(node) == before and network.observe(cfg, "carol") is None
    converge(cfg, {"name": "carol", "state": "absent", "purge": True})


def test_exhausted_pool(node: Node, tmp_path: Path) -> None:
    """A /30 pool has one tenant address: the second private jail gets one clear error and nothing of a network."""
    bridge = f"jyu{os.getpid()}"[:15]
    cfg = Config(**{**node.cfg.__dict__, "net_bridge": bridge, "net_pool4": f"10.253.{K}.0/30", "run_dir": tmp_path / "run"})
    (tmp_path / "run").mkdir()
    try:
        converge(cfg, {"name": "pool1", "uid": 47211, "state": "mounted", "net": "private"})
        with pytest.raises(JailError, match=rf"the address pool 10.253.{K}.0/30 is exhausted: no free address for jail pool2"):
            converge(cfg, {"name": "pool2", "uid": 47212, "state": "mounted", "net": "private"})
        assert network.observe(cfg, "pool2") is None and network.leases_of(cfg, "pool2") == []
        assert len(_links_on(bridge)) == 1
    finally:
        for name in ("pool1", "pool2"):
            try:
                converge(cfg, {"name": name, "state": "absent", "purge": True, "force": True})
            except JailError:
                pass
        for link in _links_on(bridge):
            sh("ip", "link", "del", link, check=False)
        sh("ip", "link", "del", bridge, check=False)
        sh("nft", "delete", "table", "inet", f"jailyard_{bridge}", check=False)


def test_base_set_up_twice_changes_nothing(node: Node) -> None:
    """What the role's task runs (network.ensure_base): the second run reports no change (changed=0)."""
    assert network.ensure_base(node.cfg) == []
    table = network._nft_table(f"jailyard_{BRIDGE}")
    assert {"input", "forward", "prerouting", "postrouting", "to_host", "from_tenants", "to_tenants"} <= table["chains"]


def test_published_port_reaches_the_tenant_from_the_host_only(node: Node) -> None:
    """bob publishes host port 18000+K to its port 9001: the host reaches it at the bridge address; alice does not."""
    host_port = 18000 + K
    net = {"mode": "private", "publish": [{"host_port": host_port, "port": 9001}]}
    converge(node.cfg, {"name": "bob", "uid": 47202, "state": "mounted", "net": net})
    node.serve(network.netns_path(node.cfg, "bob"), "tcp=9001:bob-published")
    with socket.create_connection((GW4, host_port), timeout=5) as s:
        assert s.recv(32) == b"bob-published\n"
    out = node.run("alice", f"nc -w 2 {GW4} {host_port} </dev/null; echo rc=$?")
    assert "bob-published" not in out.stdout
    dave = network.read_record(node.cfg, "dave")
    spec = (node.cfg.tenants_dir / "dave" / "tenant.json").read_text()
    with pytest.raises(JailError, match=rf"host port tcp/{host_port} is published by another tenant"):
        converge(
            node.cfg, {"name": "dave", "uid": 47204, "state": "mounted", "net": {"mode": "private", "publish": [{"host_port": host_port}]}}
        )
    # Refused before anything changed: dave keeps its spec and its network as they were.
    assert (node.cfg.tenants_dir / "dave" / "tenant.json").read_text() == spec
    assert network.read_record(node.cfg, "dave") == dave
    converge(node.cfg, {"name": "bob", "uid": 47202, "state": "mounted", "net": "private"})


def test_ipv6_address_from_the_pool_where_configured(node: Node, tmp_path: Path) -> None:
    """With net_pool6 a private tenant gets an IPv6 address of it too (in its map, on its eth0); removed at unmount."""
    bridge = f"jyv{os.getpid()}"[:15]
    pool6 = f"fd00:17:{K}::/64"
    cfg = Config(
        **{**node.cfg.__dict__, "net_bridge": bridge, "net_pool4": f"10.253.{K}.0/29", "net_pool6": pool6, "run_dir": tmp_path / "run"}
    )
    (tmp_path / "run").mkdir()
    try:
        converge(cfg, {"name": "six", "uid": 47221, "state": "mounted", "net": {"mode": "private", "address6": f"fd00:17:{K}::77"}})
        record = network.read_record(cfg, "six")
        assert record["address6"] == f"fd00:17:{K}::77"
        inside = sh("nsenter", f"--net={network.netns_path(cfg, 'six')}", "ip", "-6", "addr", "show", "dev", "eth0").stdout
        assert f"fd00:17:{K}::77/128" in inside
        table = network._nft_table(f"jailyard_{bridge}")
        assert [t for _k, t in table["maps"]["tenants6"]] == ["t_six"]
        converge(cfg, {"name": "six", "state": "unmounted"})
        assert network._nft_table(f"jailyard_{bridge}")["maps"]["tenants6"] == []
    finally:
        try:
            converge(cfg, {"name": "six", "state": "absent", "purge": True, "force": True})
        except JailError:
            pass
        for link in _links_on(bridge):
            sh("ip", "link", "del", link, check=False)
        sh("ip", "link", "del", bridge, check=False)
        sh("nft", "delete", "table", "inet", f"jailyard_{bridge}", check=False)


def test_jailrun_net_is_refused_for_a_private_plan(node: Node) -> None:
    """`jailrun --net` asks for the host's network: a private tenant never gets it (exit 120, usage)."""
    r = subprocess.run([node.jailrun, "--net", "alice", "--", "true"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 120 and "has no host network" in r.stderr


def _own_node_cfg(node: Node, tmp_path: Path, bridge: str, pool4: str) -> Config:
    """A config of the test's own (dirs under tmp_path, its own bridge and pool), the node's image."""
    for d in ("tenants", "jails", "run"):
        (tmp_path / d).mkdir()
    return Config(
        **{
            **node.cfg.__dict__,
            "tenants_dir": tmp_path / "tenants",
            "jails_dir": tmp_path / "jails",
            "run_dir": tmp_path / "run",
            "net_bridge": bridge,
            "net_pool4": pool4,
        }
    )


def _remove_bridge(bridge: str) -> None:
    for link in _links_on(bridge):
        sh("ip", "link", "del", link, check=False)
    sh("ip", "link", "del", bridge, check=False)
    sh("nft", "delete", "table", "inet", f"jailyard_{bridge}", check=False)


def test_expiry_takes_the_network_with_the_mounts(node: Node, tmp_path: Path) -> None:
    """An idle private jail unmounted by expiry leaves no namespace, veth, rule or lease behind."""
    from jailyard.expiry import expire_pass

    bridge = f"jyx{os.getpid()}"[:15]
    cfg = _own_node_cfg(node, tmp_path, bridge, f"10.253.{K}.16/29")
    try:
        converge(cfg, {"name": "idle", "uid": 47231, "state": "mounted", "net": "private"})
        veth = network.read_record(cfg, "idle")["veth"]
        expire_pass(cfg, log=False)
        assert expire_pass(cfg, log=False).unmounted == ["idle"]
        assert network.observe(cfg, "idle") is None and network.leases_of(cfg, "idle") == []
        assert not os.path.exists(f"/sys/class/net/{veth}")
        assert not any(c.startswith("t_") for c in network._nft_table(f"jailyard_{bridge}")["chains"])
    finally:
        try:
            converge(cfg, {"name": "idle", "state": "absent", "purge": True, "force": True})
        except JailError:
            pass
        _remove_bridge(bridge)


def test_concurrent_converges_never_hand_out_one_address(node: Node, tmp_path: Path) -> None:
    """Five private jails mounted by five threads at once from a pool of five addresses: five different ones."""
    from concurrent.futures import ThreadPoolExecutor

    bridge = f"jyc{os.getpid()}"[:15]
    cfg = _own_node_cfg(node, tmp_path, bridge, f"10.253.{K}.32/29")  # .33 the gateway, .34-.38 the tenants
    names = [f"c{i}" for i in range(5)]
    try:
        network.ensure_base(cfg)
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(lambda i: converge(cfg, {"name": names[i], "uid": 47240 + i, "state": "mounted", "net": "private"}), range(5)))
        addresses = [network.read_record(cfg, n)["address"] for n in names]
        assert len(set(addresses)) == 5 and sorted(os.listdir(cfg.run_dir / "net" / "leases")) == sorted(addresses)
    finally:
        for n in names:
            try:
                converge(cfg, {"name": n, "state": "absent", "purge": True, "force": True})
            except JailError:
                pass
        _remove_bridge(bridge)
