"""MountPlan: the plan file the launcher and the mount step read (TenantSpec.mount_plan makes one).

Imported by the launcher's mount step on every cold launch: no imports beyond
errors and record, and none of spec.py (which imports this one).
"""

from __future__ import annotations

from .errors import JailError
from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

PLAN_VERSION = 1
LIMIT_KEYS = ("cpu", "mem", "procs", "fsize", "nofile", "wall")
# Resource guarantees (issue 16): optional `limit KEY N` lines after the six above, written only
# when set (a plan without them is byte for byte what it was). disk: bytes of the tenant's
# project quota; inodes: files of it; cpu_weight: 1-10000 (cgroup v2 cpu.weight, v1 cpu.shares
# = weight * 1024 / 100); cpu_rate: milli-CPUs (spec: CPUs); io_weight: 1-10000; memsw: bytes
# of memory plus swap.
RESOURCE_KEYS = ("disk", "inodes", "cpu_weight", "cpu_rate", "io_weight", "memsw")

# Tenant names: the one pattern of the modules, the CLI, the mount step and the C
# launcher. Checked by hand, as the launcher does: `re` would cost the mount step
# an import, and `$` in a regex also matches before a trailing newline.
NAME_PATTERN = "^[a-z_][a-z0-9_-]{0,31}$"
_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz_")
_NAME_REST = _NAME_FIRST | frozenset("0123456789-")


def is_valid_name(name: object) -> bool:
    return isinstance(name, str) and 0 < len(name) <= 32 and name[0] in _NAME_FIRST and _NAME_REST.issuperset(name)


class MountEntry(Record):
    _fields = (
        "target",  # str: absolute path inside the jail root
        "fstype",  # str: "bind" or "overlay"
        "source",  # str: host path; for overlay "lower:upper:work"
        "options",  # tuple[str, ...]: subset of ro, nosuid, nodev, noexec
    )
    __slots__ = _fields
    target: str
    fstype: str
    source: str
    options: tuple[str, ...]

    def render(self) -> str:
        return f"mount {self.target} {self.fstype} {self.source} {','.join(self.options)}"


class MountPlan(Record):
    _fields = ("name", "uid", "gid", "hostname", "home", "root", "image", "net", "limits", "mounts", "admin", "volume", "program", "env")
    __slots__ = _fields
    name: str
    uid: int
    gid: int
    hostname: str
    home: str
    root: str  # the jail root on the host
    image: str
    net: bool | str  # False: none, True: host, "private": the tenant's own namespace (issue 17)
    limits: dict[str, int]
    mounts: tuple[MountEntry, ...]
    admin: int  # tenant root (docs/design.md, "Tenant root"): the first host id of its range; 0 for a plain tenant
    # A volume-backed tenant (volume.py): "IMAGE MOUNTPOINT" of its filesystem image, mounted by the
    # mount step before the mounts (which bind from below MOUNTPOINT); "" for the others.
    volume: str

    # Issue 15, the default program (`jailrun NAME` with no PROGRAM): its argv, () for none, and its
    # environment ("NAME=VALUE" strings), in the plan as `exec` and `env` lines.
    program: tuple[str, ...]
    env: tuple[str, ...]

    def __init__(self, *args: object, **kwargs: object) -> None:
        if len(args) < len(self._fields):
            for key, default in (("admin", 0), ("volume", ""), ("program", ()), ("env", ())):
                if len(args) <= self._fields.index(key):
                    kwargs.setdefault(key, default)
        super().__init__(*args, **kwargs)

    def render(self) -> str:
        lines = [
            f"version {PLAN_VERSION}",
            f"name {self.name}",
            f"uid {self.uid}",
            f"gid {self.gid}",
            f"hostname {self.hostname}",
            f"home {self.home}",
            f"root {self.root}",
            f"image {self.image}",
            f"net {self.net if isinstance(self.net, str) else int(self.net)}",
        ]
        lines += [f"limit {key} {self.limits.get(key, 0)}" for key in LIMIT_KEYS]
        lines += [f"limit {key} {plan_value(key, self.limits[key])}" for key in RESOURCE_KEYS if self.limits.get(key)]
        # Tenant root: an optional line between the limits and the mounts, only in an admin tenant's plan.
        if self.admin:
            lines.append(f"admin {self.admin}")
        # A volume-backed tenant: an optional line after admin, before the mounts (docs/contracts.md).
        if self.volume:
            lines.append(f"volume {self.volume}")
        # Issue 15: the default program, after the admin line, before the mounts; only when set.
        lines += [f"exec {plan_quote(word)}" for word in self.program]
        lines += [f"env {plan_quote(kv)}" for kv in self.env if self.program]
        lines += [m.render() for m in self.mounts]
        return "\n".join(lines) + "\n"

    def targets(self) -> list[str]:
        """Host paths of every mount, in mount order."""
        return [host_target(self.root, m.target) for m in self.mounts]


