"""Tenant root (issue 14): an admin tenant runs as uid 0 of a user namespace mapping its own range of
host ids, administers its overlay, and gets nothing of the host. Every attack runs as tenant root.

The node is the launcher tests' one (conftest.py): a busybox image, a setuid jailrun of this tree.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from jailyard import idmap
from jailyard.lifecycle import converge

HERE = Path(__file__).resolve().parent
ADMIN, ADMIN_UID = "root1", 47120
PLAIN = "alice"  # a plain tenant of the node


def tree_hash(root: Path) -> str:
    """Content, owner, mode and link target of every entry below root: the image must keep all of them."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for entry in sorted(dirnames + filenames):
            p = Path(dirpath, entry)
            st = p.lstat()
            h.update(f"{p.relative_to(root)} {st.st_mode} {st.st_uid} {st.st_gid}".encode())
            if p.is_symlink():
                h.update(os.readlink(p).encode())
            elif p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def admin(node):
    """An admin overlay tenant, with the static admin_attack program in its home; purged at the end."""
    build = node.base / "build" / "admin_attack"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(build), str(HERE / "admin_attack.c")], check=True)
    image = node.cfg.images_dir / "0123456789abcdef" / "rootfs"
    before = tree_hash(image)
    converge(node.cfg, {"name": ADMIN, "uid": ADMIN_UID, "layout": "overlay", "admin": True, "state": "present"})
    home = node.home(ADMIN)
    target = home / "attack"
    target.write_bytes(build.read_bytes())
    target.chmod(0o755)
    os.chown(target, ADMIN_UID, ADMIN_UID)
    try:
        yield idmap.range_base(node.cfg.uid_min, ADMIN_UID)
    finally:
        converge(node.cfg, {"name": ADMIN, "state": "absent", "purge": True, "force": True})
        assert tree_hash(image) == before, "the shared base image changed"


def run(node, *argv: str, opts: tuple[str, ...] = ()):
    return node.run(*opts, ADMIN, "--", *argv)


def attack(node, *argv: str, opts: tuple[str, ...] = ()):
    return run(node, f"/home/{ADMIN}/attack", *argv, opts=opts)


# ---- what tenant root can do ------------------------------------------------------------


def test_admin_tenant_runs_as_root_of_its_own_user_namespace(node, admin: int) -> None:
    r = run(node, "sh", "-c", "id -u; id -g; cat /proc/self/uid_map")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[:2] == ["0", "0"]
    maps = [line.split() for line in lines[2:] if line.strip()]
    # 0..65535 to the tenant's range, its own uid to itself (so its home stays its own): never host 0.
    assert ["0", str(admin), str(ADMIN_UID)] in maps
    assert [str(ADMIN_UID), str(ADMIN_UID), "1"] in maps
    assert all(m[1] != "0" for m in maps)


def test_tenant_root_installs_into_usr_local_and_it_persists_under_mapped_ids(node, admin: int) -> None:
    """Issue 14: writing /usr/local/bin was refused to a tenant; tenant root's writes persist into the
    next session and the host sees them under the tenant's mapped ids, never host uid 0."""
    r = run(
        node,
        "sh",
        "-c",
        "mkdir -p /usr/local/bin && printf '#!/bin/sh\\necho hello from $(id -u)\\n' > /usr/local/bin/hi && chmod 755 /usr/local/bin/hi && chown 100:100 /etc",
    )
    assert r.returncode == 0, r.stderr
    r = run(node, "hi")
    assert (r.returncode, r.stdout) == (0, "hello from 0\n"), r.stderr
    upper = node.cfg.tenants_dir / ADMIN / "upper"
    st = (upper / "usr/local/bin/hi").stat()
    assert (st.st_uid, st.st_gid) == (admin, admin)
    st = (upper / "etc").stat()
    assert (st.st_uid, st.st_gid) == (admin + 100, admin + 100)
    run(node, "chown", "0:0", "/etc")


def test_tenant_roots_capabilities_are_the_documented_set_and_only_inside(node, admin: int) -> None:
    """CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP SYS_CHROOT AUDIT_WRITE SETFCAP (design.md, "Tenant root"):
    no SYS_ADMIN, DAC_READ_SEARCH, SYS_PTRACE, NET_*, MKNOD; and all of them in its own user namespace, not the host's."""
    bits = (0, 1, 3, 4, 5, 6, 7, 8, 18, 29, 31)
    want = f"{sum(1 << b for b in bits):016x}"
    r = run(node, "sh", "-c", "grep -E '^Cap(Eff|Prm|Bnd):' /proc/self/status; readlink /proc/self/ns/user")
    assert r.returncode == 0, r.stderr
    caps = dict(line.split(":\t") for line in r.stdout.splitlines()[:3])
    assert caps == {"CapPrm": want, "CapEff": want, "CapBnd": want}
    assert r.stdout.splitlines()[3] != os.readlink("/proc/self/ns/user"), "a user namespace of its own"


