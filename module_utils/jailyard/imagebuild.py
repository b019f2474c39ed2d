"""Base images: build with debootstrap, content-addressed ids, packing, verification.

What is stored where is image.py (the store the mount step reads); this module
makes and moves images: only the jail_image module, the image tests and the
benchmarks import it.
"""

from __future__ import annotations

# shutil, subprocess and tempfile are imported where images are built or packed.
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

from .errors import JailError
from .image import ID_RE, all_images, current_image, image_rootfs, read_manifest, resolve_image, set_current

BUILD_VERSION = 2  # bump when what debootstrap is asked for changes (it names the download cache)
IMAGE_FORMAT = 3  # bump when what is done to the tree after debootstrap changes (recipes build anew)
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
SUITE_RE = re.compile(r"^[a-z][a-z0-9-]*$")
ID_LEN = 16
# The jail's own files, written over what debootstrap made. The role passes its
# templates (roles/jail_base_image/templates/...) instead; these are the defaults
# for callers without them (jailctl, tests). They are part of the recipe.
JAIL_FILES: tuple[tuple[str, str, int], ...] = (
    ("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n", 0o644),
    ("etc/resolv.conf", "# jails have no network unless their spec allows it\nnameserver 127.0.0.1\n", 0o644),
    ("etc/hostname", "jail\n", 0o644),
    ("etc/motd", "", 0o644),
    ("usr/sbin/policy-rc.d", "#!/bin/sh\n# jailyard: no services start inside a jail image\nexit 101\n", 0o755),
)
JAIL_FILE_RE = re.compile(r"^(etc|usr/sbin|usr/local)/[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*$")


@dataclasses.dataclass(frozen=True)
class Recipe:
    suite: str = "bookworm"
    mirror: str = ""
    packages: tuple[str, ...] = ()
    variant: str = "minbase"
    files: tuple[tuple[str, str, int], ...] = JAIL_FILES  # (path inside the image, content, mode)

    def validate(self) -> None:
        if not SUITE_RE.match(self.suite):
            raise JailError(f"invalid suite {self.suite!r}: expected a Debian suite name like 'bookworm'")
        if not re.match(r"^(https?|file)://\S+$", self.mirror):
            raise JailError(f"invalid mirror {self.mirror!r}: expected an http(s):// or file:// URL")
        for pkg in self.packages:
            if not PACKAGE_RE.match(pkg):
                raise JailError(f"invalid package name {pkg!r}")
        if self.variant not in ("minbase", "buildd"):
            raise JailError(f"invalid variant {self.variant!r}: expected minbase or buildd")
        paths = [entry[0] for entry in self.files]
        if len(set(paths)) != len(paths):
            raise JailError(f"image files name a path twice: {sorted(p for p in paths if paths.count(p) > 1)[0]}")
        for path, _content, mode in self.files:
            if not JAIL_FILE_RE.match(path) or ".." in path.split("/"):
                raise JailError(f"invalid image file path {path!r}: expected a relative path under etc/, usr/sbin/ or usr/local/")
            if mode & ~0o755:
                raise JailError(f"invalid mode {mode:o} for image file {path}: no setuid, setgid, sticky or writable-by-others bits")

    def download_digest(self) -> str:
        """What debootstrap downloads depends on: names the package tarball in the cache."""
        data = {
            "suite": self.suite,
            "mirror": self.mirror,
            "packages": sorted(set(self.packages)),
            "variant": self.variant,
            "v": BUILD_VERSION,
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:ID_LEN]

    def digest(self) -> str:
        """Every input of a build: a recipe built before is not built again."""
        files = sorted([p, hashlib.sha256(c.encode()).hexdigest(), m] for p, c, m in self.files)
        data = {"download": self.download_digest(), "files": files, "format": IMAGE_FORMAT}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:ID_LEN]


