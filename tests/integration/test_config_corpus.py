"""One config contract, two parsers (issue 12): every file of tests/config-corpus gets the answer
its MANIFEST records from the Python parser (jailyard.config), from jailrun's parser alone
(launcher/parse_check) and, as root, from jailrun itself with the file laid down with the owner,
mode or symlink the case names (exit 122 = config refused).

Before the fix the two disagreed on 15 of 27 crafted files: Python accepted a group- or
world-writable config, one owned by uid 33, a symlink, a missing file, a duplicate key, more than
64 callers, a NUL byte, over-long values, a file over 64 KiB and uid_min = 0; died with
UnicodeDecodeError on a Latin-1 comment and with ValueError on `default_procs = ²`; and \\f, \\r,
\\x1c or NEL in a comment hid the next line from jailrun but not from Python.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jailtest import REPO, ansible_env
from jailyard.conffile import DEFAULTS, KEYS, parse_values
from jailyard.config import Config, load_config, parse_config
from jailyard.errors import JailError

CORPUS = REPO / "tests" / "config-corpus"
ROOT = os.geteuid() == 0


@dataclasses.dataclass(frozen=True)
class Case:
    file: str
    expect: str  # accept | refuse
    setup: str  # "-" or one change to root:root 0644 in a root:root 0755 directory (MANIFEST)
    why: str

    @property
    def id(self) -> str:
        return self.file if self.setup == "-" else f"{self.file}[{self.setup}]"

    def data(self) -> bytes:
        return (CORPUS / self.file).read_bytes()


def manifest() -> list[Case]:
    cases = []
    for line in (CORPUS / "MANIFEST").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            file, expect, setup, why = line.split(None, 3)
            assert expect in ("accept", "refuse"), line
            cases.append(Case(file, expect, setup, why))
    return cases


CASES = manifest()
GRAMMAR = [c for c in CASES if c.setup == "-"]


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """parse_check, and (as root) a jailrun whose baked-in config is <base>/etc/jailyard.conf."""
    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.skip("gcc and make are needed to build launcher/parse_check")
    base = tmp_path_factory.mktemp("corpus")
    base.chmod(0o755)
    targets = [f"{base}/build/parse_check"] + ([f"{base}/build/jailrun"] if ROOT else [])
    conf = base / "etc" / "jailyard.conf"
    subprocess.run(["make", "-s", "-C", str(REPO / "launcher"), f"BUILD={base}/build", f"CONFIG={conf}", *targets], check=True)
    return base


def parse_check(build: Path, path: Path) -> subprocess.CompletedProcess:
    out = subprocess.run([str(build / "build" / "parse_check"), str(path)], capture_output=True, text=True, check=False)
    assert out.returncode in (0, 1), out.stderr
    return out


def one_clear_line(message: str) -> None:
    assert message and "\n" not in message and message.isprintable(), repr(message)
    assert "Traceback" not in message


def test_manifest_lists_every_corpus_file_and_each_case_once() -> None:
    files = {p.name for p in CORPUS.iterdir()} - {"MANIFEST"}
    assert files == {c.file for c in GRAMMAR}
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.expect for c in CASES} == {"accept", "refuse"}


@pytest.mark.parametrize("case", GRAMMAR, ids=lambda c: c.id)
def test_both_parsers_agree_on_the_grammar(case: Case, build: Path) -> None:
    """The text alone, no trust checks: jailrun's parser (parse_check) and Python's give the
    manifest's answer; accepted files give both the same values (C renders what Config.render does)."""
    c = parse_check(build, CORPUS / case.file)
    try:
        cfg = parse_config(case.data(), case.file)
    except JailError as exc:
        py_accepts, message = False, str(exc)
        one_clear_line(message)
        assert message.startswith(f"{case.file}:"), message
    else:
        py_accepts = True
    assert ("accept" if c.returncode == 0 else "refuse") == case.expect, f"C: {case.why}: {c.stderr}"
    assert ("accept" if py_accepts else "refuse") == case.expect, f"Python: {case.why}"
    if case.expect == "accept":
        assert c.stdout == cfg.render(), "the two parsers read different values"
    else:
        one_clear_line(c.stderr.strip())


