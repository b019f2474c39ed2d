"""TenantSpec: the registry entry of one tenant (tenant.json), its validation, and what follows from it
(its mount plan, its passwd and group). Imports plan.py, never the other way round."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any

from . import network
from .config import Config
from .errors import JailError
from .plan import LIMIT_KEYS, NAME_PATTERN, RESOURCE_KEYS, MountEntry, MountPlan, is_valid_name, plan_quote

# Issue 15: the launcher's bounds of a default program (launcher/parse.h JR_MAX_PROG_ARGS,
# JR_MAX_ENV, JR_PROG_BUF less room for the NULs it adds).
PROGRAM_WORDS = 64
PROGRAM_ENV = 128
PROGRAM_BYTES = 16000
PROGRAM_LINE = 3000  # a plan line is at most 3071 bytes (parse.c); a word percent-encoded
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
LAYOUTS = ("bind", "overlay")
SPEC_VERSION = 1


def check_name(name: object) -> str:
    if not is_valid_name(name):
        raise JailError(f"invalid jail name {name!r}: expected a name matching {NAME_PATTERN}")
    return name


@dataclasses.dataclass
class TenantSpec:
    name: str
    uid: int
    gid: int
    layout: str = "bind"
    image: str = "current"  # what was asked for: "current" or a pinned id
    image_id: str = ""  # the image the jail uses (resolved at create and at each fresh mount)
    hostname: str = ""
    # False (none), True (host) or, issue 17, {"mode": "private", ...} (network.normalize_net)
    net: bool | dict[str, Any] = False
    limits: dict[str, int] = dataclasses.field(default_factory=dict)
    program: str | list[str] | None = None
    packages: list[str] = dataclasses.field(default_factory=list)
    version: int = SPEC_VERSION
    # Run `program` as a supervised service while mounted (service.py). Left out of tenant.json
    # when false, so the files of jails that never asked for it stay as they were.
    service: bool = False
    # Tenant root (docs/design.md, "Tenant root"): the tenant's programs run as uid 0 of a user
    # namespace mapping 0..65535 to host ids admin_ids.. (idmap.range_base of its uid). Both left
    # out of tenant.json when admin is false.
    admin: bool = False
    admin_ids: int = 0
    # A volume-backed tenant (volume.py): its data lives in <tenants>/<name>/volume.img, mounted at
    # <tenants>/<name>/vol. Decided at create (planner: limits.disk or inodes without project quotas,
    # or disk_backend = volume); left out of tenant.json when false.
    volume: bool = False
    # Issue 15: the default program's environment (`jailrun NAME` with no PROGRAM runs `program` with
    # it, before any --env). Left out of tenant.json when empty. `program` may be a command line
    # (split as a POSIX shell splits words) or an argv (a list of words, taken as it is).
    environment: dict[str, str] = dataclasses.field(default_factory=dict)
    # Issue 15, the registry: the tenant package installed here (package.py, REGISTRY_KEYS: name,
    # version, hash, installed, result, log). Written by package installs only; left out when empty.
    package: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def build(
        cls,
        cfg: Config,
        name: object,
        uid: object,
        gid: object = None,
        layout: object = None,
        image: object = None,
        hostname: object = None,
        net: object = None,
        limits: object = None,
        program: object = None,
        packages: object = None,
        service: object = None,
        admin: object = None,
        environment: object = None,
        package: object = None,
    ) -> TenantSpec:
        """Validate user input (module arguments, CLI flags) into a spec; limits default from cfg."""
        name = check_name(name)
        uid = _int("uid", uid)
        gid = uid if gid is None else _int("gid", gid)
        merged = cfg.default_limits()
        if limits is not None:
            if not isinstance(limits, dict):
                raise JailError(f"limits of {name} must be a mapping, got {limits!r}")
            for key, value in limits.items():
                if key in RESOURCE_KEYS:
                    merged[key] = resource_limit(name, key, value)
                    continue
                if key not in LIMIT_KEYS and key not in network.NET_LIMIT_KEYS:
                    known = ", ".join((*LIMIT_KEYS, *RESOURCE_KEYS, *network.NET_LIMIT_KEYS))
                    raise JailError(f"unknown limit {key!r} for {name}: expected one of {known}")
                merged[key] = _int(f"limits.{key}", value)
            for key in RESOURCE_KEYS:
                if not merged.get(key, 1):
                    del merged[key]  # 0: no such limit; the key is left out of tenant.json and the plan
            if merged.get("memsw") and merged.get("mem") and merged["memsw"] < merged["mem"]:
                raise JailError(
                    f"limits.memsw of {name} ({merged['memsw']}) is memory plus swap: it may not be below limits.mem ({merged['mem']})"
                )
        spec = cls(
            name=name,
            uid=uid,
            gid=gid,
            layout="bind" if layout is None else layout,  # type: ignore[arg-type]
            image="current" if image is None else image,  # type: ignore[arg-type]
            hostname=name if not hostname else hostname,  # type: ignore[arg-type]
            net=network.normalize_net(name, net),
            limits=merged,
            program=program,  # type: ignore[arg-type]
            packages=list(packages or []),  # type: ignore[call-overload]
            service=False if service is None else service,  # type: ignore[arg-type]
            admin=False if admin is None else admin,  # type: ignore[arg-type]
            environment={} if environment is None else environment,  # type: ignore[arg-type]
            package={} if package is None else package,  # type: ignore[arg-type]
        )
        if spec.admin is True:
            from .idmap import range_base

            spec.admin_ids = range_base(cfg.uid_min, spec.uid)
        spec.validate(cfg)
        return spec

    def validate(self, cfg: Config) -> None:
        check_name(self.name)
        if not cfg.uid_min <= self.uid <= cfg.uid_max:
            raise JailError(f"uid {self.uid} of {self.name} is outside the tenant range {cfg.uid_min}-{cfg.uid_max}")
        if not cfg.uid_min <= self.gid <= cfg.uid_max:
            raise JailError(f"gid {self.gid} of {self.name} is outside the tenant range {cfg.uid_min}-{cfg.uid_max}")
        if self.layout not in LAYOUTS:
            raise JailError(f"invalid layout {self.layout!r} for {self.name}: expected one of {', '.join(LAYOUTS)}")
        if not isinstance(self.hostname, str) or not HOSTNAME_RE.fullmatch(self.hostname):
            raise JailError(f"invalid hostname {self.hostname!r} for {self.name}: expected a DNS label")
        if not isinstance(self.image, str) or not re.match(r"^(current|[0-9a-f]{8,64})$", self.image):
            raise JailError(f"invalid image {self.image!r} for {self.name}: expected 'current' or an image id")
        self.program_argv()
        self._validate_environment()
        if not isinstance(self.package, dict):
            raise JailError(f"invalid package record {self.package!r} for {self.name}: expected a mapping")
        if not isinstance(self.service, bool):
            raise JailError(f"invalid service {self.service!r} for {self.name}: expected true or false")
        if self.service:
            self.service_argv()
        network.check_net(cfg, self.name, self.net, self.limits)
        self._validate_admin(cfg)
        for pkg in self.packages:
            if not isinstance(pkg, str) or not re.match(r"^[a-z0-9][a-z0-9+.-]+$", pkg):
                raise JailError(f"invalid package name {pkg!r} for {self.name}")

    def _validate_admin(self, cfg: Config) -> None:
        if not isinstance(self.admin, bool):
            raise JailError(f"invalid admin {self.admin!r} for {self.name}: expected true or false")
        if not self.admin:
            if self.admin_ids:
                raise JailError(f"{self.name} has admin_ids {self.admin_ids} but admin: false")
            return
        if self.layout != "overlay":
            raise JailError(
                f"admin: true for {self.name} needs layout: overlay (tenant root writes into its own upper layer; "
                f"a bind jail's root is the shared image), got layout {self.layout!r}"
            )
        from .idmap import range_base

        if self.admin_ids != range_base(cfg.uid_min, self.uid):
            raise JailError(f"admin_ids {self.admin_ids} of {self.name} is not the range of uid {self.uid}")

    def program_argv(self) -> list[str]:
        """`program` as an argv (issue 15): a list as it is, a string split as a POSIX shell would
        (shlex.split, no shell runs it); [] for none. Words are non-empty, without NUL, at most
        PROGRAM_WORDS of them (the launcher's bound)."""
        if self.program is None:
            return []
        if isinstance(self.program, list):
            argv = self.program
        elif isinstance(self.program, str):
            try:
                argv = shlex.split(self.program)
            except ValueError as exc:
                raise JailError(f"invalid program {self.program!r} for {self.name}: {exc}") from exc
        else:
            raise JailError(f"invalid program {self.program!r} for {self.name}: expected a command line or a list of words")
        if len(argv) > PROGRAM_WORDS or not all(
            isinstance(w, str) and w and "\0" not in w and len(plan_quote(w)) <= PROGRAM_LINE for w in argv
        ):
            raise JailError(
                f"invalid program {self.program!r} for {self.name}: expected 1 to {PROGRAM_WORDS} non-empty words without NUL, "
                f"each at most {PROGRAM_LINE} bytes as the plan writes it"
            )
        return list(argv)

    def _validate_environment(self) -> None:
        env = self.environment
        if not isinstance(env, dict) or len(env) > PROGRAM_ENV:
            raise JailError(f"invalid environment {env!r} for {self.name}: expected a mapping of at most {PROGRAM_ENV} variables")
        for key, value in env.items():
            if not isinstance(key, str) or not ENV_NAME_RE.fullmatch(key):
                raise JailError(f"invalid environment variable name {key!r} for {self.name}: expected [A-Za-z_][A-Za-z0-9_]*")
            if not isinstance(value, str) or "\0" in value or len(plan_quote(f"{key}={value}")) > PROGRAM_LINE:
                raise JailError(
                    f"invalid value of environment variable {key} for {self.name}: "
                    f"expected a string without NUL, at most {PROGRAM_LINE} bytes as the plan writes it"
                )
        if env and self.program is None:
            raise JailError(f"environment of {self.name} is for its program, but it has none; set program")
        size = sum(len(w.encode()) + 1 for w in self.program_argv()) + sum(len(f"{k}={v}".encode()) + 1 for k, v in env.items())
        if size > PROGRAM_BYTES:
            raise JailError(f"program and environment of {self.name} take {size} bytes, more than the launcher's {PROGRAM_BYTES}")

    def program_env(self) -> tuple[str, ...]:
        return tuple(f"{key}={self.environment[key]}" for key in sorted(self.environment))

    def service_argv(self) -> list[str]:
        """The service's command line: `program_argv()`, no shell run.

        Refused unless it names an absolute path inside the jail (the launcher runs it there, no PATH search)."""
        argv = self.program_argv()
        if not argv:
            raise JailError(f"jail {self.name} has service: true but no program to run; set program (an absolute path inside the jail)")
        if not argv[0].startswith("/"):
            raise JailError(f"invalid program {self.program!r} for the service of {self.name}: expected an absolute path inside the jail")
        return argv

    def mount_plan(self, cfg: Config, image_id: str, image_root: Path) -> MountPlan:
        """The mounts of the jail, in order. The launcher never computes these itself."""
        tdir = f"{cfg.tenants_dir}/{self.name}"
        data = f"{tdir}/vol" if self.volume else tdir  # a volume-backed tenant's data: below its mount point
        for path in (image_root, tdir, cfg.jails_dir):
            if "".join(str(path).split()) != str(path):  # any whitespace str.isspace() knows
                raise JailError(f"path {str(path)!r} contains whitespace, which the plan format cannot carry")
        tenant_rw = ("nosuid", "nodev")
        mounts: list[MountEntry] = []
        if self.layout == "bind":
            mounts.append(MountEntry("/", "bind", str(image_root), ("ro", "nosuid", "nodev")))
            mounts.append(MountEntry("/home", "bind", f"{data}/home", tenant_rw))
            mounts.append(MountEntry("/tmp", "bind", f"{data}/tmp", tenant_rw))
        else:
            mounts.append(MountEntry("/", "overlay", f"{image_root}:{data}/upper:{data}/work", tenant_rw))
            mounts.append(MountEntry("/home", "bind", f"{data}/home", tenant_rw))
        if not self.admin:
            # Tenant root keeps its own /etc/passwd and /etc/group in its upper layer (the image's, then
            # whatever its packages add); the launcher resolves --user there.
            mounts.append(MountEntry("/etc/passwd", "bind", f"{tdir}/etc/passwd", ("ro", "nosuid", "nodev")))
            mounts.append(MountEntry("/etc/group", "bind", f"{tdir}/etc/group", ("ro", "nosuid", "nodev")))
        if network.is_private(self.net):
            mounts.append(MountEntry("/etc/resolv.conf", "bind", f"{tdir}/etc/resolv.conf", ("ro", "nosuid", "nodev")))
        return self._plan(cfg, image_id, tuple(mounts))

    def _plan(self, cfg: Config, image_id: str, mounts: tuple[MountEntry, ...]) -> MountPlan:
        # By position, in MountPlan._fields order (Record's fast path: a keyword call builds a dict).
        return MountPlan(
            self.name,
            self.uid,
            self.gid,
            self.hostname,
            f"/home/{self.name}",
            f"{cfg.jails_dir}/{self.name}",
            image_id,
            "private" if network.is_private(self.net) else bool(self.net),
            {k: v for k, v in self.limits.items() if k in LIMIT_KEYS or k in RESOURCE_KEYS},  # not net_rate
            mounts,
            self.admin_ids if self.admin else 0,  # admin
            f"{cfg.tenants_dir}/{self.name}/volume.img {cfg.tenants_dir}/{self.name}/vol" if self.volume else "",  # volume
            tuple(self.program_argv()),  # program
            self.program_env(),  # env
        )

    def passwd(self) -> str:
        """The jail's own /etc/passwd: root, nobody, the tenant."""
        return (
            "root:x:0:0:root:/root:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            f"{self.name}:x:{self.uid}:{self.gid}:{self.name}:/home/{self.name}:/bin/sh\n"
        )

    def group(self) -> str:
        return f"root:x:0:\nnogroup:x:65534:\n{self.name}:x:{self.gid}:\n"

    def to_dict(self) -> dict[str, Any]:
        # A plain copy, not dataclasses.asdict: that deep-copies every int and was a quarter of
        # re-converging 10,000 mounted jails (issue 21).
        data = {key: plain_copy(getattr(self, key)) for key in SPEC_FIELDS}
        if not self.service:
            del data["service"]  # tenant.json of a jail without a service stays byte-identical
        if not self.admin:
            del data["admin"], data["admin_ids"]
        if not self.volume:
            del data["volume"]
        if not self.environment:
            del data["environment"]  # issue 15: as `service`, left out unless set
        if not self.package:
            del data["package"]
        return data

    def to_json(self) -> str:
        return json_text(self.to_dict()) + "\n"

    @classmethod
    def from_json(cls, text: str, origin: str) -> TenantSpec:
        try:
            data = json.loads(text)
            unknown = set(data) - _FIELD_SET
            if unknown:
                raise JailError(f"{origin}: unknown keys {sorted(unknown)}")
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise JailError(f"{origin}: malformed tenant spec: {exc}") from exc


SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(TenantSpec))
_FIELD_SET = frozenset(SPEC_FIELDS)