def host_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The host's own Debian mirror: the first non-security archive in its apt sources
    (sources.list one-line entries, then sources.list.d/*.list and *.sources in deb822)."""
    candidates: list[str] = []
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        for line in _read_lines(path):
            parts = line.split("#", 1)[0].split()
            if parts[:1] == ["deb"]:
                rest = parts[1:]
                if rest and rest[0].startswith("["):  # options: [arch=amd64 signed-by=...]
                    while rest and not rest[0].endswith("]"):
                        rest = rest[1:]
                    rest = rest[1:]
                candidates.extend(rest[:1])
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        stanzas = "\n".join(_read_lines(path)).split("\n\n")
        for stanza in stanzas:
            fields = dict(
                (k.strip().lower(), v.strip())
                for k, _colon, v in (ln.partition(":") for ln in stanza.splitlines())
                if not k.startswith("#")
            )
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes").lower() != "no":
                candidates.extend(fields.get("uris", "").split())
    for uri in candidates:
        if "security" not in uri and re.match(r"^(https?|file)://", uri):
            return uri.rstrip("/")
    return "http://deb.debian.org/debian"


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


# --- building -----------------------------------------------------------------------


def recipe_image(cfg: Any, recipe: Recipe) -> str | None:
    """The image already built from this recipe, if it is still there."""
    try:
        image_id = os.readlink(Path(cfg.images_dir) / "recipes" / recipe.digest())
    except FileNotFoundError:
        return None
    return image_id if (Path(cfg.images_dir) / image_id / "rootfs").is_dir() else None


def ensure_image(
    cfg: Any, recipe: Recipe, cache_dir: Path, rebuild: bool = False, check: bool = False
) -> tuple[bool, str | None, list[str]]:
    """Build the recipe's image unless it exists; make it current. Returns (changed, id, actions).

    A rebuild that yields the same content (the id is its hash) changes nothing."""
    recipe.validate()
    actions: list[str] = []
    changed = False
    image_id = None if rebuild else recipe_image(cfg, recipe)
    if image_id is None:
        what = f"a {recipe.suite} {recipe.variant} image with {len(recipe.packages)} extra packages"
        if check:
            return True, None, [f"build {what}"]
        before = set(all_images(cfg))
        image_id = build_image(cfg, recipe, cache_dir)
        if image_id in before:
            actions.append(f"built {what}: the same content as {image_id}, kept")
        else:
            actions.append(f"build {what}")
            changed = True
    if current_image(cfg) != image_id:
        actions.append(f"make {image_id} current")
        changed = True
        if not check:
            set_current(cfg, image_id)
    return changed, image_id, actions


def build_image(cfg: Any, recipe: Recipe, cache_dir: Path) -> str:
    import shutil
    import tempfile

    images = Path(cfg.images_dir)
    images.mkdir(mode=0o755, parents=True, exist_ok=True)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=images))
    try:
        rootfs = work / "rootfs"
        _debootstrap(recipe, rootfs, Path(cache_dir))
        _make_jail_etc(rootfs, recipe.files)
        stripped = strip_privileges(rootfs)
        image_id, files, size = content_hash(rootfs)
        os.chmod(work, 0o755)
        manifest = {
            "id": image_id,
            "recipe": dataclasses.asdict(recipe),
            "recipe_digest": recipe.digest(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.monotonic() - started, 1),
            "files": files,
            "size": size,
            "stripped_privileges": stripped,
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        final = images / image_id
        if final.exists():
            shutil.rmtree(work)  # the same content was built before: keep the old copy (it may be mounted)
        else:
            os.rename(work, final)
        _record_recipe(images, recipe.digest(), image_id)
        return image_id
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _record_recipe(images: Path, digest: str, image_id: str) -> None:
    recipes = images / "recipes"
    recipes.mkdir(mode=0o755, exist_ok=True)
    tmp = recipes / f".{digest}.{os.getpid()}"
    os.symlink(image_id, tmp)
    os.rename(tmp, recipes / digest)


def _debootstrap(recipe: Recipe, rootfs: Path, cache_dir: Path) -> None:
    """debootstrap, downloading once: the packages are kept as a tarball per (suite, mirror, packages)."""
    import shutil
    import tempfile

    cache_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    tarball = cache_dir / f"{recipe.suite}-{recipe.variant}-{recipe.download_digest()}.tgz"
    # In a private mount namespace: debootstrap mounts /proc (and more) inside the
    # target; there they are invisible to the node and vanish with the process,
    # even when it is killed, so no mount is ever left inside a build directory.
    base = ["unshare", "--mount", "--propagation", "private", "debootstrap", f"--variant={recipe.variant}"]
    if recipe.packages:
        base.append("--include=" + ",".join(sorted(set(recipe.packages))))
    if not tarball.exists():
        partial = tarball.with_suffix(f".partial-{os.getpid()}")
        scratch = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=cache_dir))
        try:
            _run([*base, f"--make-tarball={partial}", recipe.suite, str(scratch), recipe.mirror], "debootstrap --make-tarball")
            os.rename(partial, tarball)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
    rootfs.mkdir(mode=0o755)
    _run([*base, f"--unpack-tarball={tarball}", recipe.suite, str(rootfs), recipe.mirror], "debootstrap")


def _run(cmd: list[str], what: str) -> None:
    import subprocess

    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        raise JailError(f"{what} failed (exit {out.returncode}): {' | '.join(tail)}")


def _make_jail_etc(rootfs: Path, files: tuple[tuple[str, str, int], ...]) -> None:
    import shutil

    etc = rootfs / "etc"
    for rel, text, mode in files:
        path = rootfs / rel
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()  # never write through a link debootstrap left (resolv.conf may be one)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chown(path, 0, 0)
        os.chmod(path, mode)
    (etc / "machine-id").write_text("")
    # Noise that would only make every build differ, and caches a jail never needs.
    for rel in ("var/log", "var/cache/apt", "var/lib/apt/lists"):
        target = rootfs / rel
        if target.is_dir():
            for entry in target.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
    _make_reproducible(rootfs)
    # Device nodes never belong in an image: the launcher gives each session its
    # own minimal /dev, and every mount is nodev anyway. (A naive copy of a
    # tree holding dev/full or dev/zero also reads forever.)
    dev = rootfs / "dev"
    if dev.is_dir():
        shutil.rmtree(dev)
    for mountpoint in ("home", "tmp", "proc", "dev", "sys", "run"):
        (rootfs / mountpoint).mkdir(exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)


def _make_reproducible(rootfs: Path) -> None:
    """Remove what makes two builds of one recipe differ (measured by diffing two builds): the id is
    then the same on a rebuild, and on every node that builds the same recipe, on any day."""
    # ldconfig's aux-cache records inode numbers and ctimes of the libraries; a cache only.
    with contextlib.suppress(FileNotFoundError):
        (rootfs / "var/cache/ldconfig/aux-cache").unlink()
    # /etc/shadow's third field is the day the accounts were made (days since 1970). Empty means
    # "no password ageing"; every account in a fresh image is locked ('*') anyway.
    shadow = rootfs / "etc/shadow"
    if shadow.is_file() and not shadow.is_symlink():
        lines = []
        for line in shadow.read_text().splitlines():
            fields = line.split(":")
            if len(fields) == 9 and fields[2].isdigit():
                fields[2] = ""
            lines.append(":".join(fields))
        st = shadow.stat()
        shadow.write_text("".join(f"{line}\n" for line in lines))
        os.chmod(shadow, stat.S_IMODE(st.st_mode))


def strip_privileges(rootfs: Path) -> list[str]:
    """Remove every setuid/setgid bit and file capability; returns what was stripped."""
    stripped = []
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                continue
            if st.st_mode & (stat.S_ISUID | stat.S_ISGID) and not stat.S_ISDIR(st.st_mode):
                os.chmod(path, stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
                stripped.append(os.path.relpath(path, rootfs))
            try:
                os.removexattr(path, "security.capability", follow_symlinks=False)
                stripped.append(os.path.relpath(path, rootfs) + " (capability)")
            except OSError:
                pass
    return stripped


def content_hash(rootfs: Path) -> tuple[str, int, int]:
    """(id, file count, bytes): sha256 over every path, type, mode, owner, link target and content, sorted."""
    digest = hashlib.sha256()
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(rootfs):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, rootfs)
            digest.update(f"{rel}\0{st.st_mode:o}\0{st.st_uid}\0{st.st_gid}\0".encode("utf-8", "surrogateescape"))
            files += 1
            if stat.S_ISLNK(st.st_mode):
                digest.update(os.readlink(path).encode("utf-8", "surrogateescape"))
            elif stat.S_ISREG(st.st_mode):
                size += st.st_size
                with open(path, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        digest.update(chunk)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                digest.update(f"{st.st_rdev}".encode())
            digest.update(b"\n")
    return digest.hexdigest()[:ID_LEN], files, size


# --- packing for a cluster -----------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def pack_image(cfg: Any, image_id: str) -> tuple[Path, str]:
    """<id>.tar of the image directory (rootfs + manifest) and its sha256, made once."""
    images = Path(cfg.images_dir)
    resolve_image(cfg, image_id)
    packed = images / f"{image_id}.tar"
    sums = images / f"{image_id}.tar.sha256"
    if packed.exists() and sums.exists():
        return packed, sums.read_text().split()[0]
    partial = images / f".{image_id}.tar.partial"
    _run(["tar", "--numeric-owner", "--xattrs", "-C", str(images), "-cf", str(partial), image_id], "tar")
    checksum = sha256_file(partial)
    os.rename(partial, packed)
    sums.write_text(f"{checksum}  {packed.name}\n")
    _note_packed(images, image_id, packed.name, checksum)
    return packed, checksum


def _note_packed(images: Path, image_id: str, name: str, checksum: str) -> None:
    """Record the packed file's sha256 in the manifest (after packing: the archive holds the manifest
    as it was before). Written atomically; the manifest is not part of the content hash."""
    path = images / image_id / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        manifest = {"id": image_id}
    if manifest.get("packed") == {"file": name, "sha256": checksum}:
        return
    manifest["packed"] = {"file": name, "sha256": checksum}
    tmp = path.with_name(f".manifest.json.{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)


def install_pending(cfg: Any, archive: Path) -> bool:
    """What check mode says about install_packed: False when the archive's image is installed and current."""
    named = archive.name.removesuffix(".tar")
    return not (ID_RE.match(named) and (Path(cfg.images_dir) / named / "rootfs").is_dir() and current_image(cfg) == named)


def install_packed(cfg: Any, archive: Path, expected_sha256: str, make_current: bool = True) -> tuple[bool, str]:
    """Verify and unpack an image archive from another node; nothing half-copied is ever used."""
    import shutil
    import tempfile

    images = Path(cfg.images_dir)
    images.mkdir(mode=0o755, parents=True, exist_ok=True)
    named = archive.name.removesuffix(".tar")
    if ID_RE.match(named) and (images / named / "rootfs").is_dir():
        # Installed (and verified) before: only make it current.
        return (set_current(cfg, named) if make_current else False), named
    actual = sha256_file(archive)
    if actual != expected_sha256:
        raise JailError(f"image archive {archive} is corrupt or partial: sha256 {actual}, expected {expected_sha256}")
    work = Path(tempfile.mkdtemp(prefix=".unpack-", dir=images))
    try:
        _run(["tar", "--numeric-owner", "--xattrs", "-C", str(work), "-xf", str(archive)], "tar")
        entries = os.listdir(work)
        if len(entries) != 1 or not ID_RE.match(entries[0]):
            raise JailError(f"image archive {archive} does not hold exactly one image directory: {entries[:5]}")
        image_id = entries[0]
        unpacked = work / image_id
        found = content_hash(unpacked / "rootfs")[0]
        if found != image_id:
            raise JailError(f"image archive {archive}: content hash {found} does not match its id {image_id}")
        changed = False
        if not (images / image_id / "rootfs").is_dir():
            os.rename(unpacked, images / image_id)
            _note_packed(images, image_id, archive.name, actual)
            changed = True
        manifest = read_manifest(cfg, image_id)
        if manifest.get("recipe_digest"):
            _record_recipe(images, manifest["recipe_digest"], image_id)
        if make_current:
            changed |= set_current(cfg, image_id)
        return changed, image_id
    finally:
        shutil.rmtree(work, ignore_errors=True)


def verify_image(cfg: Any, image_id: str) -> None:
    """Recompute the content hash; a changed or truncated image is refused."""
    rootfs = image_rootfs(cfg, resolve_image(cfg, image_id))
    found = content_hash(rootfs)[0]
    if found != image_id:
        raise JailError(f"image {image_id} is corrupt: its content hash is now {found}")
