"""The modules' documentation renders and the full offline ansible-test sanity set accepts them and module_utils."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODULES = ("jail", "jail_info", "jail_image", "jail_package")


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed next to {sys.executable}")
    return str(path)


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders(module: str) -> None:
    out = subprocess.run([tool("ansible-doc"), "-M", str(REPO / "library"), module], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"MODULE {module}" in out.stdout.replace("\x1b[1m", "").replace("\x1b[0m", "")
    assert "EXAMPLES" in out.stdout and "RETURN VALUES" in out.stdout


# Every test `ansible-test sanity --list-tests` names runs, offline apart from the package
# index its requirement venvs install from (as the rest of `make test`). None is skipped:
# none needs docker when run with --python, and none reaches the network itself.
# pslint (needs pwsh, not installed) and shellcheck, changelog, empty-init and
# runtime-metadata run too but find nothing to check here ("No tests applicable"):
# the collection holds no PowerShell or shell scripts, changelog, __init__.py or
# meta/runtime.yml. Measured: 75 s with the venvs to create (a fresh machine), 15 s after.
SKIPPED: dict[str, str] = {}


def test_ansible_test_sanity_passes_in_a_throwaway_collection(tmp_path: Path) -> None:
    """Every offline ansible-test sanity test (pylint, no-assert, import, validate-modules, ...)
    over library/ and module_utils/, as a collection ansible-test accepts."""
    collection = tmp_path / "ansible_collections" / "jailyard" / "jails"
    (collection / "plugins" / "modules").mkdir(parents=True)
    shutil.copytree(
        REPO / "module_utils" / "jailyard",
        collection / "plugins" / "module_utils" / "jailyard",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for module in MODULES:
        text = (REPO / "library" / f"{module}.py").read_text()
        text = text.replace("from ansible.module_utils.jailyard", "from ansible_collections.jailyard.jails.plugins.module_utils.jailyard")
        # The shared documentation fragment: `jailyard` beside the playbooks (ansible.cfg), FQCN in a collection.
        text = text.replace(
            "extends_documentation_fragment:\n  - jailyard\n", "extends_documentation_fragment:\n  - jailyard.jails.jailyard\n"
        )
        (collection / "plugins" / "modules" / f"{module}.py").write_text(text)
    (collection / "plugins" / "doc_fragments").mkdir()
    shutil.copy(REPO / "doc_fragments" / "jailyard.py", collection / "plugins" / "doc_fragments" / "jailyard.py")
    (collection / "galaxy.yml").write_text("namespace: jailyard\nname: jails\nversion: 1.0.0\nreadme: README.md\nauthors: [jailyard]\n")
    (collection / "README.md").write_text("throwaway collection for sanity tests\n")
    subprocess.run(["git", "init", "-q", "."], cwd=collection, check=True)
    subprocess.run(["git", "add", "-A"], cwd=collection, check=True)
    # ansible-test bootstraps pip in its venv with a script it downloads from a host these
    # machines cannot reach; ensurepip plus the package index do the same job.
    cache = Path.home() / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    for version in ("24_2", "25_1", "25_3"):
        shutil.copy(Path(__file__).with_name("get_pip_offline.py"), cache / f"get_pip_{version}.py")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    listed = subprocess.run(
        [tool("ansible-test"), "sanity", "--list-tests", "--python", python], cwd=collection, capture_output=True, text=True, env=env
    )
    assert listed.returncode == 0, listed.stderr
    tests = listed.stdout.split()
    assert "pylint" in tests and "validate-modules" in tests and "no-assert" in tests, tests
    skips = [arg for name in SKIPPED for arg in ("--skip-test", name)]
    out = subprocess.run(
        [tool("ansible-test"), "sanity", "--python", python, "--color", "no", *skips],
        cwd=collection,
        capture_output=True,
        text=True,
        env=env,
    )
    log = out.stdout + out.stderr
    findings = [line for line in log.splitlines() if line.startswith(("ERROR:", "FATAL:"))]
    assert out.returncode == 0, "\n".join(findings) or log[-3000:]
    ran = re.findall(r'^Running sanity test "([^"]+)"', log, re.MULTILINE)
    assert sorted(ran) == sorted(t for t in tests if t not in SKIPPED), ran
