"""One read of /proc/self/mountinfo, indexed by mount point.

The fallback of jailyard.mounttable, which asks the kernel (listmount, statmount) where it can.
"""

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

    @classmethod
    def make(cls, mount_id: int, parent_id: int, root: str, target: str, options: str, fstype: str, source: str) -> MountInfo:
        """A record from its fields in order, without Record's checks (50,000 of them per read)."""
        self = object.__new__(cls)
        put = object.__setattr__
        put(self, "mount_id", mount_id)
        put(self, "parent_id", parent_id)
        put(self, "root", root)
        put(self, "target", target)
        put(self, "options", options)
        put(self, "fstype", fstype)
        put(self, "source", source)
        return self


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
            MountInfo.make(
                int(parts[0]),
                int(parts[1]),
                _unescape(parts[3]),
                _unescape(parts[4]),
                parts[5],
                parts[sep + 1],
                _unescape(parts[sep + 2]),
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
