"""A network of its own per tenant (issue 17): `net: private`.

Modes (the spec's `net`): none (default, `lo` only: the launcher unshares a new
namespace per session), host (the host's own namespace, allowed only with
`net_host = 1` in jailyard.conf: the tenant sees every host interface and
reaches every service bound to 127.0.0.1), private (this module).

A private tenant's network is made when its jail is mounted and removed when
it is unmounted or removed, so a launch never pays for it (the launcher only
setns()es PID 1 into it):

- a network namespace bound at <run_dir>/netns/NAME (unshare --net=PATH);
- a veth pair: `eth0` inside, `jv<hash>` on the host, a port of the bridge
  `net_bridge` with `isolated on` (tenants never reach each other at layer 2;
  everything they send goes through the host's routing and nftables);
- an IPv4 address (IPv6 too with `net_pool6`) from the pool: the bridge holds
  the pool's first address (the tenants' gateway), a tenant the static one its
  spec names or one leased while it is mounted. Leases are symlinks
  <run_dir>/net/leases/ADDR -> NAME made with one symlink(2) (atomic, like the
  uid reservations) under the tenant's lock; a static address stays reserved
  from its first mount until the jail is removed;
- its policy in the node's one nftables table `inet jailyard_BRIDGE` (base
  chains made once): a chain `t_NAME` (its egress allow-list) reached through the
  verdict map `tenants4`/`tenants6` by source address, published ports through
  the verdict map `published`; the host's own addresses (input hook) and other
  tenants (the pool) are refused to every tenant, except the resolvers
  `net_dns` names (port 53); egress leaves through NAT (masquerade) or is
  routed (`net_egress`);
- `limits.net_rate` (bits per second): a tbf qdisc on both ends of the veth.

The tenant cannot change any of it: it has no capability in a namespace owned
by the host's user namespace, so it cannot change its address, routes or
qdisc, nor send a packet with another source (no raw sockets).

Everything is done with iproute2 and nft (one `nft -f` batch: atomic) at mount
and unmount only. A set-up that fails removes what it made: nothing half made.
hashlib and subprocess are imported where used: the spec imports this module,
and the mount step's full path must not load them (tests/integration/test_kernel.py).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
from typing import Any

from .errors import JailError
from .safefs import read_text

MODES = ("none", "host", "private")
NET_LIMIT_KEYS = ("net_rate",)  # in the spec's limits; never a plan line (launcher/parse.c reads those by position)
PRIVATE_KEYS = ("mode", "address", "address6", "egress", "publish")
PROTOS = ("tcp", "udp")
_TOOL_TIMEOUT = 30
_BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


# ---- the spec's `net` -------------------------------------------------------------------------


def is_private(net: object) -> bool:
    return isinstance(net, dict) and net.get("mode") == "private"


def mode_of(net: object) -> str:
    if is_private(net):
        return "private"
    return "host" if net is True else "none"


def normalize_net(name: str, value: object) -> bool | dict[str, Any]:
    """The spec's form of a `net` option: False (none), True (host) or a dict (private).

    Accepts true/false (host/none, as before), a mode name, or a mapping with
    `mode` and, for private, `address`, `address6`, `egress`, `publish`."""
    if isinstance(value, str) and value.lower() in _BOOL_WORDS:
        value = _BOOL_WORDS[value.lower()]  # net=true on an ad-hoc command line arrives as a string
    if value is None or value is False or value == "none":
        return False
    if value is True or value == "host":
        return True
    if value == "private":
        return {"mode": "private"}
    if not isinstance(value, dict):
        raise JailError(f"invalid net {value!r} for {name}: expected none, host, private or a mapping with a mode")
    unknown = sorted(set(value) - set(PRIVATE_KEYS))
    if unknown:
        raise JailError(f"invalid net for {name}: unknown keys {unknown}; expected {', '.join(PRIVATE_KEYS)}")
    mode = value.get("mode", "private")
    if mode not in MODES:
        raise JailError(f"invalid net mode {mode!r} for {name}: expected one of {', '.join(MODES)}")
    if mode != "private":
        if len(value) > 1:
            raise JailError(f"net mode {mode} of {name} takes no settings; only private has address, egress, publish")
        return mode == "host"
    out: dict[str, Any] = {"mode": "private"}
    for key in ("address", "address6"):
        if value.get(key) is not None:
            out[key] = _address(name, key, value[key], 6 if key == "address6" else 4)
    if value.get("egress") is not None:
        if not isinstance(value["egress"], list):
            raise JailError(f"invalid net.egress {value['egress']!r} for {name}: expected a list")
        out["egress"] = [_egress(name, item) for item in value["egress"]]
    if value.get("publish") is not None:
        if not isinstance(value["publish"], list):
            raise JailError(f"invalid net.publish {value['publish']!r} for {name}: expected a list")
        out["publish"] = [_publish(name, item) for item in value["publish"]]
        seen = set()
        for item in out["publish"]:
            key = (item["proto"], item["host_port"])
            if key in seen:
                raise JailError(f"net.publish of {name} names host port {item['proto']}/{item['host_port']} twice")
            seen.add(key)
    return out


def _address(name: str, key: str, value: object, version: int) -> str:
    try:
        addr = ipaddress.ip_address(str(value))
    except ValueError:
        raise JailError(f"invalid net.{key} {value!r} for {name}: expected an IPv{version} address") from None
    if addr.version != version:
        raise JailError(f"invalid net.{key} {value!r} for {name}: expected an IPv{version} address")
    return str(addr)


def _network(what: str, value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(value), strict=True)
    except ValueError as exc:
        raise JailError(f"malformed CIDR {value!r} in {what}: {exc}") from None


def _port(what: str, value: object) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isascii() and value.isdigit())):
        raise JailError(f"invalid port {value!r} in {what}: expected 1-65535")
    port = int(value)
    if not 1 <= port <= 65535:
        raise JailError(f"invalid port {value!r} in {what}: expected 1-65535")
    return port


def _egress(name: str, item: object) -> dict[str, Any]:
    """One allow-list entry: "CIDR" or {cidr, proto (tcp|udp), port}."""
    what = f"net.egress of {name}"
    if isinstance(item, str):
        item = {"cidr": item}
    if not isinstance(item, dict) or "cidr" not in item or set(item) - {"cidr", "proto", "port"}:
        raise JailError(f"invalid entry {item!r} in {what}: expected a CIDR or {{cidr, proto, port}}")
    out: dict[str, Any] = {"cidr": str(_network(what, item["cidr"]))}
    if item.get("port") is not None:
        out["port"] = _port(what, item["port"])
        out["proto"] = item.get("proto") or "tcp"
    elif item.get("proto") is not None:
        out["proto"] = item["proto"]
    if out.get("proto") is not None and out["proto"] not in PROTOS:
        raise JailError(f"invalid proto {out['proto']!r} in {what}: expected tcp or udp")
    return out


def _publish(name: str, item: object) -> dict[str, Any]:
    """One published port: {host_port, port (default: host_port), proto (tcp|udp)}."""
    what = f"net.publish of {name}"
    if not isinstance(item, dict) or "host_port" not in item or set(item) - {"host_port", "port", "proto"}:
        raise JailError(f"invalid entry {item!r} in {what}: expected {{host_port, port, proto}}")
    proto = item.get("proto") or "tcp"
    if proto not in PROTOS:
        raise JailError(f"invalid proto {proto!r} in {what}: expected tcp or udp")
    host_port = _port(what, item["host_port"])
    return {"host_port": host_port, "port": _port(what, item.get("port") or host_port), "proto": proto}


# ---- the node's settings (jailyard.conf net_*) ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NetConf:
    bridge: str
    pool4: ipaddress.IPv4Network
    gateway4: ipaddress.IPv4Address
    pool6: ipaddress.IPv6Network | None
    gateway6: ipaddress.IPv6Address | None
    dns: tuple[str, ...]
    egress: str  # nat | route
    host_allowed: bool

    @property
    def table(self) -> str:
        """The node's one nftables table (inet family), named after its bridge: a test's own bridge gets its own."""
        return f"jailyard_{self.bridge}"

    def fingerprint(self) -> str:
        return f"{self.bridge} {self.pool4} {self.pool6} {','.join(self.dns)} {self.egress}"


def net_conf(cfg: Any) -> NetConf:
    """The net_* keys of the config, checked for what they mean (the parsers check only their characters)."""
    origin = getattr(cfg, "path", None) or "jailyard.conf"
    bridge = cfg.net_bridge
    if not 1 <= len(bridge) <= 15 or not all(c.isalnum() or c in "_-" for c in bridge):
        raise JailError(f"{origin}: net_bridge must be an interface name of 1-15 letters, digits, _ or -, got {bridge!r}")
    pool4 = _network(f"{origin} net_pool4", cfg.net_pool4)
    if pool4.version != 4 or pool4.num_addresses < 4:
        raise JailError(f"{origin}: net_pool4 must be an IPv4 CIDR of at least 4 addresses (/30), got {cfg.net_pool4!r}")
    pool6 = gateway6 = None
    if cfg.net_pool6 != "none":
        pool6 = _network(f"{origin} net_pool6", cfg.net_pool6)
        if pool6.version != 6 or pool6.prefixlen > 126:
            raise JailError(f"{origin}: net_pool6 must be an IPv6 CIDR of /126 or larger, or none, got {cfg.net_pool6!r}")
        gateway6 = pool6.network_address + 1
    dns: list[str] = []
    if cfg.net_dns != "none":
        for item in cfg.net_dns.split(","):
            try:
                dns.append(str(ipaddress.ip_address(item)))
            except ValueError:
                raise JailError(f"{origin}: net_dns must be resolver addresses separated by commas, or none, got {item!r}") from None
    if cfg.net_egress not in ("nat", "route"):
        raise JailError(f"{origin}: net_egress must be nat or route, got {cfg.net_egress!r}")
    return NetConf(bridge, pool4, pool4.network_address + 1, pool6, gateway6, tuple(dns), cfg.net_egress, bool(cfg.net_host))  # type: ignore[arg-type]


def check_net(cfg: Any, name: str, net: object, limits: dict[str, int]) -> None:
    """Whether the spec's network may be had on this node (JailError naming the bad value)."""
    rate = limits.get("net_rate", 0)
    if rate and not is_private(net):
        raise JailError(f"limits.net_rate of {name} needs net: private (the host's network and lo have no rate)")
    if net is True and not getattr(cfg, "net_host", 0):
        raise JailError(
            f"net: host for {name} is refused: {getattr(cfg, 'path', None) or 'jailyard.conf'} has net_host = 0 (the host network is shared with the tenant)"
        )
    if not is_private(net):
        return
    conf = net_conf(cfg)
    if not isinstance(net, dict):  # is_private said so; for the type checker
        return
    if "address" in net:
        addr = ipaddress.ip_address(net["address"])
        if addr not in conf.pool4 or addr in (conf.pool4.network_address, conf.gateway4, conf.pool4.broadcast_address):
            raise JailError(
                f"net.address {addr} of {name} is outside the pool {conf.pool4} (usable: {conf.gateway4 + 1}-{conf.pool4.broadcast_address - 1})"
            )
    if "address6" in net:
        addr6 = ipaddress.ip_address(net["address6"])
        if conf.pool6 is None:
            raise JailError(f"net.address6 {addr6} of {name}: the node has no IPv6 pool (net_pool6 = none)")
        if addr6 not in conf.pool6 or addr6 in (conf.pool6.network_address, conf.gateway6):
            raise JailError(f"net.address6 {addr6} of {name} is outside the pool {conf.pool6}")