def lay_down(base: Path, case: Case) -> Path:
    """<base>/etc/jailyard.conf as the case says: root:root 0644 in a root:root 0755 directory, then its change."""
    etc, real = base / "etc", base / "etc-real"
    for d in (etc, real):
        if d.is_symlink() or d.is_file():
            d.unlink()
        elif d.exists():
            shutil.rmtree(d)
    conf = etc / "jailyard.conf"
    kind, _, arg = case.setup.partition("=")
    confdir = real if kind == "dirsymlink" else etc
    confdir.mkdir(mode=0o755)
    confdir.chmod(0o755)
    if kind == "dirsymlink":
        etc.symlink_to(real.name)
    target = confdir / ("real.conf" if kind == "symlink" else "jailyard.conf")
    if kind == "directory":
        target.mkdir()
    elif kind != "missing":
        target.write_bytes(case.data())
        target.chmod(0o644)
    if kind == "symlink":
        conf.symlink_to(target.name)
    elif kind == "owner":
        os.chown(conf, int(arg), 0)
    elif kind == "group":
        os.chown(conf, 0, int(arg))
    elif kind == "mode":
        conf.chmod(int(arg, 8))
    elif kind == "dirowner":
        os.chown(etc, int(arg), 0)
    elif kind == "dirmode":
        etc.chmod(int(arg, 8))
    else:
        assert kind in ("-", "missing", "directory", "symlink", "dirsymlink"), case.setup
    return conf


@pytest.mark.skipif(not ROOT, reason="the trust checks need root (files owned by root and by others)")
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_jailrun_and_the_modules_trust_the_same_configs(case: Case, build: Path) -> None:
    """The file as the launcher finds it: jailrun (exit 122 = refused) and load_config, which the
    modules and jailctl use as root, give the manifest's answer; a refusal is one line naming the file."""
    conf = lay_down(build, case)
    run = subprocess.run([str(build / "build" / "jailrun"), "--help"], capture_output=True, text=True, env={}, check=False)
    assert run.returncode in (0, 121, 122), run.stderr  # 0: help shown, 121: root not an allowed caller
    try:
        load_config(conf)
    except JailError as exc:
        py_accepts = False
        one_clear_line(str(exc))
        assert str(conf) in str(exc)
    else:
        py_accepts = True
    assert ("refuse" if run.returncode == 122 else "accept") == case.expect, f"jailrun: {case.why}: {run.stderr}"
    assert ("accept" if py_accepts else "refuse") == case.expect, f"Python: {case.why}"


def test_built_in_defaults_agree_c_python_and_role(build: Path) -> None:
    """The defaults are written in parse.c's key table, conffile.KEYS and the jail_launcher role:
    an empty config reads the same in C and Python, and the role's defaults are the same values."""
    empty = CORPUS / "empty.conf"
    assert parse_check(build, empty).stdout == Config().render()
    assert [f.name for f in dataclasses.fields(Config) if f.name != "path"] == list(KEYS)
    assert {k: getattr(Config(), k) for k in KEYS} == {k: Path(v) if KEYS[k][0] == "path" else v for k, v in DEFAULTS.items()}
    role = yaml.safe_load((REPO / "roles" / "jail_launcher" / "defaults" / "main.yml").read_text())
    from_role = {
        "images_dir": role["jail_launcher_images_dir"],
        "tenants_dir": role["jail_launcher_tenants_dir"],
        "jails_dir": role["jail_launcher_jails_dir"],
        "run_dir": role["jail_launcher_run_dir"],
        "mount_helper": f"{role['jail_launcher_lib_dir']}/jailyard-mount",  # as the role's template writes it
        "python": role["jail_launcher_python"],
        "lib_dir": role["jail_launcher_lib_dir"],
        "allowed_callers": tuple(role["jail_launcher_allowed_callers"]),
        "uid_min": role["jail_launcher_uid_min"],
        "uid_max": role["jail_launcher_uid_max"],
        "cgroup_name": role["jail_launcher_cgroup_name"],
        **{f"default_{k}": v for k, v in role["jail_launcher_default_limits"].items()},
        # issue 17: as the role's template writes them
        "net_bridge": role["jail_launcher_net_bridge"],
        "net_pool4": role["jail_launcher_net_pool4"],
        "net_pool6": role["jail_launcher_net_pool6"],
        "net_dns": ",".join(role["jail_launcher_net_dns"]) or "none",
        "net_egress": role["jail_launcher_net_egress"],
        "net_host": int(role["jail_launcher_net_host"]),
        "disk_backend": role["jail_launcher_disk_backend"],
        "ipc_path": role["jail_launcher_ipc_path"],  # issue 15
    }
    assert from_role == DEFAULTS


