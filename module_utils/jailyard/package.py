"""Tenant packages (issue 15): read and check one, install, update and uninstall it.

A package is a directory or a tarball (any compression tarfile reads) with `config.json` at its top
(docs/package.schema.json; `validate_config` checks the same rules by hand, stdlib only) and
`progs/`, the files that become `/home/NAME/progs` in the tenant's jail, with an optional
`progs/install_deps.sh`.

Hostile contents are refused before anything changes (`read_package`): absolute or `..` paths,
symlinks (none are taken: a package is regular files and directories), hard links, device nodes,
FIFOs and sockets, names with control characters, more than MAX_FILES entries or MAX_BYTES bytes
(counted from the headers and again while reading, so a lying header changes nothing). setuid,
setgid and sticky bits and write bits for others are neutralised: files are 0755 (any x bit) or
0644, directories 0755.

Nothing of the tenant is written with host privileges: the files go into the jail as a tar stream
on jailrun's stdin and the tenant's own user unpacks and switches them (`stage`, `switch` below),
as packages.py does for .debs.

Install (`install`): a new tenant is created as an overlay tenant, an admin one (tenant root
installs the dependencies) when the package has `install_deps.sh` or `depends`; the Debian
`depends` are installed (packages.ensure_packages); progs/ is staged in
`~/.jailyard-stage`; `install_deps.sh` runs once per package content (its hash) as tenant root in
the jail, with the network only if the package asks (`network: true` gives the tenant
`net: private`); then the switch: the old `~/progs` is replaced by the staged one. Files the
tenant made itself are never lost: outside `~/progs` nothing is touched; inside it, files the
previous version did not ship are carried into the new `~/progs`, or, where the new version ships
the same path, moved to `~/progs.kept/`. Last the spec is written: `program`, `environment` and the
registry record `package` (REGISTRY_KEYS). A failure before the switch removes the stage and
leaves the tenant at its previous version; the log of every install is kept in
`<tenants_dir>/NAME/package/logs/` (beside `package/manifest`; both kept with the home, purged with it) and the record says `result: failed` with the log's path
(a failed install_deps.sh may have changed the overlay: tenant root's changes are its own).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from .errors import JailError
from .plan import LIMIT_KEYS, NAME_PATTERN, is_valid_name
from .service import JAILRUN

MAX_FILES = 10000
MAX_BYTES = 256 << 20
MAX_CONFIG = 65536
VERSION_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.+~-")
ENV_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
ENV_REST = ENV_FIRST | frozenset("0123456789")
DEB_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
DEB_REST = DEB_FIRST | frozenset("+.-")
PACKAGE_LIMITS = (*LIMIT_KEYS, "disk", "inodes", "cpu_weight", "io_weight", "memsw")
CONFIG_KEYS = ("name", "version", "program", "environment", "layout", "limits", "depends", "network", "uid")
REGISTRY_KEYS = ("name", "version", "hash", "program", "installed", "result", "log")
STAGE = ".jailyard-stage"


def _bad(origin: str, key: str, why: str, value: object) -> JailError:
    return JailError(f"{origin}: {key}: {why}, got {json.dumps(value)[:200]}")


def _is_int(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def validate_config(data: object, origin: str) -> dict[str, Any]:
    """config.json checked against docs/package.schema.json's rules; one error naming the key and the file."""
    if not isinstance(data, dict):
        raise _bad(origin, "(top)", "expected an object", data)
    for key in data:
        if key not in CONFIG_KEYS:
            raise _bad(origin, key, f"unknown key (expected one of {', '.join(CONFIG_KEYS)})", key)
    for key in ("name", "version", "program"):
        if key not in data:
            raise JailError(f"{origin}: {key}: missing")
    name, version, program = data["name"], data["version"], data["program"]
    if not is_valid_name(name):
        raise _bad(origin, "name", f"expected a name matching {NAME_PATTERN}", name)
    if not (isinstance(version, str) and 0 < len(version) <= 64 and version[0] in DEB_FIRST | set("ABCDEFGHIJKLMNOPQRSTUVWXYZ")):
        raise _bad(origin, "version", "expected 1-64 of [A-Za-z0-9.+~-], starting with a letter or digit", version)
    if not VERSION_CHARS.issuperset(version):
        raise _bad(origin, "version", "expected 1-64 of [A-Za-z0-9.+~-], starting with a letter or digit", version)
    words_ok = isinstance(program, list) and 1 <= len(program) <= 64
    words_ok = words_ok and all(isinstance(w, str) and 1 <= len(w) <= 1000 and "\0" not in w for w in program)
    if not words_ok or not program[0].startswith("/"):
        raise _bad(origin, "program", "expected an argv of 1-64 non-empty words, the first an absolute path", program)
    env = data.get("environment", {})
    if not isinstance(env, dict) or len(env) > 128:
        raise _bad(origin, "environment", "expected an object of at most 128 variables", env)
    for key, value in env.items():
        if not (0 < len(key) <= 128 and key[0] in ENV_FIRST and ENV_REST.issuperset(key)):
            raise _bad(origin, "environment", "expected variable names [A-Za-z_][A-Za-z0-9_]*", key)
        if not isinstance(value, str) or len(value) > 1000 or "\0" in value:
            raise _bad(origin, f"environment.{key}", "expected a string of at most 1000 characters", value)
    if "layout" in data and data["layout"] != "overlay":
        raise _bad(origin, "layout", "expected overlay (a package makes an admin tenant)", data["layout"])
    limits = data.get("limits", {})
    if not isinstance(limits, dict):
        raise _bad(origin, "limits", "expected an object", limits)
    for key, value in limits.items():
        if key not in PACKAGE_LIMITS:
            raise _bad(origin, f"limits.{key}", f"unknown limit (expected one of {', '.join(PACKAGE_LIMITS)})", key)
        top = 10000 if key in ("cpu_weight", "io_weight") else None
        if not _is_int(value) or value < 0 or (top is not None and value > top):
            raise _bad(origin, f"limits.{key}", "expected a non-negative integer" + (f" up to {top}" if top else ""), value)
    depends = data.get("depends", [])
    if not isinstance(depends, list) or len(depends) > 256 or len(set(map(str, depends))) != len(depends):
        raise _bad(origin, "depends", "expected a list of at most 256 distinct Debian package names", depends)
    for dep in depends:
        if not (isinstance(dep, str) and len(dep) >= 2 and dep[0] in DEB_FIRST and DEB_REST.issuperset(dep)):
            raise _bad(origin, "depends", "expected Debian package names [a-z0-9][a-z0-9+.-]+", dep)
    if "network" in data and not isinstance(data["network"], bool):
        raise _bad(origin, "network", "expected true or false", data["network"])
    if "uid" in data and (not _is_int(data["uid"]) or data["uid"] < 1):
        raise _bad(origin, "uid", "expected a positive integer", data["uid"])
    return {
        "name": name,
        "version": version,
        "program": list(program),
        "environment": dict(env),
        "limits": {k: int(v) for k, v in limits.items()},
        "depends": list(depends),
        "network": bool(data.get("network", False)),
        "uid": int(data["uid"]) if "uid" in data else None,
    }