def plain_copy(value: Any) -> Any:
    """A copy of JSON-like data (dicts and lists copied, all else shared: it is immutable)."""
    kind = type(value)
    if kind is dict:
        return {key: plain_copy(item) for key, item in value.items()}
    if kind is list:
        return [plain_copy(item) for item in value]
    if kind is tuple:
        return tuple(plain_copy(item) for item in value)
    if isinstance(value, (dict, list, tuple)):
        raise TypeError(f"cannot copy {kind.__name__} in a tenant spec")
    return value


class NotPlain(Exception):
    """A value json_text leaves to the json module."""


def json_text(value: Any) -> str:
    """Exactly json.dumps(value, indent=2, sort_keys=True), several times faster for specs.

    With an indent the json module encodes in pure Python, one generator per value,
    which cost 0.15 ms per tenant.json written or compared (issue 21). Anything but
    str keys, str, int, bool, None, lists and dicts goes to json.dumps as a whole.
    """
    try:
        return _json_value(value, "")
    except NotPlain:
        return json.dumps(value, indent=2, sort_keys=True)


def _json_value(value: Any, indent: str) -> str:
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):  # bool was handled above
        return int.__repr__(value)
    inner = indent + "  "
    if isinstance(value, dict):
        if not value:
            return "{}"
        if not all(isinstance(key, str) for key in value):
            raise NotPlain
        items = [f"{inner}{encode_basestring_ascii(key)}: {_json_value(value[key], inner)}" for key in sorted(value)]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + _json_value(item, inner) for item in value) + "\n" + indent + "]"
    raise NotPlain


