"""Issue 15, installing tenant packages on a node: install_deps.sh installs a .deb (built here with
dpkg-deb) as tenant root and the program uses it; `jailrun NAME` runs it; an update keeps the files the
tenant made; a failing install_deps.sh leaves the previous version working, its log kept; a second
install of the same content does nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from jailyard.errors import JailError
from jailyard.lifecycle import converge
from jailyard.package import install, read_package, uninstall
from jailyard.registry import load_spec

NAME, UID = "pkgapp", 47131

if shutil.which("dpkg-deb") is None:
    pytest.skip("needs dpkg-deb", allow_module_level=True)


def build_deb(base: Path, greeting: str) -> Path:
    """hello-jail, which puts /usr/local/bin/hello-jail (it prints greeting)."""
    root = base / "debroot"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        "Package: hello-jail\nVersion: 1.0\nArchitecture: all\nMaintainer: test <t@example.org>\nDescription: a test package\n"
    )
    (root / "usr/local/bin/hello-jail").write_text(f"#!/bin/sh\necho {greeting}\n")
    (root / "usr/local/bin/hello-jail").chmod(0o755)
    deb = base / "hello-jail_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(deb)], check=True, capture_output=True)
    shutil.rmtree(root)
    return deb


def make_package(base: Path, version: str, deps_script: str | None = None, extra: dict | None = None) -> Path:
    base.mkdir(parents=True)
    (base / "progs").mkdir()
    config = {"name": NAME, "version": version, "program": [f"/home/{NAME}/progs/run.sh", "world"], "environment": {"WHO": version}}
    (base / "config.json").write_text(json.dumps({**config, **(extra or {})}))
    (base / "progs/run.sh").write_text('#!/bin/sh\necho "$(hello-jail) $1 v$WHO"\n')
    (base / "progs/run.sh").chmod(0o755)
    shutil.move(build_deb(base, f"hello-{version}"), base / "progs/hello-jail_1.0_all.deb")
    script = deps_script or (
        "set -e\nmkdir -p /var/lib/dpkg/info /var/lib/dpkg/updates\ntouch /var/lib/dpkg/status\n"
        "dpkg -i ./hello-jail_1.0_all.deb\necho installed as $(id -u)\n"
    )
    (base / "progs/install_deps.sh").write_text(script)
    return base


@pytest.fixture
def cleanup(node):
    yield
    converge(node.cfg, {"name": NAME, "state": "absent", "purge": True, "force": True})


def test_install_runs_install_deps_as_tenant_root_and_jailrun_name_runs_the_program(node, tmp_path: Path, cleanup) -> None:
    src = make_package(tmp_path / "v1", "1")
    result = install(node.cfg, src, jailrun=node.jailrun)
    assert result["changed"] and result["action"] == "create", result
    r = node.run(NAME)
    assert (r.returncode, r.stdout) == (0, "hello-1 world v1\n"), r.stderr
    log = Path(result["log"]).read_text()
    assert "installed as 0" in log and log.endswith("result: ok\n")
    spec = load_spec(node.cfg, NAME)
    assert spec.admin and spec.layout == "overlay"  # install_deps.sh: tenant root
    assert spec.package["version"] == "1" and spec.package["hash"] == read_package(src).hash and spec.package["result"] == "ok"
    # The files are the tenant's, in its home (written by the tenant inside the jail).
    st = (node.home(NAME) / "progs/run.sh").stat()
    assert st.st_mode & 0o7777 == 0o755
    # The same content again: nothing to do, nothing run (install_deps.sh runs once per package content).
    again = install(node.cfg, src, jailrun=node.jailrun)
    assert not again["changed"] and again["action"] == "none"
    assert install(node.cfg, src, check=True, jailrun=node.jailrun)["changed"] is False


def test_update_keeps_the_files_the_tenant_made(node, tmp_path: Path, cleanup) -> None:
    install(node.cfg, make_package(tmp_path / "v1", "1"), jailrun=node.jailrun)
    r = node.run(
        "--user", NAME, NAME, "--", "/bin/sh", "-c",
        "echo mine > ~/notes.txt && echo mine > ~/progs/my-data && echo mine > ~/progs/install_deps.sh.orig && echo edited > ~/progs/run.sh.local",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    v2 = make_package(tmp_path / "v2", "2")
    (v2 / "progs/run.sh.local").write_text("shipped by v2\n")  # v2 ships a path the tenant made: the tenant's moves aside
    check = install(node.cfg, v2, check=True, jailrun=node.jailrun)
    assert check["changed"] and check["action"] == "update" and check["before"]["version"] == "1" and check["after"]["version"] == "2"
    assert load_spec(node.cfg, NAME).package["version"] == "1", "check mode changed nothing"
    install(node.cfg, v2, jailrun=node.jailrun)
    r = node.run(NAME)
    assert (r.returncode, r.stdout) == (0, "hello-2 world v2\n"), r.stderr
    home = node.home(NAME)
    assert (home / "notes.txt").read_text() == "mine\n"
    assert (home / "progs/my-data").read_text() == "mine\n"
    assert (home / "progs/run.sh.local").read_text() == "shipped by v2\n"
    assert (home / "progs.kept/run.sh.local").read_text() == "edited\n"
    assert not (home / ".jailyard-stage").exists()


def test_a_failing_install_deps_leaves_the_previous_version_working(node, tmp_path: Path, cleanup) -> None:
    install(node.cfg, make_package(tmp_path / "v1", "1"), jailrun=node.jailrun)
    bad = make_package(tmp_path / "v2", "2", deps_script="echo about to fail; exit 3\n")
    with pytest.raises(JailError, match=r"installing pkgapp 2 failed \(install_deps.sh failed\); still at 1; log .*about to fail"):
        install(node.cfg, bad, jailrun=node.jailrun)
    r = node.run(NAME)
    assert (r.returncode, r.stdout) == (0, "hello-1 world v1\n"), r.stderr
    record = load_spec(node.cfg, NAME).package
    assert record["version"] == "1" and record["result"] == "failed" and record["failed_version"] == "2"
    assert "about to fail" in Path(record["log"]).read_text()
    assert not (node.home(NAME) / ".jailyard-stage").exists()
    assert not (node.home(NAME) / "progs/install_deps.sh").read_text().startswith("echo about")
    # A fixed v2 then installs (the failed record does not count as installed).
    install(node.cfg, make_package(tmp_path / "v2b", "2"), jailrun=node.jailrun)
    assert node.run(NAME).stdout == "hello-2 world v2\n"


def test_a_name_clash_with_a_tenant_no_package_made_is_refused_before_anything_changes(node, tmp_path: Path) -> None:
    src = make_package(tmp_path / "p", "1")
    (src / "config.json").write_text(json.dumps({**json.loads((src / "config.json").read_text()), "name": "alice"}))
    before = (node.cfg.tenants_dir / "alice/tenant.json").read_text()
    with pytest.raises(JailError, match="tenant 'alice' already exists and was not installed from a package"):
        install(node.cfg, src, jailrun=node.jailrun)
    with pytest.raises(JailError, match="was not installed from a package"):
        uninstall(node.cfg, "alice")
    assert (node.cfg.tenants_dir / "alice/tenant.json").read_text() == before


def test_uninstall_removes_the_tenant_and_keeps_its_home(node, tmp_path: Path, cleanup) -> None:
    install(node.cfg, make_package(tmp_path / "v1", "1"), jailrun=node.jailrun)
    assert uninstall(node.cfg, NAME)["changed"]
    assert load_spec(node.cfg, NAME) is None
    assert (node.home(NAME) / "progs/run.sh").exists()


def test_jailctl_install_list_and_uninstall(node, tmp_path: Path, cleanup) -> None:
    repo = Path(__file__).resolve().parents[2]
    env = {"PATH": f"{Path(node.jailrun).parent}:/usr/bin:/bin"}  # jailctl install finds this jailrun

    def ctl(*args: str) -> subprocess.CompletedProcess:
        argv = ["/usr/bin/python3", str(repo / "bin/jailctl"), "--config", str(node.cfg.path), *args]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)

    src = make_package(tmp_path / "v1", "1")
    r = ctl("install", "--check", str(src))
    assert (r.returncode, r.stdout) == (0, f"{NAME}: would install - -> 1\n"), r.stderr
    assert load_spec(node.cfg, NAME) is None
    r = ctl("install", str(src))
    assert r.returncode == 0 and r.stdout.startswith(f"{NAME}: installed - -> 1 (log "), r.stderr
    assert ctl("install", str(src)).stdout.startswith(f"{NAME}: 1 is installed already")
    listed = json.loads(ctl("list", "--json", NAME).stdout)[0]
    assert listed["program"] == [f"/home/{NAME}/progs/run.sh", "world"]
    pkg = listed["package"]
    assert (pkg["name"], pkg["version"], pkg["hash"], pkg["result"]) == (NAME, "1", read_package(src).hash, "ok") and pkg["installed"]
    table = ctl("list", NAME).stdout.splitlines()
    assert table[0].split()[-5:] == ["PACKAGE", "HASH", "INSTALLED", "RESULT", "PROGRAM"]
    assert f"{NAME} 1" in table[1] and read_package(src).hash[:12] in table[1] and " ok " in table[1]
    r = ctl("uninstall", NAME)
    assert (r.returncode, r.stdout) == (0, f"{NAME}: removed 1 (home kept)\n"), r.stderr
    r = ctl("install", str(tmp_path / "nope"))
    assert r.returncode == 1 and "jailctl: error:" in r.stderr and "nope" in r.stderr


def test_jail_package_module_copies_src_from_the_controller_check_mode_and_diff(node, tmp_path: Path, cleanup) -> None:
    """Through ansible-playbook (the action plugin tars a directory `src`, the module reads it on the node):
    check mode reports the install and its diff and changes nothing; a hostile package fails naming the
    member; absent of a tenant that is not there is ok."""
    import sys

    playbook = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    if playbook is None:
        pytest.skip("ansible-playbook is not installed next to the test's python")
    repo = Path(__file__).resolve().parents[2]
    src = make_package(tmp_path / "v1", "1")
    hostile = make_package(tmp_path / "evil", "1")
    (hostile / "progs/escape").symlink_to("/etc/shadow")
    play = tmp_path / "play.yml"
    play.write_text(
        f"""- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Install in check mode
      jail_package: {{src: "{src}", config: "{node.cfg.path}"}}
      check_mode: true
      diff: true
      register: planned
    - name: Show it
      ansible.builtin.debug: {{msg: "PLANNED {{{{ planned.changed }}}} {{{{ planned.packages[0].action }}}} {{{{ planned.packages[0].after.version }}}}"}}
    - name: Remove a tenant that is not there
      jail_package: {{name: nosuch, state: absent, config: "{node.cfg.path}"}}
      register: absent
    - name: Show that
      ansible.builtin.debug: {{msg: "ABSENT {{{{ absent.changed }}}}"}}
    - name: A hostile package
      jail_package: {{packages: [{{src: "{hostile}"}}], config: "{node.cfg.path}"}}
