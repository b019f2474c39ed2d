"""jailyard.kernel against the real kernel: each binding, its errors, and what the mount step imports."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from jailtest import REPO
from jailyard import kernel
from jailyard.errors import JailError
from jailyard.mountinfo import read_mountinfo

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def dir_fd(path: Path) -> int:
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


@pytest.mark.parametrize("attr_call", ["open_tree_attr", "open_tree, then mount_setattr"])
def test_bind_clone_read_only_move_and_unmount(tmp_path: Path, mount_guard: None, attr_call: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The clone's attributes set in open_tree_attr(2) (6.15), or after it by mount_setattr, the fallback."""
    monkeypatch.setattr(kernel, "_OPEN_TREE_ATTR", attr_call == "open_tree_attr")
    src, target = tmp_path / "src", tmp_path / "target"
    src.mkdir()
    target.mkdir()
    # The source a shared mount of its own: a clone of it joins its peer group unless made private.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "jailyard-test", str(src)], check=True)
    subprocess.run(["mount", "--make-shared", str(src)], check=True)
    (src / "file").write_text("from src\n")
    assert not kernel.is_mount_root(str(target))
    fd, tfd = dir_fd(src), dir_fd(target)
    try:
        mfd = kernel.open_tree_clone(fd, attrs=kernel.MOUNT_ATTR_RDONLY | kernel.MOUNT_ATTR_NOEXEC)
        kernel.move_mount_to_fd(mfd, tfd, "target")
        os.close(mfd)
    finally:
        os.close(fd)
        os.close(tfd)
    assert kernel.is_mount_root(str(target))
    # Many at once, one buffer: a mount root, a plain directory, nothing there, a path through a file.
    paths = [str(target), str(tmp_path), str(tmp_path / "missing"), str(src / "file" / "below")]
    assert kernel.mount_roots(paths) == [True, False, False, False] == [kernel.is_mount_root(p) for p in paths]
    (tmp_path / "link").symlink_to(target)
    assert kernel.mount_roots([str(tmp_path / "link")]) == [False]  # a symlink to a mount root is not followed
    assert (target / "file").read_text() == "from src\n"
    with pytest.raises(OSError) as exc:
        (target / "new").write_text("x")
    assert exc.value.errno == errno.EROFS
    flags = os.statvfs(target).f_flag
    assert flags & os.ST_RDONLY and flags & os.ST_NOEXEC
    (mine,) = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if line.split()[4] == str(target)]
    assert "shared:" not in mine and "master:" not in mine  # private: nothing propagates into or out of a jail
    assert kernel._OPEN_TREE_ATTR == (attr_call == "open_tree_attr")  # the call this host has (6.15+) was the one used
    sfd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        kernel.syncfs(sfd)  # a real filesystem: no error
    finally:
        os.close(sfd)
    kernel.umount(str(target))
    assert not kernel.is_mount_root(str(target))
    with pytest.raises(JailError, match=rf"^umount {target}: Invalid argument$"):
        kernel.umount(str(target))
    kernel.umount(str(src))


def test_overlay_writes_go_to_the_upper_layer(tmp_path: Path, mount_guard: None) -> None:
    lower, upper, work, target = (tmp_path / d for d in ("lower", "upper", "work", "target"))
    for d in (lower, upper, work, target):
        d.mkdir()
    (lower / "base").write_text("lower\n")
    mfd = kernel.overlay_mount_fd(str(lower), str(upper), str(work), kernel.MOUNT_ATTR_NOSUID)
    tfd = dir_fd(target)
    try:
        kernel.move_mount_to_fd(mfd, tfd, "target")
    finally:
        os.close(mfd)
        os.close(tfd)
    (target / "base").write_text("changed\n")
    assert (lower / "base").read_text() == "lower\n"
    assert (upper / "base").read_text() == "changed\n"
    assert kernel.is_mount_root(str(target))
    # The expiry pass tells overlay jails from bind jails by this: an overlay is a filesystem of its own.
    assert os.stat(target).st_dev not in (os.stat(lower).st_dev, os.stat(tmp_path).st_dev)
    kernel.umount(str(target), detach=True)
    assert not kernel.is_mount_root(str(target))