def resolv_conf(cfg: Any) -> str:
    """The jail's /etc/resolv.conf (private mode): the resolvers net_dns names."""
    conf = net_conf(cfg)
    if not conf.dns:
        return "# no resolver: net_dns = none in jailyard.conf\n"
    return "".join(f"nameserver {a}\n" for a in conf.dns)


# ---- paths and names --------------------------------------------------------------------------


def netns_path(cfg: Any, name: str) -> str:
    return f"{cfg.run_dir}/netns/{name}"


def _net_dir(cfg: Any) -> str:
    return f"{cfg.run_dir}/net"


def _record_path(cfg: Any, name: str) -> str:
    return f"{cfg.run_dir}/net/{name}.json"


def _leases_dir(cfg: Any) -> str:
    return f"{cfg.run_dir}/net/leases"


def host_veth(conf: NetConf, name: str) -> str:
    """The host end of the tenant's veth: 15 characters at most, one per (bridge, tenant)."""
    import hashlib

    return "jv" + hashlib.sha256(f"{conf.bridge}/{name}".encode()).hexdigest()[:13]


def _chain(name: str) -> str:
    return f"t_{name}"


def _pub_chain(name: str) -> str:
    return f"p_{name}"


# ---- observing --------------------------------------------------------------------------------


def read_record(cfg: Any, name: str) -> dict[str, Any] | None:
    try:
        text = read_text(_record_path(cfg, name))  # posix calls: every converge asks, most tenants have none
        return None if text is None else json.loads(text)
    except (OSError, ValueError):
        return {"broken": True}