"""
    )
    r = subprocess.run(
        [playbook, "-i", "localhost,", "-e", "ansible_python_interpreter=/usr/bin/python3", str(play)],
        capture_output=True,
        text=True,
        cwd=repo,
        timeout=300,
        check=False,
    )
    assert "PLANNED True create 1" in r.stdout, r.stdout + r.stderr
    assert "ABSENT False" in r.stdout
    assert "'progs/escape': a symlink" in r.stdout and "failed=1" in r.stdout, r.stdout
    assert load_spec(node.cfg, NAME) is None


@pytest.mark.skipif(shutil.which("dpkg-scanpackages") is None or shutil.which("apt-get") is None, reason="needs dpkg-dev and apt-get")
def test_debian_depends_are_installed_by_tenant_root_from_a_local_repository(node, tmp_path: Path, cleanup) -> None:
    """v1's install_deps.sh makes the dpkg database (the busybox image has none); v2 depends on hello-jail,
    which apt-get fetches on the host from a file repository and tenant root installs."""
    from test_admin_packages import build_repo

    install(node.cfg, make_package(tmp_path / "v1", "1"), jailrun=node.jailrun)
    node.run(NAME, "--", "/bin/sh", "-c", "dpkg -r hello-jail")  # v2 must bring it back through depends
    sources = build_repo(tmp_path / "repo")
    v2 = make_package(tmp_path / "v2", "2", deps_script="true\n", extra={"depends": ["hello-jail"]})
    install(node.cfg, v2, jailrun=node.jailrun, sources=sources)
    r = node.run(NAME)
    uid = node.run("--user", NAME, NAME, "--", "id", "-u").stdout.strip()
    assert uid != "0"  # the program runs as the tenant's own user, not as tenant root
    assert (r.returncode, r.stdout) == (0, f"hello from the package as {uid} world v2\n"), r.stderr


def test_the_inbox_installs_a_dropped_package_and_moves_each_to_done_or_failed(node, tmp_path: Path, cleanup) -> None:
    from jailyard.package import inbox_pass

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    good = make_package(tmp_path / "v1", "1")
    subprocess.run(["tar", "-czf", str(inbox / ".hello.tar.gz"), "-C", str(good), "."], check=True)
    (inbox / ".hello.tar.gz").rename(inbox / "hello.tar.gz")  # dropped whole
    bad = make_package(tmp_path / "bad", "1")
    (bad / "progs/escape").symlink_to("/etc/shadow")
    shutil.move(bad, inbox / "bad")
    (inbox / ".partial").write_text("being written")
    report = inbox_pass(node.cfg, inbox, jailrun=node.jailrun)
    assert [(r["package"], r["ok"]) for r in report] == [("bad", False), ("hello.tar.gz", True)]
    assert node.run(NAME).stdout == "hello-1 world v1\n"
    done = sorted(os.listdir(inbox / "done"))
    assert len(done) == 2 and done[0].endswith("-hello.tar.gz") and done[1].endswith("-hello.tar.gz.log")
    assert "create: pkgapp 1" in (inbox / "done" / done[1]).read_text()
    failed = sorted(os.listdir(inbox / "failed"))
    assert failed[0].endswith("-bad") and "'progs/escape': a symlink" in (inbox / "failed" / failed[1]).read_text()
    assert sorted(os.listdir(inbox)) == [".partial", "done", "failed"]
    assert inbox_pass(node.cfg, inbox, jailrun=node.jailrun) == []


def test_a_package_without_dependencies_makes_a_plain_overlay_tenant(node, tmp_path: Path, cleanup) -> None:
    """No install_deps.sh and no depends: no tenant root needed (a host without user namespaces can run it);
    a later version that needs tenant root is refused before anything changes."""
    src = make_package(tmp_path / "v1", "1")
    (src / "progs/install_deps.sh").unlink()
    (src / "progs/hello-jail_1.0_all.deb").unlink()
    (src / "progs/run.sh").write_text('#!/bin/sh\necho "plain $(id -u) $WHO"\n')
    install(node.cfg, src, jailrun=node.jailrun)
    spec = load_spec(node.cfg, NAME)
    assert not spec.admin and spec.layout == "overlay"
    assert node.run(NAME).stdout == f"plain {spec.uid} 1\n"
    with pytest.raises(JailError, match=r"needs tenant root .* uninstall it"):
        install(node.cfg, make_package(tmp_path / "v2", "2"), jailrun=node.jailrun)
    assert load_spec(node.cfg, NAME).package["version"] == "1"
