"""Tenant leases: a tenant is active on one node of a cluster at a time (docs/cluster.md).

Off unless the node has a cluster config (`cluster.conf` beside jailyard.conf,
`lease_ttl` above 0): one node needs no lease. The lease lives on the shared
tenant storage, in the tenant's own directory: `<tenants_dir>/<name>/lease/`
holds generation files `g<k>` (k = 1, 2, ...), each `node <holder>` and
`expires <epoch seconds>` lines (0: released). The holder is the node named by
the highest generation while it has not expired.

Only operations that are atomic on NFS decide who holds it (never flock, which
NFS servers lose on a crash and clients emulate): a node takes the lease by
link(2)ing a file it wrote under a fresh name to `g<k+1>` (EEXIST: someone else
won that generation), after it saw `g<k>` expired or released; renewals and
the release rewrite the holder's own `g<k>` by rename. A winner then lists the
directory once more and backs off if a higher generation exists (it re-created
a generation a later winner had already removed), and removes generations
below k-1, lowest first, so that a re-created generation always finds its
predecessor gone. Clocks: expiry is wall-clock time, so nodes must keep time
(NTP); the TTL should be minutes, far above any skew.

Light: the launcher's mount step imports this on every cold launch in a
cluster (posix and time only, as bin/jailyard_mount.py requires).
"""

from __future__ import annotations

import posix
import time

from .conffile import read_config
from .errors import JailError

CLUSTER_CONF = "cluster.conf"
LEASE_DIR = "lease"
_NODE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_")
NODE_MAX = 64
TTL_MAX = 86400 * 7
_TRIES = 20  # generations a taker walks before it gives up (each lost race is one)


class LeaseHeld(JailError):
    """Another node holds the tenant's lease."""

    def __init__(self, name: str, holder: str, expires: int) -> None:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
        super().__init__(f"tenant {name!r} is active on node {holder} (its lease runs until {when}); launch it there, or wait")
        self.holder, self.expires = holder, expires


class Settings:
    """This node's name and the lease TTL in seconds (0: leases off)."""

    def __init__(self, node: str, ttl: int) -> None:
        self.node, self.ttl = node, ttl

    def __repr__(self) -> str:
        return f"Settings(node={self.node!r}, ttl={self.ttl})"


def valid_node(node: str) -> bool:
    return 0 < len(node) <= NODE_MAX and _NODE_CHARS.issuperset(node) and node[0] not in ".-"


def parse_settings(data: bytes, origin: str) -> Settings:
    """`node = NAME` (default: the host name) and `lease_ttl = SECONDS` (default 0: off)."""
    values: dict[str, str] = {}
    for lineno, raw in enumerate(data.decode("ascii", "replace").split("\n"), 1):
        line = raw.strip(" \t")
        if not line or line.startswith("#"):
            continue
        key, sep, value = (part.strip(" \t") for part in line.partition("="))
        if not sep or key not in ("node", "lease_ttl") or not value or key in values:
            raise JailError(f"{origin}:{lineno}: expected 'node = NAME' or 'lease_ttl = SECONDS' once each, got {line[:100]!r}")
        values[key] = value
    node = values.get("node", posix.uname().nodename)
    if not valid_node(node):
        raise JailError(f"{origin}: node must be 1-{NODE_MAX} of [A-Za-z0-9._-] not starting with '.' or '-', got {node[:100]!r}")
    ttl = values.get("lease_ttl", "0")
    if not (ttl.isascii() and ttl.isdigit() and int(ttl) <= TTL_MAX):
        raise JailError(f"{origin}: lease_ttl must be seconds from 0 to {TTL_MAX}, got {ttl[:100]!r}")
    return Settings(node, int(ttl))


def settings_for(config_path: object) -> Settings | None:
    """The lease settings beside the node config at config_path; None when leases are off."""
    if config_path is None:
        return None
    path = f"{str(config_path).rsplit('/', 1)[0] or '/'}/{CLUSTER_CONF}"
    try:
        posix.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise JailError(f"cannot read {path}: {exc.strerror}") from None
    settings = parse_settings(read_config(path), path)  # the launcher's trust checks: root's, not a symlink
    return settings if settings.ttl > 0 else None


def _dir(tenants_dir: object, name: str) -> str:
    return f"{tenants_dir}/{name}/{LEASE_DIR}"


def _generations(lease_dir: str) -> list[int]:
    try:
        names = posix.listdir(lease_dir)
    except FileNotFoundError:
        return []
    return sorted(int(n[1:]) for n in names if n[:1] == "g" and n[1:].isascii() and n[1:].isdigit())