def observe(cfg: Any, name: str) -> dict[str, Any] | None:
    """What is there of the tenant's network (cheap: a stat, a sysfs lookup, its record); None if nothing."""
    from .kernel import is_mount_root

    record = read_record(cfg, name)
    path = netns_path(cfg, name)
    netns = os.path.lexists(path) and is_mount_root(path)
    veth = bool(record and record.get("veth") and os.path.exists(f"/sys/class/net/{record['veth']}"))
    if record is None and not os.path.lexists(path):
        return None
    return {"netns": netns, "veth": veth, "record": record}


def wanted_record(cfg: Any, net: dict[str, Any], limits: dict[str, int]) -> dict[str, Any]:
    """What the record of a set-up network says, but the addresses (leased ones are known only then)."""
    return {"net": net, "rate": limits.get("net_rate", 0), "conf": net_conf(cfg).fingerprint()}


def is_up(cfg: Any, name: str, net: object, limits: dict[str, int], observed: dict[str, Any] | None = None) -> bool:
    if not is_private(net):
        return True
    if observed is None:
        observed = observe(cfg, name)
    if not observed or not observed["netns"] or not observed["veth"] or not observed["record"]:
        return False
    record = observed["record"]
    if not isinstance(net, dict):
        return False
    return {k: record.get(k) for k in ("net", "rate", "conf")} == wanted_record(cfg, net, limits)