def test_services_tenant_root_starts_end_with_the_session(node, admin: int) -> None:
    r = run(node, "sh", "-c", "sleep 1000 & echo started")
    assert (r.returncode, r.stdout) == (0, "started\n"), r.stderr
    left = subprocess.run(["pgrep", "-u", str(admin), "sleep"], capture_output=True, text=True).stdout
    assert left == "", f"tenant root's background sleep outlived its session: {left}"


def test_the_image_looks_root_owned_inside(node, admin: int) -> None:
    r = run(node, "stat", "-c", "%u:%g", "/bin/busybox", "/")
    assert (r.returncode, r.stdout) == (0, "0:0\n0:0\n"), r.stderr


def test_user_option_runs_as_the_tenant_user_of_the_jails_passwd(node, admin: int) -> None:
    r = node.run("--user", ADMIN, ADMIN, "--", "sh", "-c", "id -u; echo $HOME; cat /proc/self/status | grep CapEff")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:3] == [str(ADMIN_UID), f"/home/{ADMIN}", "CapEff:\t0000000000000000"]
    r = node.run("--user", "nosuchuser", ADMIN, "--", "true")
    assert r.returncode == 120 and "no such user" in r.stderr


def test_plain_tenant_refuses_user_option_and_is_never_root(node, admin: int) -> None:
    r = node.run("--user", "root", PLAIN, "--", "id", "-u")
    assert r.returncode == 120 and "not an admin tenant" in r.stderr
    r = node.run(PLAIN, "--", "sh", "-c", "id -u; cat /proc/self/uid_map; grep CapEff /proc/self/status")
    assert r.returncode == 0
    uid, umap, caps = r.stdout.splitlines()[:3]
    assert uid == "47101" and umap.split() == ["0", "0", "4294967295"] and caps == "CapEff:\t0000000000000000"
    r = node.run(PLAIN, "--", "/bin/attack", "euid")
    assert r.returncode == 1, r.stdout


# ---- what tenant root cannot do -----------------------------------------------------------


@pytest.mark.parametrize(
    "what",
    [
        "module",
        "finit_module",
        "settime",
        "settimeofday",
        "iopl",
        "ioperm",
        "rawdisk",
        "remount",
        "open_tree",
        "fsopen",
        "userns",
        "handle",
        "keyctl",
        "add_key",
        "bpf",
        "perf",
        "userfaultfd",
        "kexec",
        "io_uring",
        "hostname",
        "netdown",
        "sysrq",
        "sysctl",
        "fds",
    ],
)
def test_tenant_root_is_refused(node, admin: int, what: str) -> None:
    r = attack(node, what)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout.startswith("STOPPED")


def test_tenant_root_overwriting_the_image_changes_only_its_upper_layer(node, admin: int) -> None:
    image = node.cfg.images_dir / "0123456789abcdef" / "rootfs"
    before = tree_hash(image)
    r = run(node, "sh", "-c", "echo pwned > /bin/busybox.new && cat /bin/busybox.new > /etc/debian_version && rm -f /bin/sh && echo ok")
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
    assert tree_hash(image) == before, "the shared image changed"
    assert (image / "etc/debian_version").read_text() == "12.0\n"
    upper = node.cfg.tenants_dir / ADMIN / "upper"
    assert (upper / "etc/debian_version").read_text() == "pwned\n"
    run(node, "/bin/busybox", "sh", "-c", "rm /etc/debian_version /bin/busybox.new && ln -s busybox /bin/sh")
    # Whiteouts of the removed /bin/sh went into the upper too; after the link the jail is whole again.
    assert run(node, "sh", "-c", "echo back").stdout == "back\n"


def test_tenant_root_cannot_change_the_host_network_even_with_net(node, admin: int) -> None:
    """With --net (if allowed) the session shares the host's network namespace, owned by the host: no capability there."""
    converge(node.cfg, {"name": ADMIN, "net": True, "state": "present"})
    try:
        r = attack(node, "netdown", opts=("--net",))
        assert r.returncode == 1, r.stdout
    finally:
        converge(node.cfg, {"name": ADMIN, "net": False, "state": "present"})