def test_rendered_configs_are_accepted_by_both_parsers(build: Path, tmp_path: Path) -> None:
    """What tests and jailctl write (Config.render) reads back the same in C and Python."""
    cfg = Config(jails_dir=Path("/srv/x"), allowed_callers=(0, 33, 1000), uid_min=1, cgroup_name="a-b_c", default_wall=5)
    path = tmp_path / "rendered.conf"
    path.write_text(cfg.render())
    assert parse_check(build, path).stdout == cfg.render()
    assert parse_config(cfg.render()) == cfg


def test_parse_values_without_a_file_gives_no_traceback_for_odd_text() -> None:
    """str input (as jailctl and tests pass) follows the same byte rules: non-ASCII is one clear error."""
    for text in ("default_procs = \u00b2\n", "# caf\u00e9\n", "uid_min = 1\x1c0\n", "uid_min = \udcff\n"):
        with pytest.raises(JailError) as info:
            parse_values(text, "x.conf")
        one_clear_line(str(info.value))


@pytest.mark.skipif(not ROOT, reason="needs root")
def test_jailctl_with_a_missing_config_is_an_error_naming_it(tmp_path: Path) -> None:
    """`jailctl --config /nonexistent list` listed the real tenants with exit 0 (built-in defaults)."""
    missing = tmp_path / "nonexistent.conf"
    out = subprocess.run(
        ["/usr/bin/python3", str(REPO / "bin" / "jailctl"), "--config", str(missing), "list"], capture_output=True, text=True
    )
    assert out.returncode == 1, out.stdout
    assert out.stdout == ""
    assert out.stderr == f"jailctl: error: config {missing} does not exist\n"


MODULES_PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Read the jails
      jail_info:
        config: {conf}
      register: info
      ignore_errors: true
    - name: Converge a jail
      jail:
        name: alice
        uid: 10001
        config: {conf}
      check_mode: true
      register: converge
      ignore_errors: true
    - name: Keep the results
      ansible.builtin.copy:
        content: "{{{{ [info, converge] | to_json }}}}"
        dest: {results}
        mode: "0600"
"""


@pytest.mark.skipif(not ROOT, reason="needs root")
def test_modules_with_a_missing_config_fail_naming_it(tmp_path: Path) -> None:
    """jail and jail_info with `config:` naming a missing file went on with the built-in defaults."""
    playbook = Path(sys.executable).parent / "ansible-playbook"
    if not playbook.exists():
        pytest.skip("ansible-playbook is not installed next to this python")
    missing = tmp_path / "nonexistent.conf"
    book = tmp_path / "site.yml"
    results = tmp_path / "results.json"
    book.write_text(MODULES_PLAYBOOK.format(conf=missing, results=results))
    env = ansible_env(ANSIBLE_STDOUT_CALLBACK="default")
    out = subprocess.run([str(playbook), "-i", "localhost,", str(book)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    for result in json.loads(results.read_text()):
        assert result.get("failed") is True, result
        assert result["msg"] == f"config {missing} does not exist", result