# ---- tools ------------------------------------------------------------------------------------


def _run(argv: list[str], stdin: str | None = None, ok: tuple[int, ...] = (0,)) -> str:
    import subprocess

    try:
        out = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=_TOOL_TIMEOUT, check=False)
    except FileNotFoundError:
        raise JailError(f"{argv[0]} is not installed (Debian: iproute2, nftables, util-linux)") from None
    except subprocess.TimeoutExpired:
        raise JailError(f"{' '.join(argv)} did not finish in {_TOOL_TIMEOUT} s") from None
    if out.returncode not in ok:
        detail = (out.stderr or out.stdout).strip().splitlines()
        raise JailError(f"{' '.join(argv[:3])}: {detail[0] if detail else f'exit {out.returncode}'}")
    return out.stdout


def _nft_table(table: str) -> dict[str, Any] | None:
    """The table inet jailyard_BRIDGE as `nft -j` lists it: {chains: set, maps: {name: [(key, chain)]}, rules}; None if absent."""
    import subprocess

    out = subprocess.run(["nft", "-j", "list", "table", "inet", table], capture_output=True, text=True, timeout=_TOOL_TIMEOUT, check=False)
    if out.returncode != 0:
        return None
    table: dict[str, Any] = {"chains": set(), "maps": {}, "rules": 0}
    for obj in json.loads(out.stdout).get("nftables", []):
        if "chain" in obj:
            table["chains"].add(obj["chain"]["name"])
        elif "map" in obj:
            elems = []
            for elem in obj["map"].get("elem", []):
                key, verdict = elem
                target = verdict.get("jump", {}).get("target") if isinstance(verdict, dict) else None
                elems.append((key, target))
            table["maps"][obj["map"]["name"]] = elems
        elif "rule" in obj:
            table["rules"] += 1
    return table


def _nft_key(key: Any) -> str:
    """A map key from `nft -j` back into nft syntax (an address, or proto . port)."""
    if isinstance(key, dict) and "concat" in key:
        return " . ".join(str(k) for k in key["concat"])
    return str(key)