def test_tenant_root_cannot_mount(node, admin: int) -> None:
    r = attack(node, "mount", "/tmp")
    assert r.returncode == 1, r.stdout
    r = attack(node, "mknod", "/tmp/null")
    assert r.returncode == 1, r.stdout


def test_tenant_root_cannot_reach_other_tenants_or_host_files(node, admin: int) -> None:
    secret = node.home(PLAIN) / "secret"
    secret.write_text("alice's\n")
    os.chown(secret, 47101, 47101)
    secret.chmod(0o600)
    for path in (
        f"/home/{PLAIN}/secret",
        f"/proc/1/root/home/{PLAIN}/secret",
        f"{secret}",
        "/proc/1/root/etc/shadow",
        "/proc/1/environ",
        "/proc/1/fd/0",
        "/etc/shadow",  # the image has none; the host's is not there
    ):
        r = attack(node, "read", path)
        assert r.returncode == 1, (path, r.stdout)
    r = run(node, "sh", "-c", "ls /proc | grep -c '^[0-9]'")
    assert int(r.stdout) <= 4, r.stdout  # PID 1, sh, grep, ls: nothing outside the session


def test_tenant_root_cannot_kill_outside_processes(node, admin: int) -> None:
    host = subprocess.Popen(["sleep", "60"])
    try:
        r = attack(node, "kill", str(host.pid))
        # The host pid means nothing (or a jail process) inside: the host's sleep lives on.
        assert host.poll() is None, r.stdout
    finally:
        host.kill()
        host.wait()


def test_setuid_and_device_files_made_by_tenant_root_are_powerless_on_the_host(node, admin: int) -> None:
    r = run(
        node,
        "sh",
        "-c",
        "cp /bin/busybox /home/suid && chmod 4755 /home/suid && chown 0:0 /home/suid; mkdir -p /usr/local/sbin && cp /bin/busybox /usr/local/sbin/id && chmod 4755 /usr/local/sbin/id",
    )
    assert r.returncode == 0, r.stderr
    for path in (node.cfg.tenants_dir / ADMIN / "upper/usr/local/sbin/id",):
        st = path.stat()
        assert st.st_uid == admin and st.st_uid != 0, "tenant root's setuid-root file is owned by its mapped id on the host"
    # Host users cannot reach the upper layer by path (the tenant dir is 0700), and through the
    # mounted jail the file is nosuid: it runs as the caller.
    tdir = node.cfg.tenants_dir / ADMIN
    assert tdir.stat().st_mode & 0o777 == 0o700
    r = subprocess.run(["/bin/ls", str(tdir / "upper/usr")], capture_output=True, text=True, user=65534)
    assert r.returncode != 0
    r = subprocess.run([str(node.cfg.jails_dir / ADMIN / "usr/local/sbin/id"), "-u"], capture_output=True, text=True, user=65534)
    assert r.stdout == "65534\n", (r.stdout, r.stderr)
    # Tenant root's uid 0 cannot be chowned to outside the map (host root is not in it).
    r = run(node, "sh", "-c", "chown 65536 /usr/local/sbin/id")
    assert r.returncode != 0


def test_cgroup_limits_hold_for_tenant_root(node, admin: int, tmp_path: Path) -> None:
    meta = tmp_path / "meta"
    r = node.run("--procs", "20", "--timeout", "60", "--meta", str(meta), ADMIN, "--", "/bin/attack", "forkbomb", "500")
    assert "killed_by=procs" in meta.read_text() or r.returncode != 0, (r.stdout, meta.read_text())
    assert "WORKED" not in r.stdout


# ---- purge releases ---------------------------------------------------------------------------


def test_purge_removes_the_upper_layer_and_releases_the_range(node) -> None:
    name, uid = "root2", 47121
    converge(node.cfg, {"name": name, "uid": uid, "layout": "overlay", "admin": True, "state": "present"})
    r = node.run(name, "--", "sh", "-c", "echo x > /opt")
    assert r.returncode == 0, r.stderr
    assert (node.cfg.tenants_dir / name / "upper/opt").exists()
    converge(node.cfg, {"name": name, "state": "absent", "purge": True})
    assert not (node.cfg.tenants_dir / name).exists()
    assert not (node.cfg.uid_index() / str(uid)).exists()
    # The range goes with the uid: a new tenant with that uid gets it again.
    res = converge(node.cfg, {"name": "root3", "uid": uid, "layout": "overlay", "admin": True, "state": "present"})
    assert res.after["spec"]["admin_ids"] == idmap.range_base(node.cfg.uid_min, uid)
    converge(node.cfg, {"name": "root3", "state": "absent", "purge": True})
