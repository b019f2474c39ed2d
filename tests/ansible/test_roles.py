"""The product shell: roles render valid units and configs, variables are documented (docs/variables.md), the README keeps its promises."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROLES = ("jail_launcher", "jail_expiry", "jail_tenants", "jail_cluster", "jail_storage", "jail_packages")


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed next to {sys.executable}")
    return str(path)


def render(tmp_path: Path, role: str, templates: dict[str, str], extra_vars: dict[str, object] | None = None) -> Path:
    """Render a role's templates with its defaults through ansible-playbook, as the role would."""
    out = tmp_path / "out"
    out.mkdir()
    tasks = [
        {
            "name": f"Render {src}",
            "ansible.builtin.template": {"src": f"{REPO}/roles/{role}/templates/{src}", "dest": f"{out}/{dest}", "mode": "0644"},
        }
        for src, dest in templates.items()
    ]
    play = [
        {
            "name": "Render",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars_files": [f"{REPO}/roles/{role}/defaults/main.yml"],
            "vars": {"role_path": f"{REPO}/roles/{role}"},
            "tasks": tasks,
        }
    ]
    playbook = tmp_path / "render.yml"
    playbook.write_text(yaml.safe_dump(play))
    extra = json.dumps({"ansible_python_interpreter": sys.executable, **(extra_vars or {})})
    run = subprocess.run(
        [tool("ansible-playbook"), "-i", "localhost,", "-e", extra, str(playbook)], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out


def test_expiry_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    # ExecStart must name an executable that exists for verify to accept it.
    out = render(
        tmp_path,
        "jail_expiry",
        {
            "etc/systemd/system/jailyard-expiry.service.j2": "jailyard-expiry.service",
            "etc/systemd/system/jailyard-expiry.timer.j2": "jailyard-expiry.timer",
        },
        {"jail_expiry_jailctl": str(REPO / "bin" / "jailctl")},
    )
    units = [str(out / "jailyard-expiry.service"), str(out / "jailyard-expiry.timer")]
    run = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, check=False)
    # Without systemd as PID 1 verify still parses and checks the units; only
    # complaints about our own files count.
    ours = [line for line in (run.stdout + run.stderr).splitlines() if "jailyard-expiry" in line]
    assert not ours, "\n".join(ours)
    assert run.returncode == 0, run.stdout + run.stderr
    timer = (out / "jailyard-expiry.timer").read_text()
    assert "OnUnitActiveSec=5min" in timer


def test_expiry_cron_entry_runs_jailctl_expire_every_five_minutes(tmp_path: Path) -> None:
    out = render(tmp_path, "jail_expiry", {"etc/cron.d/jailyard-expiry.j2": "jailyard-expiry"})
    jobs = [line for line in (out / "jailyard-expiry").read_text().splitlines() if line and not line.startswith("#") and "=" not in line]
    assert jobs == ["*/5 * * * * root /usr/local/sbin/jailctl --config /etc/jailyard/jailyard.conf expire"]


def test_launcher_config_template_is_accepted_by_the_python_parser(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "module_utils"))
    from jailyard.config import Config, parse_config

    out = render(tmp_path, "jail_launcher", {"etc/jailyard/jailyard.conf.j2": "jailyard.conf"})
    text = (out / "jailyard.conf").read_text()
    assert parse_config(text, "jailyard.conf") == Config(), "role defaults must equal the built-in defaults"


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_described_in_argument_specs(role: str) -> None:
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options)
    assert all(name.startswith(f"{role}_") for name in options), "variables are prefixed with the role name"
    for name, option in options.items():
        assert option.get("description"), f"{name} has no description"


def role_variables() -> set[str]:
    names: set[str] = set()
    for spec in REPO.glob("roles/*/meta/argument_specs.yml"):
        names |= set(yaml.safe_load(spec.read_text())["argument_specs"]["main"].get("options", {}))
    return names


