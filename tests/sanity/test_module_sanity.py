"""The modules' documentation renders and ansible-test sanity (validate-modules) accepts them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODULES = ("jail", "jail_info", "jail_image")


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


def test_validate_modules_passes_in_a_throwaway_collection(tmp_path: Path) -> None:
    collection = tmp_path / "ansible_collections" / "jailyard" / "jails"
    (collection / "plugins" / "modules").mkdir(parents=True)
    shutil.copytree(REPO / "module_utils" / "jailyard", collection / "plugins" / "module_utils" / "jailyard")
    for module in MODULES:
        text = (REPO / "library" / f"{module}.py").read_text()
        text = text.replace("from ansible.module_utils.jailyard", "from ansible_collections.jailyard.jails.plugins.module_utils.jailyard")
        (collection / "plugins" / "modules" / f"{module}.py").write_text(text)
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
    out = subprocess.run(
        [tool("ansible-test"), "sanity", "--test", "validate-modules", "--python", python, "--color", "no"],
        cwd=collection,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert 'Running sanity test "validate-modules"' in out.stdout + out.stderr