def _base_ruleset(conf: NetConf) -> str:
    """The table's base chains (made once per node; the role makes them too)."""
    br, table = conf.bridge, conf.table
    dns4 = [a for a in conf.dns if ":" not in a]
    dns6 = [a for a in conf.dns if ":" in a]
    lines = [
        f"add table inet {table}",
        f"add map inet {table} tenants4 {{ type ipv4_addr : verdict; }}",
        f"add map inet {table} tenants6 {{ type ipv6_addr : verdict; }}",
        f"add map inet {table} published {{ type inet_proto . inet_service : verdict; }}",
        f"add chain inet {table} to_host",
        f"add chain inet {table} from_tenants",
        f"add chain inet {table} to_tenants",
        f"add chain inet {table} input {{ type filter hook input priority filter; policy accept; }}",
        f"add chain inet {table} forward {{ type filter hook forward priority filter; policy accept; }}",
        f"add chain inet {table} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}",
        f"add chain inet {table} output {{ type nat hook output priority -100; policy accept; }}",
        f"add chain inet {table} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}",
        f'add rule inet {table} input iifname "{br}" jump to_host',
        f'add rule inet {table} forward iifname "{br}" jump from_tenants',
        f'add rule inet {table} forward oifname "{br}" jump to_tenants',
        # The host's own addresses (every one reaches the input hook): replies and the resolvers only.
        f"add rule inet {table} to_host ct state established,related accept",
        f"add rule inet {table} to_host icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }} accept",
    ]
    for fam, addrs in (("ip", dns4), ("ip6", dns6)):
        for addr in addrs:
            for proto in PROTOS:
                lines.append(f"add rule inet {table} to_host {fam} daddr {addr} {proto} dport 53 accept")
                lines.append(f"add rule inet {table} from_tenants {fam} daddr {addr} {proto} dport 53 accept")
    lines += [
        f"add rule inet {table} to_host drop",
        # Routed traffic of tenants: replies, never another tenant, then each tenant's own allow-list.
        f"add rule inet {table} from_tenants ct state established,related accept",
        f"add rule inet {table} from_tenants ip daddr {conf.pool4} drop",
    ]
    if conf.pool6 is not None:
        lines.append(f"add rule inet {table} from_tenants ip6 daddr {conf.pool6} drop")
    lines += [
        f"add rule inet {table} from_tenants ip saddr vmap @tenants4",
        f"add rule inet {table} from_tenants ip6 saddr vmap @tenants6",
        f"add rule inet {table} from_tenants drop",
        # Nothing the tenants did not ask for reaches them, but published ports.
        f"add rule inet {table} to_tenants ct state established,related accept",
        f"add rule inet {table} to_tenants ct status dnat accept",
        f"add rule inet {table} to_tenants drop",
        f'add rule inet {table} prerouting iifname != "{br}" fib daddr type local meta l4proto . th dport vmap @published',
        f"add rule inet {table} output fib daddr type local meta l4proto . th dport vmap @published",
    ]
    if conf.egress == "nat":
        lines.append(f'add rule inet {table} postrouting ip saddr {conf.pool4} oifname != "{br}" masquerade')
        if conf.pool6 is not None:
            lines.append(f'add rule inet {table} postrouting ip6 saddr {conf.pool6} oifname != "{br}" masquerade')
    return "\n".join(lines) + "\n"


def ensure_base(cfg: Any) -> list[str]:
    """The bridge (with the pool's gateway address, up), forwarding, and the nftables base table; the changes made."""
    conf = net_conf(cfg)
    done = []
    br = conf.bridge
    if not os.path.exists(f"/sys/class/net/{br}"):
        _run(["ip", "link", "add", br, "type", "bridge"])
        done.append(f"add bridge {br}")
    addrs = _run(["ip", "-o", "addr", "show", "dev", br])
    cmds = []
    if f" {conf.gateway4}/{conf.pool4.prefixlen} " not in addrs:
        cmds.append(f"addr replace {conf.gateway4}/{conf.pool4.prefixlen} dev {br}")
    if conf.pool6 is not None and f" {conf.gateway6}/{conf.pool6.prefixlen} " not in addrs:
        cmds.append(f"addr replace {conf.gateway6}/{conf.pool6.prefixlen} dev {br} nodad")
    with open(f"/sys/class/net/{br}/operstate") as fh:
        up = fh.read().strip() != "down"
    if not up:
        cmds.append(f"link set {br} up")
    if cmds:
        _run(["ip", "-batch", "-"], stdin="\n".join(cmds) + "\n")
        done.append(f"configure bridge {br}: {'; '.join(cmds)}")
    for key in ["net/ipv4/ip_forward"] + (["net/ipv6/conf/all/forwarding"] if conf.pool6 else []):
        with open(f"/proc/sys/{key}") as fh:
            if fh.read().strip() != "1":
                with open(f"/proc/sys/{key}", "w") as out:
                    out.write("1\n")
                done.append(f"set {key.replace('/', '.')} = 1")
    # The base chains follow the config: made when missing, made again (one atomic batch) when the
    # net_* settings changed since. Tenants' chains go with them and their records no longer match
    # (network.is_up): the next mount or converge sets each up again; until then they are refused
    # everything (a tenant address the map lacks meets `drop`), never let through.
    marker = f"{_net_dir(cfg)}/base"
    try:
        with open(marker) as fh:
            made = fh.read()
    except FileNotFoundError:
        made = None
    exists = _nft_table(conf.table) is not None
    if not exists or made != conf.fingerprint():
        _run(["nft", "-f", "-"], stdin=(f"delete table inet {conf.table}\n" if exists else "") + _base_ruleset(conf))
        done.append(f"{'make again' if exists else 'add'} nftables table inet {conf.table}")
        os.makedirs(_net_dir(cfg), mode=0o755, exist_ok=True)
        with open(f"{marker}.tmp", "w") as fh:
            fh.write(conf.fingerprint())
        os.rename(f"{marker}.tmp", marker)
    return done


