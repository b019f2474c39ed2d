"""The `packages` of an admin tenant (issue 14): a .deb built here with dpkg-deb, in a file repository
made with dpkg-scanpackages (no network), installed as tenant root, run in the next session, owned
on the host by the tenant's mapped ids; a second run installs nothing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from jailyard import idmap
from jailyard.errors import JailError
from jailyard.lifecycle import converge
from jailyard.packages import ensure_packages, installed

NAME, UID = "pkg1", 47122

if shutil.which("dpkg-deb") is None or shutil.which("dpkg-scanpackages") is None or shutil.which("apt-get") is None:
    pytest.skip("needs dpkg-deb, dpkg-scanpackages (dpkg-dev) and apt-get", allow_module_level=True)


def build_repo(base: Path) -> str:
    """A file repository with one package, hello-jail 1.0, that puts /usr/local/bin/hello-jail; its sources line."""
    pkg = base / "hello-jail"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "usr/local/bin").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(
        "Package: hello-jail\nVersion: 1.0\nArchitecture: all\nMaintainer: test <t@example.org>\nDescription: a test package\n"
    )
    script = pkg / "usr/local/bin/hello-jail"
    script.write_text("#!/bin/sh\necho hello from the package as $(id -u)\n")
    script.chmod(0o755)
    repo = base / "repo"
    repo.mkdir()
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", str(pkg), str(repo / "hello-jail_1.0_all.deb")], check=True, capture_output=True
    )
    packages = subprocess.run(["dpkg-scanpackages", "."], cwd=repo, check=True, capture_output=True, text=True).stdout
    (repo / "Packages").write_text(packages)
    return f"deb [trusted=yes] copy:{repo} ./"  # copy: (not file:) so apt puts the .deb into its archives


@pytest.fixture
def pkg_tenant(node, tmp_path: Path):
    converge(node.cfg, {"name": NAME, "uid": UID, "layout": "overlay", "admin": True, "state": "present"})
    # The busybox image has dpkg (busybox's) but no dpkg database, which a Debian image has: tenant root makes one.
    r = node.run(NAME, "--", "sh", "-c", "mkdir -p /var/lib/dpkg/info && touch /var/lib/dpkg/status")
    assert r.returncode == 0, r.stderr
    try:
        yield build_repo(tmp_path)
    finally:
        converge(node.cfg, {"name": NAME, "state": "absent", "purge": True, "force": True})


def test_installed_reads_dpkg_status() -> None:
    status = "Package: a\nStatus: install ok installed\n\nPackage: b\nStatus: deinstall ok config-files\n\nPackage: c\nStatus: install ok installed\n"
    assert installed(status) == {"a", "c"}


def test_package_is_installed_by_tenant_root_persists_and_is_not_installed_twice(node, pkg_tenant: str) -> None:
    assert ensure_packages(NAME, ["hello-jail"], check=True, jailrun=node.jailrun, sources=pkg_tenant) == ["hello-jail"]
    assert ensure_packages(NAME, ["hello-jail"], jailrun=node.jailrun, sources=pkg_tenant) == ["hello-jail"]
    r = node.run(NAME, "--", "hello-jail")
    assert (r.returncode, r.stdout) == (0, "hello from the package as 0\n"), r.stderr
    base = idmap.range_base(node.cfg.uid_min, UID)
    st = (node.cfg.tenants_dir / NAME / "upper/usr/local/bin/hello-jail").stat()
    assert (st.st_uid, st.st_gid) == (base, base), "the package's root-owned file is the tenant root's on the host"
    # Installed now: nothing to do, in check mode and for real.
    assert ensure_packages(NAME, ["hello-jail"], check=True, jailrun=node.jailrun, sources=pkg_tenant) == []
    assert ensure_packages(NAME, ["hello-jail"], jailrun=node.jailrun, sources=pkg_tenant) == []


def test_unknown_package_is_one_clear_error(node, pkg_tenant: str) -> None:
    with pytest.raises(JailError, match="no-such-package"):
        ensure_packages(NAME, ["no-such-package"], jailrun=node.jailrun, sources=pkg_tenant)


def test_install_follows_apts_order_so_pre_dependencies_are_configured_first() -> None:
    """python3 pre-depends on python3-minimal configured: a batch `dpkg -i` of both failed (seen with the Debian image)."""
    from jailyard.packages import install_script

    order = [
        ("Inst", "python3-minimal"),
        ("Conf", "python3-minimal"),
        ("Inst", "libx"),
        ("Inst", "python3"),
        ("Conf", "libx"),
        ("Conf", "python3"),
    ]
    script = install_script({"python3-minimal": "0.deb", "libx": "1.deb", "python3": "2.deb"}, order)
    steps = script.split('(set -e; cd "$d"; ')[1].split(");")[0].split("; ")
    assert steps == ["dpkg -i 0.deb", "dpkg --unpack 1.deb", "dpkg --unpack 2.deb", "dpkg --configure libx", "dpkg --configure python3"]
    with pytest.raises(JailError, match="unexpected package"):
        install_script({}, [("Conf", "x; rm -rf /")])
