"""The base image: content-addressed, idempotent, stripped of privileges, read-only in jails, versioned, verified."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from imagetest import CACHE, bookworm, needs_root_and_debootstrap

from jailtest import make_config
from jailyard.config import Config
from jailyard.errors import JailError
from jailyard.image import current_image, gc_images, image_rootfs, list_images, resolve_image, set_current
from jailyard.imagebuild import (
    JAIL_FILES,
    Recipe,
    content_hash,
    ensure_image,
    host_mirror,
    install_packed,
    install_pending,
    pack_image,
    verify_image,
)
from jailyard.kernel import umount
from jailyard.lifecycle import converge
from jailyard.mountinfo import mounts_under, read_mountinfo


def test_second_build_of_the_same_recipe_changes_nothing(debian_image: tuple[Config, str]) -> None:
    cfg, image_id = debian_image
    again = ensure_image(cfg, bookworm(), CACHE)
    assert again == (False, image_id, [])
    manifest = json.loads((cfg.images_dir / image_id / "manifest.json").read_text())
    assert manifest["id"] == image_id and manifest["files"] > 1000
    assert content_hash(cfg.images_dir / image_id / "rootfs")[0] == image_id
    # A changed input would build: check mode says so without building.
    changed, new_id, actions = ensure_image(cfg, dataclasses.replace(bookworm(), packages=("less",)), CACHE, check=True)
    assert changed and new_id is None and actions[0].startswith("build a bookworm minbase image with 1 extra")
    assert current_image(cfg) == image_id


def test_module_run_twice_reports_no_change(debian_image: tuple[Config, str], tmp_path: Path, run_playbook) -> None:
    cfg, image_id = debian_image
    conf = tmp_path / "jailyard.conf"
    conf.write_text(dataclasses.replace(cfg, path=None).render())
    play = [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {"jail_image": {"suite": "bookworm", "cache_dir": str(CACHE), "config": str(conf)}, "register": "built"},
                {"ansible.builtin.assert": {"that": [f"built.image_id == '{image_id}'"]}},
            ],
        }
    ]
    for args in ((), (), ("--check", "--diff")):
        rc, out = run_playbook(play, *args)
        assert rc == 0, out[-3000:]
        assert "changed=0" in out, out[-3000:]


def test_no_setuid_setgid_file_capability_or_device_node_is_left(debian_image: tuple[Config, str]) -> None:
    cfg, image_id = debian_image
    rootfs = cfg.images_dir / image_id / "rootfs"
    manifest = json.loads((cfg.images_dir / image_id / "manifest.json").read_text())
    assert "usr/bin/passwd" in manifest["stripped_privileges"]  # it was there, and it was stripped
    offenders = []
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                continue
            if not stat.S_ISDIR(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                offenders.append(path)
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                offenders.append(path + " (device)")
            if "security.capability" in os.listxattr(path, follow_symlinks=False):
                offenders.append(path + " (capability)")
    assert offenders == []


def test_image_is_readonly_and_nosuid_inside_a_jail(debian_image: tuple[Config, str], tmp_path: Path, mount_guard: None) -> None:
    cfg, image_id = debian_image
    jcfg = make_config(tmp_path, cfg.images_dir)
    try:
        converge(jcfg, {"name": "alice", "uid": 10001})
        root = jcfg.jail_root("alice")
        base = mounts_under(read_mountinfo(), str(root))[0]
        assert base.root.endswith(f"{image_id}/rootfs")
        assert {"ro", "nosuid", "nodev"} <= set(base.options.split(","))
        with pytest.raises(OSError) as err:
            (root / "usr" / "bin" / "planted").write_text("x")
        assert err.value.errno == 30  # EROFS
        assert (root / "etc" / "debian_version").read_text().startswith("12.")
        assert not (root / "usr" / "bin" / "passwd").stat().st_mode & stat.S_ISUID
    finally:
        converge(jcfg, {"name": "alice", "state": "absent", "purge": True, "force": True})


def derive_image(cfg: Config, image_id: str, marker: str) -> str:
    """A second image version: the first one plus a file (as a new package would add)."""
    work = cfg.images_dir / f".derive-{marker}"
    subprocess.run(["cp", "-a", str(cfg.images_dir / image_id), str(work)], check=True)
    (work / "rootfs" / "etc" / "jailyard-marker").write_text(marker)
    new_id = content_hash(work / "rootfs")[0]
    os.rename(work, cfg.images_dir / new_id)
    return new_id


def test_new_version_coexists_with_a_pinned_jail_and_gc_removes_only_unused(
    debian_image: tuple[Config, str], tmp_path: Path, mount_guard: None
) -> None:
    cfg, first = debian_image
    jcfg = make_config(tmp_path, cfg.images_dir)
    second = derive_image(cfg, first, "v2")
    third = derive_image(cfg, first, "v3")
    try:
        converge(jcfg, {"name": "alice", "uid": 10001})
        set_current(cfg, second)
        # The mounted jail keeps the first image until its next mount.
        assert mounts_under(read_mountinfo(), str(jcfg.jail_root("alice")))[0].root.endswith(f"{first}/rootfs")
        rows = {r["id"]: r for r in list_images(jcfg)}
        assert rows[first]["in_use"] and rows[second]["current"] and not rows[third]["in_use"]
        assert gc_images(jcfg, check=True) == [third]
        assert gc_images(jcfg) == [third]
        assert not (cfg.images_dir / third).exists()
        assert (cfg.images_dir / first / "rootfs" / "etc" / "debian_version").exists()
        # Once the jail moves on (next mount), the first image is unused and goes.
        converge(jcfg, {"name": "alice", "state": "unmounted"})
        converge(jcfg, {"name": "alice", "state": "mounted"})
        assert mounts_under(read_mountinfo(), str(jcfg.jail_root("alice")))[0].root.endswith(f"{second}/rootfs")
        # (check mode: the session's image stays for the other tests)
        assert gc_images(jcfg, check=True) == [first]
        assert current_image(cfg) == second
    finally:
        converge(jcfg, {"name": "alice", "state": "absent", "purge": True, "force": True})
        set_current(cfg, first)
        for leftover in (second, third):
            shutil.rmtree(cfg.images_dir / leftover, ignore_errors=True)


def test_packed_image_is_verified_and_a_corrupt_one_refused(debian_image: tuple[Config, str], tmp_path: Path) -> None:
    cfg, image_id = debian_image
    archive, checksum = pack_image(cfg, image_id)
    other = Config(images_dir=tmp_path / "node2" / "images", tenants_dir=tmp_path / "node2" / "tenants")
    # A flipped byte, then a truncated copy: both refused, and nothing of them is left or used.
    corrupt = tmp_path / f"{image_id}.tar"
    shutil.copy(archive, corrupt)
    with open(corrupt, "r+b") as fh:
        fh.seek(os.path.getsize(corrupt) // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(JailError, match=r"is corrupt or partial: sha256 [0-9a-f]{64}, expected " + checksum):
        install_packed(other, corrupt, checksum)
    with open(corrupt, "r+b") as fh:
        fh.truncate(os.path.getsize(archive) // 3)
    with pytest.raises(JailError, match="is corrupt or partial"):
        install_packed(other, corrupt, checksum)
    assert os.listdir(other.images_dir) == []
    assert current_image(other) is None
    assert install_pending(other, archive)
    # The intact archive installs, verified by its content hash, and becomes current.
    changed, installed = install_packed(other, archive, checksum)
    assert changed and installed == image_id and current_image(other) == image_id
    verify_image(other, image_id)
    assert install_packed(other, archive, checksum) == (False, image_id)
    assert not install_pending(other, archive)
    for node in (cfg, other):
        assert json.loads((node.images_dir / image_id / "manifest.json").read_text())["packed"] == {
            "file": archive.name,
            "sha256": checksum,
        }
    # A tree changed after install is caught by verification.
    (other.images_dir / image_id / "rootfs" / "etc" / "hostname").write_text("tampered\n")
    with pytest.raises(JailError, match=f"image {image_id} is corrupt"):
        verify_image(other, image_id)
    os.unlink(archive)
    os.unlink(f"{archive}.sha256")


def test_a_rebuild_gives_the_same_id_and_changes_nothing(debian_image: tuple[Config, str]) -> None:
    """The build is reproducible: the same recipe built again (here, or on another node) has the same id."""
    cfg, image_id = debian_image
    try:
        changed, again, actions = ensure_image(cfg, bookworm(), CACHE, rebuild=True)
        assert (changed, again) == (False, image_id), actions
        assert actions == [f"built a bookworm minbase image with 0 extra packages: the same content as {image_id}, kept"]
        assert sorted(os.listdir(cfg.images_dir)) == sorted(["current", "recipes", image_id]), "no build directory is left behind"
    finally:  # a failed run must not leave the other tests a different current image
        set_current(cfg, image_id)
        for stray in set(os.listdir(cfg.images_dir)) - {"current", "recipes", image_id}:
            shutil.rmtree(cfg.images_dir / stray, ignore_errors=True)


def test_jail_files_are_written_and_are_part_of_the_recipe(debian_image: tuple[Config, str]) -> None:
    cfg, image_id = debian_image
    rootfs = image_rootfs(cfg, image_id)
    for rel, content, mode in JAIL_FILES:
        st = os.lstat(rootfs / rel)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == mode and st.st_uid == 0, rel
        assert (rootfs / rel).read_text() == content
    assert subprocess.run([str(rootfs / "usr/sbin/policy-rc.d")]).returncode == 101  # invoke-rc.d: "forbidden"
    assert (rootfs / "etc/machine-id").read_text() == ""
    # Another hostname is another recipe (check mode: nothing is built).
    other = dataclasses.replace(bookworm(), files=(*JAIL_FILES[:2], ("etc/hostname", "lab\n", 0o644), *JAIL_FILES[3:]))
    assert other.digest() != bookworm().digest() and other.download_digest() == bookworm().download_digest()
    assert ensure_image(cfg, other, CACHE, check=True)[0]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ((("../etc/shadow", "x", 0o644),), "invalid image file path"),
        ((("/etc/hosts", "x", 0o644),), "invalid image file path"),
        ((("etc/hosts", "x", 0o4755),), "invalid mode 4755"),
        ((("etc/hosts", "x", 0o666),), "invalid mode 666"),
        ((("etc/hosts", "x", 0o644), ("etc/hosts", "y", 0o644)), "name a path twice: etc/hosts"),
    ],
)
def test_bad_jail_files_are_refused(files: tuple, message: str) -> None:
    with pytest.raises(JailError, match=message):
        Recipe(mirror="http://deb.debian.org/debian", files=files).validate()


def test_image_ids_are_checked_before_any_path_is_built(tmp_path: Path) -> None:
    cfg = Config(images_dir=tmp_path / "images", tenants_dir=tmp_path / "tenants")
    (tmp_path / "images" / "0123456789abcdef" / "rootfs").mkdir(parents=True)
    assert resolve_image(cfg, "0123456789abcdef") == "0123456789abcdef"
    for bad in ("../../etc", "0123456789ABCDEF", "current/..", "", "0123456789abcdef/../x"):
        with pytest.raises(JailError, match="invalid image id"):
            resolve_image(cfg, bad)
    with pytest.raises(JailError, match="does not exist"):
        resolve_image(cfg, "fedcba9876543210")
    with pytest.raises(JailError, match="no current image"):
        resolve_image(cfg, "current")
    (tmp_path / "images" / "current").symlink_to("../../../etc")
    with pytest.raises(JailError, match="invalid image id"):
        resolve_image(cfg, "current")


def test_host_mirror_reads_deb822_and_one_line_sources(tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    assert host_mirror(apt) == "http://deb.debian.org/debian"  # nothing configured
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.debian.org/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb-src\nURIs: http://src.example/debian\n\n"
        "Types: deb\nEnabled: no\nURIs: http://off.example/debian\n\n"
        "Types: deb\n# a comment: here\nURIs: http://mirror.example/debian/\nSuites: bookworm\nComponents: main\n"
    )
    assert host_mirror(apt) == "http://mirror.example/debian"
    (apt / "sources.list").write_text(
        "# deb http://old.example/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n"
    )
    assert host_mirror(apt) == "http://one.example/debian"


def test_image_rootfs_bind_mounts_read_only_and_nosuid(debian_image: tuple[Config, str], tmp_path: Path, mount_guard: None) -> None:
    cfg, image_id = debian_image
    target = tmp_path / "root"
    target.mkdir()
    subprocess.run(["mount", "--bind", "-o", "ro,nosuid,nodev", str(image_rootfs(cfg, image_id)), str(target)], check=True)
    try:
        opts = next(m.options for m in read_mountinfo() if m.target == str(target))
        assert {"ro", "nosuid", "nodev"} <= set(opts.split(","))
        with pytest.raises(OSError) as err:
            (target / "etc" / "planted").write_text("x")
        assert err.value.errno == 30  # EROFS
    finally:
        umount(str(target), detach=True)


def test_gc_keeps_an_image_a_tenant_spec_names_even_when_unmounted(debian_image: tuple[Config, str], tmp_path: Path) -> None:
    cfg, first = debian_image
    tenants = tmp_path / "tenants"
    pinned_cfg = dataclasses.replace(cfg, tenants_dir=tenants)
    second = derive_image(cfg, first, "pinned")
    third = derive_image(cfg, first, "unused")
    try:
        (tenants / "bob").mkdir(parents=True)
        (tenants / "bob" / "tenant.json").write_text(json.dumps({"version": 1, "name": "bob", "image": second}))
        assert gc_images(pinned_cfg, check=True) == [third]
        assert gc_images(pinned_cfg) == [third]
        assert sorted(os.listdir(cfg.images_dir)) == sorted(["current", "recipes", first, second])
        (tenants / "bob" / "tenant.json").unlink()
        assert gc_images(pinned_cfg) == [second]
        assert current_image(cfg) == first and (cfg.images_dir / first / "rootfs").is_dir()
    finally:
        for leftover in (second, third):
            shutil.rmtree(cfg.images_dir / leftover, ignore_errors=True)


def test_role_builds_once_and_a_second_run_changes_nothing(tmp_path: Path, run_playbook) -> None:
    """The role itself, twice, against its own images dir: the second run reports changed=0."""
    needs_root_and_debootstrap()
    node = tmp_path / "node"
    node.mkdir()
    cfg = make_config(node, node / "images")
    role_vars = {
        "jail_base_image_config_path": str(cfg.path),
        "jail_base_image_images_dir": str(cfg.images_dir),
        "jail_base_image_cache_dir": str(CACHE),
        "jail_base_image_hosts": ["10.0.0.5 git.lab"],
    }
    play = [{"hosts": "localhost", "gather_facts": False, "roles": [{"role": "jail_base_image", "vars": role_vars}]}]
    rc, out = run_playbook(play)
    assert rc == 0, out[-4000:]
    assert "failed=0" in out and "changed=0" not in out, out[-2000:]
    image_id = current_image(cfg)
    assert image_id and sorted(os.listdir(cfg.images_dir)) == sorted(["current", "recipes", image_id])
    rootfs = image_rootfs(cfg, image_id)
    hosts = (rootfs / "etc/hosts").read_text()
    assert hosts.startswith("#\n# Ansible managed\n#\n") and "10.0.0.5 git.lab\n" in hosts
    policy = rootfs / "usr/sbin/policy-rc.d"
    assert policy.read_text().startswith("#!/bin/sh\n") and stat.S_IMODE(policy.stat().st_mode) == 0o755
    assert "jail\n" in (rootfs / "etc/hostname").read_text()

    rc, out = run_playbook(play)
    assert rc == 0 and "changed=0" in out, out[-4000:]
    # A changed template is a changed recipe: check mode says a build is due and builds nothing.
    rc, out = run_playbook(play, "--check", extra_vars={"jail_base_image_hostname": "lab"})
    assert rc == 0 and "changed=1" in out, out[-4000:]
    assert current_image(cfg) == image_id and sorted(os.listdir(cfg.images_dir)) == sorted(["current", "recipes", image_id])


def test_role_ships_the_build_hosts_image_to_another_node(tmp_path: Path, run_playbook) -> None:
    """Cluster mode, two nodes on this machine: node1 builds, node2 receives the packed image, verified."""
    needs_root_and_debootstrap()
    nodes = {}
    for name in ("node1", "node2"):
        (tmp_path / name).mkdir()
        nodes[name] = make_config(tmp_path / name, tmp_path / name / "images")
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        "".join(
            f"{name} ansible_connection=local ansible_python_interpreter=/usr/bin/python3"
            f" jail_base_image_config_path={cfg.path} jail_base_image_images_dir={cfg.images_dir}\n"
            for name, cfg in nodes.items()
        )
    )
    role_vars = {
        "jail_base_image_cache_dir": str(CACHE),
        "jail_base_image_build_host": "node1",
        "jail_base_image_stage_dir": str(tmp_path / "stage"),
    }
    play = [{"hosts": "all", "gather_facts": False, "roles": [{"role": "jail_base_image", "vars": role_vars}]}]
    rc, out = run_playbook(play, inventory=str(inventory))
    assert rc == 0, out[-4000:]
    built = current_image(nodes["node1"])
    assert built and current_image(nodes["node2"]) == built
    verify_image(nodes["node2"], built)
    manifests = [json.loads((cfg.images_dir / built / "manifest.json").read_text()) for cfg in nodes.values()]
    assert manifests[0]["packed"] == manifests[1]["packed"] and manifests[1]["packed"]["file"] == f"{built}.tar"
    rc, out = run_playbook(play, inventory=str(inventory))
    assert rc == 0 and re.search(r"node1 +: ok=\d+ +changed=0 ", out) and re.search(r"node2 +: ok=\d+ +changed=0 ", out), out[-4000:]