def test_variables_doc_is_generated_from_argument_specs() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import vars_table

    doc = (REPO / "docs" / "variables.md").read_text()
    assert doc == vars_table.document(), "docs/variables.md is stale: python tests/ansible/vars_table.py > docs/variables.md"
    documented = set(re.findall(r"^\| `(jail_[a-z0-9_]+)` \|", doc, flags=re.M))
    assert documented == role_variables()


def test_variables_doc_has_no_raw_ansible_markup() -> None:
    # C(...), V(...), O(...), I(...) are ansible-doc markup; Markdown shows them raw.
    raw = re.findall(r"\b[BCEILMOUV]\([^)]*\)", (REPO / "docs" / "variables.md").read_text())
    assert not raw, raw


def test_argument_specs_name_only_variables_that_exist() -> None:
    """A description once said `must match C(jail_base_image_dir)`, a variable no role has."""
    known = role_variables() | {p.name for p in (REPO / "roles").iterdir()} | {p.stem for p in (REPO / "library").glob("*.py")}
    for spec in REPO.glob("roles/*/meta/argument_specs.yml"):
        named = set(re.findall(r"\bjail_[a-z0-9_]+", spec.read_text()))
        assert named <= known, f"{spec.relative_to(REPO)} names {sorted(named - known)}, which no role or module has"


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (REPO / "README.md").read_text()
    first_block = re.search(r"```(?:sh|bash|console)?\n(.*?)```", readme, flags=re.S)
    assert first_block is not None
    assert first_block.group(1).split("\n")[:2] == ["make site", "make test"]
    assert readme.index(first_block.group(0)) < readme.index("\n## "), "the two commands come before any section"
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M), ".ci/run runs the README's test command word for word"


def test_site_passes_syntax_check() -> None:
    run = subprocess.run([tool("ansible-playbook"), "--syntax-check", "site.yml"], capture_output=True, text=True, cwd=REPO, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_inventory_puts_localhost_in_jail_hosts_with_the_demo_tenants() -> None:
    run = subprocess.run([tool("ansible-inventory"), "--list"], capture_output=True, text=True, cwd=REPO, check=False)
    assert run.returncode == 0, run.stderr
    inventory = yaml.safe_load(run.stdout)
    assert inventory["jail_hosts"]["hosts"] == ["localhost"]
    tenants = inventory["_meta"]["hostvars"]["localhost"]["jail_tenants_list"]
    assert [(t["name"], t["uid"], t["layout"]) for t in tenants] == [("demo", 10001, "bind"), ("demo2", 10002, "overlay")]


def test_make_pytest_fails_when_nothing_is_collected() -> None:
    # pytest exits 5 when it collected nothing: a moved or skipped-away suite
    # must fail `make test`, not pass as "no failures".
    if not (REPO / ".venv" / ".requirements-dev.stamp").exists():
        pytest.skip("make venv-dev has not run (the Makefile would install it)")
    run = subprocess.run(
        ["make", "-s", "--no-print-directory", "pytest", "PYTEST_ARGS=tests/ansible -k no_such_test_anywhere"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert run.returncode != 0
    assert "pytest collected no tests" in run.stderr


def test_readme_examples_create_jails_with_uids_the_demo_inventory_leaves_free() -> None:
    """The first ad-hoc example created bob with uid 10002, demo2's uid: it failed as written after `make site`."""
    demo = yaml.safe_load((REPO / "inventory" / "local" / "group_vars" / "jail_hosts.yml").read_text())["jail_tenants_list"]
    taken = {t["uid"]: t["name"] for t in demo}
    blocks = "\n".join(re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S))
    uids = [int(uid) for uid in re.findall(r"\buid=(\d+)|--uid (\d+)", blocks) for uid in uid if uid]
    assert uids, "no example creates a jail: the pattern is broken"
    clashes = [f"uid {uid} is {taken[uid]}'s" for uid in uids if uid in taken]
    assert not clashes, clashes
