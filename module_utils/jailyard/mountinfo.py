"""One read of /proc/self/mountinfo, indexed by mount point."""

from __future__ import annotations

from .record import Record


class MountInfo(Record):
    _fields = ("mount_id", "parent_id", "root", "target", "options", "fstype", "source")
    __slots__ = _fields
    mount_id: int
    parent_id: int
    root: str
    target: str
    options: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "surrogateescape")


def read_mountinfo(path: str = "/proc/self/mountinfo") -> list[MountInfo]:
    with open(path) as fh:
        text = fh.read()
    mounts = []
    for line in text.splitlines():
        parts = line.split(" ")
        sep = parts.index("-")
        mounts.append(
            MountInfo(
                mount_id=int(parts[0]),
                parent_id=int(parts[1]),
                root=_unescape(parts[3]),
                target=_unescape(parts[4]),
                options=parts[5],
                fstype=parts[sep + 1],
                source=_unescape(parts[sep + 2]),
            )
        )
    return mounts


def mounts_under(mounts: list[MountInfo], root: str) -> list[MountInfo]:
    """Mounts at root or below it, in mount order (deepest last)."""
    prefix = root.rstrip("/") + "/"
    return [m for m in mounts if m.target == root or m.target.startswith(prefix)]


def jails_with_mounts(mounts: list[MountInfo], jails_dir: str) -> dict[str, list[MountInfo]]:
    """Jail name -> its mounts, for every jail root under jails_dir that has any mount."""
    prefix = jails_dir.rstrip("/") + "/"
    result: dict[str, list[MountInfo]] = {}
    for m in mounts:
        if m.target.startswith(prefix):
            name = m.target[len(prefix) :].split("/", 1)[0]
            result.setdefault(name, []).append(m)
    return result