# Resource guarantees (issue 16): sizes take K, M, G, T (powers of 1024) like jailrun's --mem.
SIZE_UNITS = {"K": 10, "M": 20, "G": 30, "T": 40}
RESOURCE_SIZES = ("disk", "memsw")
WEIGHT_RANGE = (1, 10000)


def parse_size(what: str, value: object) -> int:
    """Bytes from an int or digits with an optional K, M, G or T suffix; else one line naming the value."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = value.strip() if isinstance(value, str) else ""
    shift = SIZE_UNITS.get(text[-1:].upper(), 0) if text else 0
    digits = text[:-1] if shift else text
    if not digits.isascii() or not digits.isdigit():
        raise JailError(f"{what} must be a size in bytes (digits with an optional K, M, G or T suffix), got {value!r}")
    return int(digits) << shift


def resource_limit(name: str, key: str, value: object) -> int | float:
    """One resource guarantee checked: sizes in bytes, inodes a count, weights 1-10000, cpu_rate in CPUs (0.001 steps)."""
    what = f"limits.{key} of {name}"
    if key in RESOURCE_SIZES:
        return parse_size(what, value)
    if key == "cpu_rate":
        try:
            rate = float(value) if not isinstance(value, bool) else -1.0  # type: ignore[arg-type]
        except (TypeError, ValueError):
            rate = -1.0
        if not 0 <= rate <= 4096:  # NaN fails this too
            raise JailError(f"{what} must be a number of CPUs (0.5, 2) between 0 and 4096, got {value!r}")
        rate = round(rate, 3)
        return int(rate) if rate == int(rate) else rate
    count = _int(what, value)
    if key in ("cpu_weight", "io_weight") and count and not WEIGHT_RANGE[0] <= count <= WEIGHT_RANGE[1]:
        raise JailError(f"{what} must be a weight from 1 to 10000 (100 is the default share), got {value!r}")
    return count


def _int(what: str, value: object) -> int:
    if isinstance(value, bool):
        raise JailError(f"{what} must be a non-negative integer, got {value!r}")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or value < 0:
        raise JailError(f"{what} must be a non-negative integer, got {value!r}")
    return value