def test_errors_name_the_call_and_the_errno(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_PATH)
    os.close(fd)  # a descriptor that is no longer open
    with pytest.raises(JailError, match=r"^open_tree <fd>: Bad file descriptor$"):
        kernel.open_tree_clone(fd)
    with pytest.raises(JailError, match=r"^move_mount onto x: Bad file descriptor$"):
        kernel.move_mount_to_fd(fd, fd, "x")
    with pytest.raises(JailError, match=r"^overlay option lowerdir=.*/missing: No such file or directory$"):
        kernel.overlay_mount_fd(str(tmp_path / "missing"), str(tmp_path), str(tmp_path), 0)
    # Nothing there, or a file in the way: not mounted, no error.
    assert not kernel.is_mount_root(str(tmp_path / "missing"))
    (tmp_path / "file").write_text("")
    assert not kernel.is_mount_root(str(tmp_path / "file" / "below"))
    assert kernel.is_mount_root("/proc") and kernel.is_mount_root("/")
    with pytest.raises(JailError, match=r"^statx .*: File name too long$"):
        kernel.is_mount_root("/" + "x" * 5000)


def test_the_mount_step_imports_only_light_modules() -> None:
    # Every cold launch pays for each import here (see bin/jailyard_mount.py): the
    # fast path must stay clear of these, which cost 0.3-2 ms each. The script runs
    # as the launcher runs it (-I -S), its path lookup included, short of main().
    script = REPO / "bin" / "jailyard-mount"
    heavy = ["os", "ctypes", "types", "pathlib", "dataclasses", "re", "json", "typing", "contextlib", "shutil", "tempfile"]
    heavy += ["hashlib", "subprocess", "jailyard.image", "jailyard.imagebuild"]
    code = (
        f"import sys; path = {str(script)!r}; "
        "exec(compile(open(path).read(), path, 'exec'), {'__file__': path, '__name__': 'jailyard_mount_script'}); "
        "print(sys.modules['jailyard_mount'].__file__, sys.modules['jailyard'].__file__); "
        f"print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run(["/usr/bin/python3", "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    found, loaded = out.stdout.split("\n", 1)
    assert found.split() == [f"{REPO}/bin/jailyard_mount.py", f"{REPO}/bin/../module_utils/jailyard/__init__.py"]
    assert loaded.split() == []


def test_the_mount_steps_full_path_never_imports_the_image_build_code() -> None:
    # No plan yet or a new current image: the step goes through lifecycle, which
    # reads the image store (jailyard.image) only; building, hashing and packing
    # (jailyard.imagebuild) are for the jail_image module and jailctl's builders.
    build = ["jailyard.imagebuild", "hashlib", "subprocess", "tempfile", "tarfile"]
    code = (
        f"import sys; sys.path.insert(0, {str(REPO / 'module_utils')!r}); "
        "import jailyard.config, jailyard.lifecycle, jailyard.image; "
        f"print(' '.join(m for m in {build!r} if m in sys.modules))"
    )
    out = subprocess.run(["/usr/bin/python3", "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []


def mount_tmpfs(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "jailyard-test", str(target)], check=True)


def test_listmount_lists_every_mount_below_at_any_depth_and_statmount_describes_each(tmp_path: Path, mount_guard: None) -> None:
    top = tmp_path / "top"
    mount_tmpfs(top)
    (top / "src").mkdir()
    mount_tmpfs(top / "a")
    mount_tmpfs(top / "a" / "deeper")
    (top / "b").mkdir()
    subprocess.run(["mount", "--bind", "-o", "ro,nosuid", str(top / "src"), str(top / "b")], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro,nosuid", str(top / "b")], check=True)
    top_id, is_root = kernel.mount_id(str(top))
    assert is_root
    assert kernel.mount_id(str(top / "src")) == (top_id, False)
    ids = kernel.listmount(top_id)
    below = [kernel.statmount(i) for i in ids]
    assert [m.point for m in below] == [f"{top}/a", f"{top}/a/deeper", f"{top}/b"]  # the grandchild too, in mount order
    a, deeper, b = below
    assert (a.parent_id, deeper.parent_id, b.parent_id) == (top_id, a.mnt_id, top_id)
    assert (a.fstype, a.source, a.root) == ("tmpfs", "jailyard-test", "/")
    assert (b.fstype, b.root) == ("tmpfs", "/src")
    assert b.attr & kernel.MOUNT_ATTR_RDONLY and b.attr & kernel.MOUNT_ATTR_NOSUID and not a.attr & kernel.MOUNT_ATTR_RDONLY
    # The old ids are mountinfo's.
    by_target = {m.target: m for m in read_mountinfo()}
    assert [(m.mnt_id_old, m.parent_id_old) for m in below] == [(by_target[m.point].mount_id, by_target[m.point].parent_id) for m in below]
    assert kernel.listmount(deeper.mnt_id) == []


def test_statmount_of_an_unmounted_mount_is_none_and_errors_name_the_call(tmp_path: Path, mount_guard: None) -> None:
    gone = tmp_path / "gone"
    mount_tmpfs(gone)
    gone_id, _ = kernel.mount_id(str(gone))
    kernel.umount(str(gone))
    assert kernel.statmount(gone_id) is None
    with pytest.raises(JailError, match=rf"^listmount {gone_id}: No such file or directory$"):
        kernel.listmount(gone_id)
    with pytest.raises(JailError, match=r"^statmount 1: Invalid argument$"):  # not a unique mount id
        kernel.statmount(1)
    with pytest.raises(JailError, match=rf"^statx {tmp_path}/missing: No such file or directory$"):
        kernel.mount_id(str(tmp_path / "missing"))


def test_statmount_grows_its_buffer_for_long_paths(tmp_path: Path, mount_guard: None) -> None:
    # Root and mount point of about 3,000 bytes each: more than the first buffer (5 KiB) holds (EOVERFLOW).
    top = tmp_path / "top"
    mount_tmpfs(top)
    long = "/".join(["d" * 250] * 12)
    (top / "src" / long).mkdir(parents=True)
    (top / "dst" / long).mkdir(parents=True)
    subprocess.run(["mount", "--bind", f"{top}/src/{long}", f"{top}/dst/{long}"], check=True)
    (child,) = kernel.listmount(kernel.mount_id(str(top))[0])
    sm = kernel.statmount(child)
    assert sm.point == f"{top}/dst/{long}" and sm.root == f"/src/{long}"
    assert len(sm.point) + len(sm.root) > kernel._StatmountBuffer._length_ - kernel.STATMOUNT_HEADER


def test_listmount_pages_through_more_mounts_than_one_batch(tmp_path: Path, mount_guard: None) -> None:
    top = tmp_path / "top"
    mount_tmpfs(top)
    count = kernel._LIST_BATCH + 5
    for i in range(count):
        (top / str(i)).mkdir()
    script = f"for i in $(seq 0 {count - 1}); do mount --bind {top}/$i {top}/$i || exit 1; done"
    subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"{script}; {LIST_IN_NS}"],
        check=True,
        env={**os.environ, "TOP": str(top), "COUNT": str(count), "PYTHONPATH": str(REPO / "module_utils")},
    )


# Run inside the private namespace made above (so 4,101 mounts never reach the host's table).
LIST_IN_NS = (
    'python3 -c \'import os; from jailyard import kernel as k; top = os.environ["TOP"]; '
    "ids = k.listmount(k.mount_id(top)[0]); "
    'assert len(ids) == int(os.environ["COUNT"]) == len(set(ids)), len(ids); '
    "assert ids == sorted(ids); "
    'assert {k.statmount(i).point for i in ids[-3:]} <= {f"{top}/{n}" for n in range(int(os.environ["COUNT"]))}\''
)