class Package:
    """A package read and checked: its config, its progs/ files (path -> (mode, bytes); directories
    have bytes None), and the sha256 of its normalised content (what install compares)."""

    def __init__(self, config: dict[str, Any], files: dict[str, tuple[int, bytes | None]], origin: str) -> None:
        self.config = config
        self.files = files
        self.origin = origin
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
        for path in sorted(files):
            mode, data = files[path]
            digest.update(f"\0{path}\0{mode:o}\0".encode())
            digest.update(b"d" if data is None else hashlib.sha256(data).digest())
        self.hash = digest.hexdigest()

    @property
    def name(self) -> str:
        return self.config["name"]

    @property
    def needs_root(self) -> bool:
        """Tenant root installs the dependencies: a package with none makes a plain overlay tenant."""
        return self.install_deps or bool(self.config["depends"])

    @property
    def install_deps(self) -> bool:
        return self.files.get("install_deps.sh", (0, None))[1] is not None

    def tar(self, manifest: list[str] | None = None) -> bytes:
        """progs/ as a tar stream for the jail (and the previous version's manifest, for the switch)."""
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            items = [("progs", 0o755, None)] + [(f"progs/{p}", m, d) for p, (m, d) in sorted(self.files.items())]
            if manifest is not None:
                items.append(("old.manifest", 0o644, "".join(f"./{p}\n" for p in manifest).encode()))
            for path, mode, data in items:
                info = tarfile.TarInfo(path)
                info.mode = mode
                info.mtime = 0
                if data is None:
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                else:
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return out.getvalue()

    def manifest(self) -> list[str]:
        return sorted(p for p, (m, d) in self.files.items() if d is not None)


