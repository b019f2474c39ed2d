"""The image store: which base images a node holds, which is current, which are in use, gc.

Layout under images_dir:
  <id>/rootfs/          the read-only tree every jail mounts (id = content hash)
  <id>/manifest.json    recipe, build time, file count, size, what was stripped, packed sha256
  recipes/<recipe>      symlink -> <id>: what a set of inputs built (so re-runs rebuild nothing)
  current               symlink -> <id>, swapped atomically
  <id>.tar + .sha256    the packed image copied to other nodes (made on demand)
  .incoming/<id>.tar    where the role copies it on the other nodes (verified before use)

Building, packing and installing images is imagebuild.py: the mount step's full
path (lifecycle) imports this module only, so it stays free of debootstrap, tar
and hashing code.
"""

from __future__ import annotations

# shutil is imported where images are removed: mounting a jail only resolves an id.
import json
import os
import re
from pathlib import Path
from typing import Any

from .errors import JailError
from .mountinfo import read_mountinfo

ID_RE = re.compile(r"^[0-9a-f]{16,64}$")
# What may even be looked up: hex only, so an id can never name a path outside images_dir.
LOOKUP_RE = re.compile(r"^[0-9a-f]{1,64}$")


# --- ids, current, lookups --------------------------------------------------------


def resolve_image(cfg: Any, image: str) -> str:
    """'current' or an id -> an id whose rootfs exists."""
    images = str(cfg.images_dir)  # plain strings: a bulk mount asks once per jail (issue 21)
    if image == "current":
        try:
            image = os.readlink(f"{images}/current")
        except FileNotFoundError:
            raise JailError(f"no current image in {images}: build one with the jail_base_image role") from None
    if not LOOKUP_RE.match(image):
        raise JailError(f"invalid image id {image!r}: expected 'current' or lowercase hex digits")
    if not os.path.isdir(f"{images}/{image}/rootfs"):
        raise JailError(f"image {image!r} does not exist in {images}")
    return image


def image_rootfs(cfg: Any, image_id: str) -> Path:
    """The tree jails mount. Images are plain directories (measured: see the role's README), so
    there is nothing to mount first; jails bind it read-only, nosuid, nodev."""
    key = (str(cfg.images_dir), image_id)
    rootfs = _ROOTFS.get(key)
    if rootfs is None:
        if not LOOKUP_RE.match(image_id):
            raise JailError(f"invalid image id {image_id!r}: expected lowercase hex digits")
        rootfs = _ROOTFS[key] = Path(key[0]) / image_id / "rootfs"
    return rootfs


# image_rootfs by (images dir, id): a bulk converge asks once per jail, mostly for one image (issue 21).
_ROOTFS: dict[tuple[str, str], Path] = {}


def current_image(cfg: Any) -> str | None:
    try:
        return os.readlink(Path(cfg.images_dir) / "current")
    except FileNotFoundError:
        return None


def set_current(cfg: Any, image_id: str) -> bool:
    images = Path(cfg.images_dir)
    if current_image(cfg) == image_id:
        return False
    tmp = images / f".current.{os.getpid()}"
    with _suppress_missing():
        tmp.unlink()
    os.symlink(image_id, tmp)
    os.rename(tmp, images / "current")
    return True


def all_images(cfg: Any) -> list[str]:
    try:
        return sorted(e for e in os.listdir(cfg.images_dir) if ID_RE.match(e) and (Path(cfg.images_dir) / e / "rootfs").is_dir())
    except FileNotFoundError:
        return []


def images_in_use(cfg: Any) -> set[str]:
    """Images named by any tenant's spec or plan, or mounted anywhere on the node."""
    used: set[str] = set()
    tenants = Path(cfg.tenants_dir)
    try:
        names = os.listdir(tenants)
    except FileNotFoundError:
        names = []
    for name in names:
        try:
            spec = json.loads((tenants / name / "tenant.json").read_text())
            used.update(v for v in (spec.get("image_id"), spec.get("image")) if v and v != "current")
        except (OSError, ValueError):
            pass
        try:
            for line in (tenants / name / "plan").read_text().splitlines():
                if line.startswith("image "):
                    used.add(line.split()[1])
        except OSError:
            pass
    prefix = f"{Path(cfg.images_dir).resolve()}/"
    for m in read_mountinfo():
        # A bind mount shows the path inside its filesystem as root; match on the image id component.
        for text in (m.root, m.options, m.target):
            for match in re.finditer(r"/images/([0-9a-f]{16,64})/", text + "/"):
                used.add(match.group(1))
        if m.target.startswith(prefix):
            used.add(m.target[len(prefix) :].split("/", 1)[0])
    return used


def list_images(cfg: Any) -> list[dict[str, Any]]:
    current = current_image(cfg)
    used = images_in_use(cfg)
    rows = []
    for image_id in all_images(cfg):
        manifest = read_manifest(cfg, image_id)
        rows.append(
            {
                "id": image_id,
                "current": image_id == current,
                "in_use": image_id in used,
                "created": manifest.get("created", ""),
                "size": manifest.get("size", 0),
                "files": manifest.get("files", 0),
                "suite": manifest.get("recipe", {}).get("suite", ""),
            }
        )
    return rows


def read_manifest(cfg: Any, image_id: str) -> dict[str, Any]:
    try:
        return json.loads((Path(cfg.images_dir) / image_id / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def gc_images(cfg: Any, check: bool = False) -> list[str]:
    """Remove images that are neither current nor in use; returns their ids."""
    import shutil

    current = current_image(cfg)
    used = images_in_use(cfg)
    images = Path(cfg.images_dir)
    removed = []
    for image_id in all_images(cfg):
        if image_id == current or image_id in used:
            continue
        removed.append(image_id)
        if not check:
            # Rename first so a reader never sees half an image, then delete.
            doomed = images / f".gc-{image_id}"
            os.rename(images / image_id, doomed)
            shutil.rmtree(doomed)
            # Its packed forms too, here (build host) and where the role copied it (other nodes).
            for packed in (images / f"{image_id}.tar", images / f"{image_id}.tar.sha256", images / ".incoming" / f"{image_id}.tar"):
                with _suppress_missing():
                    packed.unlink()
            _drop_recipes(images, image_id)
    return removed


def _drop_recipes(images: Path, image_id: str) -> None:
    recipes = images / "recipes"
    try:
        entries = os.listdir(recipes)
    except FileNotFoundError:
        return
    for entry in entries:
        with _suppress_missing():
            if os.readlink(recipes / entry) == image_id:
                (recipes / entry).unlink()


class _suppress_missing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
        return exc_type is not None and issubclass(exc_type, FileNotFoundError)  # type: ignore[arg-type]