# ---- leases -----------------------------------------------------------------------------------


def lease_owner(cfg: Any, addr: str) -> str | None:
    try:
        return os.readlink(f"{_leases_dir(cfg)}/{addr}")
    except FileNotFoundError:
        return None


def _take(cfg: Any, addr: str, name: str) -> bool:
    """Reserve addr for name with one symlink(2); True if name holds it now."""
    try:
        os.symlink(name, f"{_leases_dir(cfg)}/{addr}")
        return True
    except FileExistsError:
        return lease_owner(cfg, addr) == name


def _lease(cfg: Any, conf: NetConf, name: str, net: dict[str, Any], held: str | None, pool: Any, gateway: Any, key: str) -> str:
    os.makedirs(_leases_dir(cfg), mode=0o700, exist_ok=True)
    if net.get(key):
        addr = net[key]
        if not _take(cfg, addr, name):
            raise JailError(f"net.{key} {addr} of {name} is used by tenant {lease_owner(cfg, addr)!r}")
        return addr
    if held and ipaddress.ip_address(held) in pool and lease_owner(cfg, held) == name:
        return held
    taken = set(os.listdir(_leases_dir(cfg)))
    count = 0
    for addr in pool.hosts():
        if addr == gateway:
            continue
        count += 1
        text = str(addr)
        if text not in taken and _take(cfg, text, name):
            return text
        if count > 1 << 20:
            break
    raise JailError(f"the address pool {pool} is exhausted: no free address for jail {name} ({len(taken)} leased)")


def _release(cfg: Any, addr: str | None, name: str) -> None:
    if addr and lease_owner(cfg, addr) == name:
        os.unlink(f"{_leases_dir(cfg)}/{addr}")


def leases_of(cfg: Any, name: str) -> list[str]:
    try:
        entries = os.listdir(_leases_dir(cfg))
    except FileNotFoundError:
        return []
    return sorted(a for a in entries if lease_owner(cfg, a) == name)


# ---- set up, tear down ------------------------------------------------------------------------