def _norm(name: str, origin: str) -> str:
    """A member name relative to the package's top, checked: no absolute path, no `..`, no control characters."""
    if name.startswith("/"):
        raise JailError(f"{origin}: refusing the absolute path {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise JailError(f"{origin}: refusing the path {name!r}: it climbs out with '..'")
    if any(ord(c) < 0x20 or c == "\x7f" for c in name):
        raise JailError(f"{origin}: refusing the path {name!r}: control characters in a name")
    return "/".join(parts)


def _mode(mode: int, is_dir: bool) -> int:
    """Permissions neutralised: no setuid, setgid or sticky bit, nothing writable but by the owner."""
    return 0o755 if is_dir or mode & 0o111 else 0o644


class _Reader:
    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.count = 0
        self.total = 0
        self.config: bytes | None = None
        self.files: dict[str, tuple[int, bytes | None]] = {}

    def entry(self, name: str, kind: str, mode: int, size: int, read: Any) -> None:
        rel = _norm(name, self.origin)
        self.count += 1
        if self.count > MAX_FILES:
            raise JailError(f"{self.origin}: more than {MAX_FILES} entries (a tarball bomb?)")
        if kind in ("symlink", "hardlink", "device", "fifo", "socket", "other"):
            raise JailError(f"{self.origin}: refusing {rel or name!r}: a {kind} (a package holds regular files and directories only)")
        self.total += size
        if self.total > MAX_BYTES:
            raise JailError(f"{self.origin}: more than {MAX_BYTES} bytes of files (a tarball bomb?)")
        if rel in ("", "progs") and kind == "dir":
            return
        if rel == "config.json" and kind == "file":
            if size > MAX_CONFIG:
                raise JailError(f"{self.origin}: config.json is larger than {MAX_CONFIG} bytes")
            self.config = read(MAX_CONFIG)
            return
        if not rel.startswith("progs/"):
            raise JailError(f"{self.origin}: refusing {rel!r}: a package holds config.json and progs/ only")
        data = None if kind == "dir" else read(size)
        if data is not None and len(data) != size:
            raise JailError(f"{self.origin}: {rel!r} is not the size its header says")
        self.files[rel[len("progs/") :]] = (_mode(mode, kind == "dir"), data)

    def package(self) -> Package:
        if self.config is None:
            raise JailError(f"{self.origin}: no config.json at the package's top")
        try:
            data = json.loads(self.config.decode())
        except (UnicodeDecodeError, ValueError) as exc:
            raise JailError(f"{self.origin}/config.json: not JSON: {exc}") from exc
        config = validate_config(data, f"{self.origin}/config.json")
        for path in list(self.files):  # parents of every file, as directories
            parts = path.split("/")
            for i in range(1, len(parts)):
                parent = self.files.setdefault("/".join(parts[:i]), (0o755, None))
                if parent[1] is not None:
                    raise JailError(f"{self.origin}: refusing progs/{path!r}: its parent is a file")
        return Package(config, self.files, self.origin)


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.isreg():
        return "file"
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.isdev():
        return "fifo" if member.isfifo() else "device"
    return "other"


def _file_kind(st: os.stat_result) -> str:
    if stat.S_ISREG(st.st_mode):
        return "hardlink" if st.st_nlink > 1 else "file"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    if stat.S_ISFIFO(st.st_mode):
        return "fifo"
    if stat.S_ISSOCK(st.st_mode):
        return "socket"
    return "device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "other"


def read_package(src: str | Path) -> Package:
    """Read and check a package (a directory or a tarball); refuses hostile contents before anything changes."""
    src = Path(src)
    origin = str(src)
    reader = _Reader(origin)
    if src.is_dir():
        top = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
        try:
            _walk(reader, top, "")
        finally:
            os.close(top)
        return reader.package()
    try:
        with tarfile.open(src, mode="r:*") as tar:
            for member in tar:
                kind = _tar_kind(member)

                def read(limit: int, m: tarfile.TarInfo = member) -> bytes:
                    fh = tar.extractfile(m)
                    return b"" if fh is None else fh.read(limit + 1)

                reader.entry(member.name, kind, member.mode, member.size if kind == "file" else 0, read)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise JailError(f"{origin}: not a readable directory or tarball: {exc}") from exc
    return reader.package()


def _walk(reader: _Reader, dir_fd: int, prefix: str) -> None:
    """A package directory, read through descriptors without following a symlink."""
    for entry in sorted(os.listdir(dir_fd)):
        rel = f"{prefix}{entry}"
        st = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
        kind = _file_kind(st)
        if kind == "dir":
            reader.entry(rel, kind, st.st_mode, 0, None)
            sub = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            try:
                _walk(reader, sub, f"{rel}/")
            finally:
                os.close(sub)
            continue

        def read(limit: int, name: str = entry) -> bytes:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
            with os.fdopen(fd, "rb") as fh:
                return fh.read(limit + 1)

        reader.entry(rel, kind, st.st_mode, st.st_size if kind == "file" else 0, read)


# ---- install, update, uninstall -------------------------------------------------------------------

# Run by the tenant's own user in its jail, in its home: unpack the stream into a fresh stage.
STAGE_SCRIPT = f'cd "$HOME" && rm -rf {STAGE} && mkdir -m 700 {STAGE} && tar -xf - -C {STAGE}'
# The switch, also as the tenant. Files in the old ~/progs the previous version did not ship
# (old.manifest) are the tenant's: carried into the new progs, or to ~/progs.kept/ where the new
# version ships the same path. The old version's own files then go; anything left (a name this
# loop could not handle) is kept in ~/progs.kept/ too: nothing of the tenant's is deleted.
SWITCH_SCRIPT = f"""set -e
cd "$HOME"; s={STAGE}
if [ -d progs ]; then
  (cd progs && find . ! -type d) > $s/old.list
  while IFS= read -r f; do
    grep -qxF -- "$f" $s/old.manifest && continue
    if [ -e "$s/progs/$f" ] || [ -L "$s/progs/$f" ]; then
      mkdir -p "progs.kept/$(dirname "$f")"; mv -f "progs/$f" "progs.kept/$f"
    else
      mkdir -p "$s/progs/$(dirname "$f")"; mv "progs/$f" "$s/progs/$f"
    fi
  done < $s/old.list
  while IFS= read -r f; do rm -f "progs/$f"; done < $s/old.manifest
  find progs -depth -type d -exec rmdir {{}} \\; 2>/dev/null || true
  if [ -e progs ]; then mkdir -p progs.kept; mv progs "progs.kept/left-$(date +%s)"; fi
fi
mv $s/progs progs
rm -rf $s
"""


def _manifest_path(cfg: Any, name: str) -> Path:
    return Path(cfg.tenants_dir) / name / "package" / "manifest"


def _log_dir(cfg: Any, name: str) -> Path:
    return Path(cfg.tenants_dir) / name / "package" / "logs"


def _free_uid(cfg: Any) -> int:
    import pwd

    from .registry import uid_owner

    hosts = {p.pw_uid for p in pwd.getpwall()}
    for uid in range(cfg.uid_min, cfg.uid_max + 1):
        if uid not in hosts and uid_owner(cfg, uid) is None:
            return uid
    raise JailError(f"no free uid left in {cfg.uid_min}-{cfg.uid_max}")


def _run(log: list[str], argv: list[str], stdin: bytes | None = None, timeout: float = 3600) -> int:
    log.append(f"$ {' '.join(argv)}")
    try:
        r = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.append(f"cannot run: {exc}")
        return -1
    for stream in (r.stdout, r.stderr):
        text = stream.decode(errors="replace").rstrip("\n")
        if text:
            log.append(text)
    log.append(f"(exit {r.returncode})")
    return r.returncode


def plan_install(cfg: Any, pkg: Package) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """What installing pkg would do: ("create"|"update"|"none", before, after) registry records. Refuses a name
    clash (a tenant of that name that no package made) before anything changes."""
    from .registry import load_spec

    spec = load_spec(cfg, pkg.name)
    after = {"name": pkg.name, "version": pkg.config["version"], "hash": pkg.hash, "program": pkg.config["program"]}
    if spec is None:
        return "create", {}, after
    if not spec.package:
        raise JailError(f"{pkg.origin}: tenant {pkg.name!r} already exists and was not installed from a package; refusing to replace it")
    before = dict(spec.package)
    if pkg.needs_root and not spec.admin:
        raise JailError(
            f"{pkg.origin}: version {pkg.config['version']} of {pkg.name} needs tenant root (install_deps.sh or depends) but the "
            f"tenant was made without it; uninstall it (its home is kept) and install again"
        )
    if before.get("hash") == pkg.hash and before.get("result") == "ok":
        return "none", before, before
    return "update", before, after


def install(
    cfg: Any, src: str | Path, check: bool = False, jailrun: str | None = None, sources: str | None = None, now: str | None = None
) -> dict[str, Any]:
    """Install or update a package on this node (module docstring). Returns {changed, action, before, after, log}."""
    import datetime

    from .lifecycle import converge
    from .lock import tenant_lock
    from .packages import ensure_packages
    from .registry import load_spec

    jailrun = jailrun or shutil.which("jailrun") or JAILRUN  # as jailctl finds it
    pkg = read_package(src)
    action, before, after = plan_install(cfg, pkg)
    result = {"changed": action != "none", "action": action, "name": pkg.name, "before": before, "after": after, "log": None}
    if check or action == "none":
        return result
    conf, name = pkg.config, pkg.name
    if action == "create":
        item = {"name": name, "uid": conf["uid"] or _free_uid(cfg), "layout": "overlay", "admin": pkg.needs_root, "state": "present"}
        if conf["limits"]:
            item["limits"] = conf["limits"]
        if conf["network"]:
            item["net"] = "private"
        converge(cfg, item)
    stamp = now or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    logdir = _log_dir(cfg, name)
    logdir.parent.mkdir(mode=0o700, exist_ok=True)
    logdir.mkdir(mode=0o700, exist_ok=True)
    logfile = logdir / f"{stamp.replace(':', '')}-{conf['version']}.log"
    log = [f"install {pkg.origin}: {name} {conf['version']} ({pkg.hash})"]
    manifest_file = _manifest_path(cfg, name)
    old_manifest = manifest_file.read_text().split("\n") if manifest_file.exists() else []
    failed = ""
    with tenant_lock(cfg, f"{name}.package"):
        if conf["depends"]:
            try:
                done = ensure_packages(name, conf["depends"], jailrun=jailrun, sources=sources)
                log.append(f"Debian packages: {' '.join(done) or 'all installed already'}")
            except JailError as exc:
                log.append(str(exc))
                failed = "the Debian dependencies failed"
        user = ["--user", name] if load_spec(cfg, name).admin else []  # an admin tenant's sessions run as its root by default
        if (
            not failed
            and _run(log, [jailrun, *user, name, "--", "/bin/sh", "-c", STAGE_SCRIPT], pkg.tar([p for p in old_manifest if p])) != 0
        ):
            failed = "staging progs/ failed"
        if not failed and pkg.install_deps:
            home = f"/home/{name}"
            argv = [jailrun, "--user", "root", "--cwd", f"{home}/{STAGE}/progs", "--env", f"PACKAGE_DIR={home}/{STAGE}/progs"]
            if _run(log, [*argv, name, "--", "/bin/sh", "./install_deps.sh"]) != 0:
                failed = "install_deps.sh failed"
        if not failed and _run(log, [jailrun, *user, name, "--", "/bin/sh", "-c", SWITCH_SCRIPT]) != 0:
            failed = "switching to the new progs/ failed"
        if failed:
            _run(log, [jailrun, *user, name, "--", "/bin/sh", "-c", f'rm -rf "$HOME/{STAGE}"'])
        log.append(f"result: {'failed: ' + failed if failed else 'ok'}")
        logfile.write_text("\n".join(log) + "\n")
        os.chmod(logfile, 0o600)
        if failed:
            record = {**before, "result": "failed", "failed_version": conf["version"], "log": str(logfile), "attempted": stamp}
            if not before:  # a first install that failed: the tenant is there, at no version
                record = {"name": name, "version": "", "hash": "", "program": [], **record}
            converge(cfg, {"name": name, "state": "present", "package": record})
            tail = " / ".join(line for line in log[-6:] if line)
            raise JailError(
                f"installing {name} {conf['version']} failed ({failed}); still at {before.get('version') or 'no version'}; log {logfile}: {tail}"
            )
        manifest_file.write_text("\n".join(pkg.manifest()) + "\n")
        record = {**after, "installed": stamp, "result": "ok", "log": str(logfile)}
        item = {"name": name, "state": "present", "program": conf["program"], "environment": conf["environment"], "package": record}
        if conf["limits"]:
            item["limits"] = conf["limits"]
        converge(cfg, item)
    result["after"] = record
    result["log"] = str(logfile)
    return result


def uninstall(cfg: Any, name: str, purge: bool = False, check: bool = False) -> dict[str, Any]:
    """Remove a packaged tenant (its home kept unless purge). Refuses a tenant no package made."""
    from .lifecycle import converge
    from .registry import load_spec

    spec = load_spec(cfg, name)
    if spec is None:
        return {"changed": False, "name": name, "before": {}, "after": {}}
    if not spec.package:
        raise JailError(f"tenant {name!r} was not installed from a package; remove it with the jail module or jailctl remove")
    converge(cfg, {"name": name, "state": "absent", "purge": purge, "force": True}, check=check)
    return {"changed": True, "name": name, "before": dict(spec.package), "after": {}}


# ---- the inbox -------------------------------------------------------------------------------------


def inbox_pass(cfg: Any, inbox: str | Path, jailrun: str | None = None, sources: str | None = None) -> list[dict[str, Any]]:
    """Install every package dropped into inbox (a directory or a tarball; names starting with "." are
    skipped, so a package is dropped whole by writing `.NAME` and renaming it to `NAME`), then move it to
    `done/` or `failed/` with `NAME.log` beside it (what happened, and the install's log). One entry a
    package, in name order; a package that fails does not stop the others."""
    import datetime

    inbox = Path(inbox)
    done, failed = inbox / "done", inbox / "failed"
    for path in (done, failed):
        path.mkdir(mode=0o700, exist_ok=True)
    report = []
    for entry in sorted(os.listdir(inbox)):
        src = inbox / entry
        if entry.startswith(".") or entry in ("done", "failed") or src.is_symlink():
            continue
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        try:
            result = install(cfg, src, jailrun=jailrun, sources=sources)
            ok, text = True, f"{result['action']}: {result['name']} {result['after'].get('version')}"
        except JailError as exc:
            ok, text = False, str(exc)
        dest = (done if ok else failed) / f"{stamp}-{entry}"
        os.rename(src, dest)
        log = f"{text}\n"
        if ok and result.get("log"):
            log += Path(result["log"]).read_text()
        Path(f"{dest}.log").write_text(log)
        report.append({"package": entry, "ok": ok, "result": text, "moved_to": str(dest)})
    return report