def _read(lease_dir: str, gen: int) -> tuple[str, int] | None:
    """(holder, expires) of generation gen, or None if it is gone."""
    try:
        fd = posix.open(f"{lease_dir}/g{gen}", posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        data = posix.read(fd, 4096).decode("ascii", "replace")
    finally:
        posix.close(fd)
    fields = dict(line.partition(" ")[::2] for line in data.split("\n") if line)
    expires = fields.get("expires", "0")
    return fields.get("node", "?"), int(expires) if expires.isdigit() else 0


def _write_temp(lease_dir: str, node: str, expires: int) -> str:
    """A lease file under a name no other writer uses, on the disk (fsync) before it is published."""
    tmp = f"{lease_dir}/.{node}.{posix.getpid()}.{time.monotonic_ns()}"
    fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_NOFOLLOW | posix.O_CLOEXEC, 0o644)
    try:
        posix.write(fd, f"node {node}\nexpires {expires}\n".encode())
        posix.fsync(fd)
    finally:
        posix.close(fd)
    return tmp


def holder(tenants_dir: object, name: str, now: float | None = None) -> tuple[str, int] | None:
    """(node, expires) of the live lease on tenant name, or None when nobody holds it."""
    lease_dir = _dir(tenants_dir, name)
    gens = _generations(lease_dir)
    found = _read(lease_dir, gens[-1]) if gens else None
    if found is None or found[1] <= (time.time() if now is None else now):
        return None
    return found


def acquire(tenants_dir: object, name: str, settings: Settings) -> int:
    """Take or renew the lease of tenant name for this node; the generation held.
    LeaseHeld when another node holds it and it has not expired."""
    lease_dir = _dir(tenants_dir, name)
    try:
        posix.mkdir(lease_dir, 0o755)
    except FileExistsError:
        pass
    except FileNotFoundError:
        raise JailError(f"tenant {name!r} has no directory under {tenants_dir}") from None
    for _attempt in range(_TRIES):
        gens = _generations(lease_dir)
        top = gens[-1] if gens else 0
        found = _read(lease_dir, top) if top else None
        if top and found is None:
            continue  # removed between the listing and the read: list again
        now = time.time()
        if found is not None and found[0] == settings.node:
            if renew(tenants_dir, name, settings, top):
                return top
            continue  # taken over between the read and the rewrite: see by whom
        if found is not None and found[1] > now:
            raise LeaseHeld(name, found[0], found[1])
        tmp = _write_temp(lease_dir, settings.node, int(now) + settings.ttl)
        try:
            posix.link(tmp, f"{lease_dir}/g{top + 1}")
        except FileExistsError:
            continue  # another node won this generation: see who
        finally:
            posix.unlink(tmp)
        if _generations(lease_dir)[-1] != top + 1:
            # A later winner had removed g<top+1> already: this was a stale view. Undo, look again.
            posix.unlink(f"{lease_dir}/g{top + 1}")
            continue
        for gen in gens:
            if gen < top:  # keep the one taken over: the next taker's link must not find a gap
                try:
                    posix.unlink(f"{lease_dir}/g{gen}")
                except FileNotFoundError:
                    pass
        return top + 1
    raise JailError(f"tenant {name!r}: lost the race for its lease {_TRIES} times in a row; run again")


def renew(tenants_dir: object, name: str, settings: Settings, gen: int | None = None) -> bool:
    """Push this node's lease on tenant name TTL seconds ahead; False (and nothing
    written) when this node does not hold it (never held, released, or taken over)."""
    return _rewrite(tenants_dir, name, settings, int(time.time()) + settings.ttl, gen)


def release(tenants_dir: object, name: str, settings: Settings) -> bool:
    """End this node's lease on tenant name (expires 0); False when it did not hold it."""
    return _rewrite(tenants_dir, name, settings, 0, None)


def _rewrite(tenants_dir: object, name: str, settings: Settings, expires: int, gen: int | None) -> bool:
    lease_dir = _dir(tenants_dir, name)
    gens = _generations(lease_dir)
    if not gens or (gen is not None and gens[-1] != gen):
        return False
    top = gens[-1]
    found = _read(lease_dir, top)
    if found is None or found[0] != settings.node or (found[1] == 0 and expires != 0 and gen is None):
        return False
    tmp = _write_temp(lease_dir, settings.node, expires)
    try:
        posix.rename(tmp, f"{lease_dir}/g{top}")
    except BaseException:
        posix.unlink(tmp)
        raise
    # Taken over meanwhile (this node's lease had run out): the higher generation holds it.
    return _generations(lease_dir)[-1] == top