def _rate_args(rate: int) -> list[str]:
    # burst: 10 ms of the rate, at least 16 KiB (a few full-size packets); latency bounds the queue.
    burst = max(16384, rate // 8 // 100)
    return ["tbf", "rate", f"{rate}bit", "burst", str(burst), "latency", "50ms"]


def preflight(cfg: Any, name: str, net: dict[str, Any]) -> None:
    """Refuse, before anything changes, what set_up would fail on: a static address another tenant
    holds, a host port another tenant publishes, a pool with no free address (apply.py runs this
    before the first step of a run that sets a network up)."""
    conf = net_conf(cfg)
    for key in ("address", "address6"):
        addr = net.get(key)
        owner = lease_owner(cfg, addr) if addr else None
        if owner not in (None, name):
            raise JailError(f"net.{key} {addr} of {name} is used by tenant {owner!r}")
    if not net.get("address") and not leases_of(cfg, name):
        try:
            taken = len(os.listdir(_leases_dir(cfg)))
        except FileNotFoundError:
            taken = 0
        if taken >= conf.pool4.num_addresses - 3:  # network, gateway, broadcast
            raise JailError(f"the address pool {conf.pool4} is exhausted: no free address for jail {name} ({taken} leased)")
    if net.get("publish"):
        listed = _nft_table(conf.table) or {"maps": {}}
        for key, target in listed["maps"].get("published", []):
            for item in net["publish"]:
                if target != _pub_chain(name) and _nft_key(key) == f"{item['proto']} . {item['host_port']}":
                    raise JailError(
                        f"net.publish of {name}: host port {item['proto']}/{item['host_port']} is published by another tenant ({target})"
                    )


def set_up(cfg: Any, name: str, net: dict[str, Any], limits: dict[str, int]) -> str:
    """Make (or repair) the tenant's network; the caller holds its lock. Returns the action's text.

    All or nothing: if any part fails, what there is of the tenant's network is removed again."""
    conf = net_conf(cfg)
    old = read_record(cfg, name) or {}
    try:
        return _set_up(cfg, conf, name, net, limits, old)
    except BaseException:
        try:
            tear_down(cfg, name, release_static=not old)
        except JailError:
            pass  # the first error is the one to report; the next converge repairs
        raise


def _set_up(cfg: Any, conf: NetConf, name: str, net: dict[str, Any], limits: dict[str, int], old: dict[str, Any]) -> str:
    ensure_base(cfg)
    # Release what a changed spec no longer holds (a static address given up, a lease outside a new pool).
    addr4 = _lease(cfg, conf, name, net, old.get("address"), conf.pool4, conf.gateway4, "address")
    addr6 = None
    if conf.pool6 is not None:
        addr6 = _lease(cfg, conf, name, net, old.get("address6"), conf.pool6, conf.gateway6, "address6")
    for held in leases_of(cfg, name):
        if held not in (addr4, addr6):
            _release(cfg, held, name)
    veth = host_veth(conf, name)
    path = netns_path(cfg, name)
    from .kernel import is_mount_root

    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if not (os.path.lexists(path) and is_mount_root(path)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444)
        os.close(fd)
        _run(["unshare", f"--net={path}", "true"])
    if not os.path.exists(f"/sys/class/net/{veth}"):
        _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", path])
    _run(
        ["ip", "-batch", "-"],
        stdin=f"link set {veth} master {conf.bridge}\nlink set dev {veth} type bridge_slave isolated on learning off\nlink set {veth} up\n",
    )
    inside = [
        "link set lo up",
        "addr flush dev eth0 scope global",
        f"addr add {addr4}/32 dev eth0",
        "link set eth0 up",
        f"route replace {conf.gateway4} dev eth0 scope link",
        f"route replace default via {conf.gateway4} dev eth0 onlink",
    ]
    if addr6:
        inside += [f"addr add {addr6}/128 dev eth0 nodad", f"route replace default via {conf.gateway6} dev eth0 onlink"]
    _run(["nsenter", f"--net={path}", "ip", "-batch", "-"], stdin="\n".join(inside) + "\n")
    rate = limits.get("net_rate", 0)
    if rate:
        _run(["tc", "qdisc", "replace", "dev", veth, "root", *_rate_args(rate)])
        _run(["nsenter", f"--net={path}", "tc", "qdisc", "replace", "dev", "eth0", "root", *_rate_args(rate)])
    elif old.get("rate"):
        _run(["tc", "qdisc", "del", "dev", veth, "root"], ok=(0, 2))
        _run(["nsenter", f"--net={path}", "tc", "qdisc", "del", "dev", "eth0", "root"], ok=(0, 2))
    _nft_tenant(conf.table, name, net, addr4, addr6, add=True)
    record = {
        **wanted_record(cfg, net, limits),
        "address": addr4,
        "address6": addr6,
        "veth": veth,
        "bridge": conf.bridge,
        "table": conf.table,
    }
    _write_record(cfg, name, record)
    text = f"set up the network of {name}: {addr4}" + (f" {addr6}" if addr6 else "") + f" on {conf.bridge}"
    return text + (f", rate {rate} bit/s" if rate else "")


def _nft_tenant(table: str, name: str, net: dict[str, Any] | None, addr4: str | None, addr6: str | None, add: bool) -> None:
    """One atomic batch: the tenant's chains and map elements replaced (add) or removed."""
    listed = _nft_table(table)
    if listed is None:
        if add:
            raise JailError(f"nftables table inet {table} is missing")
        return
    chain, pub = _chain(name), _pub_chain(name)
    batch = []
    # Every map element that is this tenant's (or holds its address) goes first.
    for map_name, elems in listed["maps"].items():
        for key, target in elems:
            mine = target in (chain, pub)
            holds_addr = map_name in ("tenants4", "tenants6") and str(key) in (addr4, addr6)
            if mine or (add and holds_addr):
                batch.append(f"delete element inet {table} {map_name} {{ {_nft_key(key)} }}")
            elif add and map_name == "published" and net is not None:
                for item in net.get("publish", []):
                    if _nft_key(key) == f"{item['proto']} . {item['host_port']}":
                        raise JailError(
                            f"net.publish of {name}: host port {item['proto']}/{item['host_port']} is published by another tenant ({target})"
                        )
    for c in (chain, pub):
        if c in listed["chains"]:
            batch.append(f"flush chain inet {table} {c}")
            if not add:
                batch.append(f"delete chain inet {table} {c}")
    if add and net is not None:
        batch += [f"add chain inet {table} {chain}", f"add chain inet {table} {pub}"]
        egress = net.get("egress")
        if egress is None:
            batch.append(f"add rule inet {table} {chain} accept")  # anything but the host and other tenants
        for item in egress or []:
            fam = "ip6" if ":" in item["cidr"] else "ip"
            rule = f"{fam} daddr {item['cidr']}"
            if item.get("proto"):
                rule += f" meta l4proto {item['proto']}"
            if item.get("port"):
                rule += f" th dport {item['port']}"
            batch.append(f"add rule inet {table} {chain} {rule} accept")
        batch.append(f"add element inet {table} tenants4 {{ {addr4} : jump {chain} }}")
        if addr6:
            batch.append(f"add element inet {table} tenants6 {{ {addr6} : jump {chain} }}")
        for item in net.get("publish", []):
            batch.append(
                f"add rule inet {table} {pub} meta l4proto {item['proto']} th dport {item['host_port']} dnat ip to {addr4}:{item['port']}"
            )
            batch.append(f"add element inet {table} published {{ {item['proto']} . {item['host_port']} : jump {pub} }}")
    if batch:
        _run(["nft", "-f", "-"], stdin="\n".join(batch) + "\n")


def _write_record(cfg: Any, name: str, record: dict[str, Any]) -> None:
    os.makedirs(_net_dir(cfg), mode=0o755, exist_ok=True)
    path = _record_path(cfg, name)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(record, fh, sort_keys=True)
    os.rename(tmp, path)


def tear_down(cfg: Any, name: str, release_static: bool = True) -> bool:
    """Remove the tenant's network: rules, veth (its qdiscs go with it), namespace, leases, record.

    The caller holds the tenant's lock. A static address stays reserved unless release_static
    (the jail is removed). Returns whether anything was there."""
    from .kernel import is_mount_root, umount

    record = read_record(cfg, name) or {}
    found = bool(record)
    try:
        conf: NetConf | None = net_conf(cfg)
    except JailError:
        conf = None
    veths = {record.get("veth")} | ({host_veth(conf, name)} if conf else set())
    table = record.get("table") or (conf.table if conf else None)
    if table:
        _nft_tenant(table, name, None, record.get("address"), record.get("address6"), add=False)
    for veth in sorted(v for v in veths if v):
        if os.path.exists(f"/sys/class/net/{veth}"):
            _run(["ip", "link", "del", veth], ok=(0, 1))
            found = True
    path = netns_path(cfg, name)
    if os.path.lexists(path):
        if is_mount_root(path):
            umount(path, detach=True)
        os.unlink(path)
        found = True
    net = record.get("net") or {}
    for addr in leases_of(cfg, name):
        static = addr in (net.get("address"), net.get("address6"))
        if release_static or not static:
            _release(cfg, addr, name)
            found = True
    try:
        os.unlink(_record_path(cfg, name))
    except FileNotFoundError:
        pass
    return found


def has_leftovers(cfg: Any, name: str) -> bool:
    """Anything of the tenant's network, a kept static lease included (for a purge or a removal)."""
    return observe(cfg, name) is not None or bool(leases_of(cfg, name))