def plan_value(key: str, value: float) -> int:
    """A limit as the plan writes it: cpu_rate in milli-CPUs, the others as they are."""
    return round(value * 1000) if key == "cpu_rate" else int(value)


# Issue 15: `exec` and `env` values are percent-encoded (%XX, upper-case hex) for every byte of their
# UTF-8 that is not printable ASCII other than space, and for "%"; the launcher decodes them.
_PLAIN = frozenset(range(0x21, 0x7F)) - {ord("%")}


def plan_quote(text: str) -> str:
    return "".join(chr(b) if b in _PLAIN else f"%{b:02X}" for b in text.encode())


def plan_unquote(text: str, origin: str) -> str:
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%":
            digits = text[i + 1 : i + 3]
            if len(digits) != 2 or not all(c in "0123456789ABCDEF" for c in digits) or digits == "00":
                raise JailError(f"{origin}: bad percent-encoding in {text!r}")
            out.append(int(digits, 16))
            i += 3
        else:
            out += text[i].encode()
            i += 1
    return out.decode(errors="surrogateescape")


def host_target(root: str | Path, target: str) -> str:
    return str(root) if target == "/" else f"{root}{target}"


def plan_targets(text: str) -> list[str] | None:
    """Host paths of a plan's mounts, in order, from its root and mount lines alone (no parse of the
    rest, no records): what a re-converge asks of every jail's plan (issue 21). None when the text
    has no root line or no mounts; parse_plan tells what is wrong with it then."""
    root = None
    targets = []
    for line in text.splitlines():
        if line.startswith("mount "):
            parts = line.split(" ")
            if len(parts) != 5:
                return None
            targets.append(parts[1])
        elif line.startswith("root "):
            root = line[5:]
    if root is None or not targets:
        return None
    return [host_target(root, t) for t in targets]


def parse_plan(text: str, origin: str) -> MountPlan:
    """Read a plan file back (the same strict format the launcher parses)."""
    fields: dict[str, str] = {}
    limits: dict[str, int] = {}
    mounts: list[MountEntry] = []
    program: list[str] = []
    env: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split(" ")
        key = parts[0]
        if key == "mount" and len(parts) == 5:
            mounts.append(MountEntry(parts[1], parts[2], parts[3], tuple(o for o in parts[4].split(",") if o)))
        elif key == "limit" and len(parts) == 3 and parts[1] in LIMIT_KEYS and parts[2].isdigit():
            limits[parts[1]] = int(parts[2])
        elif key == "limit" and len(parts) == 3 and parts[1] in RESOURCE_KEYS and parts[2].isdigit() and not mounts:
            limits[parts[1]] = int(parts[2]) / 1000 if parts[1] == "cpu_rate" else int(parts[2])
        elif key == "admin" and len(parts) == 2 and parts[1].isdigit() and not mounts:
            fields["admin"] = parts[1]
        elif key == "volume" and len(parts) == 3 and not mounts and "volume" not in fields:
            fields["volume"] = f"{parts[1]} {parts[2]}"
        elif key == "exec" and len(parts) == 2 and parts[1] and not mounts and not env:
            program.append(plan_unquote(parts[1], f"{origin}:{lineno}"))
        elif key == "env" and len(parts) == 2 and "=" in parts[1][1:] and program and not mounts:
            env.append(plan_unquote(parts[1], f"{origin}:{lineno}"))
        elif len(parts) == 2 and key in ("version", "name", "uid", "gid", "hostname", "home", "root", "image", "net"):
            fields[key] = parts[1]
        else:
            raise JailError(f"{origin}:{lineno}: malformed plan line {line!r}")
    try:
        if int(fields["version"]) != PLAN_VERSION:
            raise JailError(f"{origin}: unsupported plan version {fields['version']!r}")
        return MountPlan(
            name=fields["name"],
            uid=int(fields["uid"]),
            gid=int(fields["gid"]),
            hostname=fields["hostname"],
            home=fields["home"],
            root=fields["root"],
            image=fields["image"],
            net="private" if fields["net"] == "private" else fields["net"] == "1",
            limits=limits,
            mounts=tuple(mounts),
            admin=int(fields.get("admin", "0")),
            volume=fields.get("volume", ""),
            program=tuple(program),
            env=tuple(env),
        )
    except (KeyError, ValueError) as exc:
        raise JailError(f"{origin}: incomplete plan ({exc})") from exc
