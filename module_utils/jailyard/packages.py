"""The `packages` of an admin tenant: Debian packages installed into its overlay as tenant root.

Nothing of the tenant is read or written with host privileges:
- what is installed is read inside the jail, by tenant root (`jailrun NAME -- cat /var/lib/dpkg/status`),
  and only parsed here;
- apt-get resolves and downloads the missing packages and their dependencies on the host (the jail
  itself needs no network), against a private copy of that status, into a private archive
  directory (`--download-only`; with `sources`, a private sources list and lists directory that
  `apt-get update` fills, as the tests' file repository does);
- the .debs go into the jail on jailrun's stdin (a tar stream) and tenant root installs them with
  `dpkg -i` in a directory of its own, removed after.
Idempotent: packages already installed are left alone; nothing runs when none is missing.
"""

from __future__ import annotations

import subprocess
import tarfile
import tempfile
from pathlib import Path

from .errors import JailError
from .service import JAILRUN

# Run by tenant root inside the jail, with the steps (from apt's own order) after it.
INSTALL_HEAD = 'd=$(mktemp -d) && tar -xf - -C "$d" && (set -e; cd "$d"; '
INSTALL_TAIL = '); rc=$?; rm -rf "$d"; exit $rc'
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789+.-")


def installed(status: str) -> set[str]:
    """The packages dpkg's status file (its text) says are installed."""
    names = set()
    for stanza in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line.startswith(" "))
        if fields.get("Package") and fields.get("Status", "").endswith(" installed"):
            names.add(fields["Package"])
    return names


def _jailrun(jailrun: str, name: str, argv: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([jailrun, name, "--", *argv], input=stdin, capture_output=True, timeout=1800, check=False)
    except OSError as exc:
        raise JailError(f"cannot run {jailrun}: {exc.strerror}") from exc


def jail_status(name: str, jailrun: str = JAILRUN) -> str:
    r = _jailrun(jailrun, name, ["sh", "-c", "cat /var/lib/dpkg/status 2>/dev/null || true"])
    if r.returncode != 0:
        raise JailError(f"cannot read the installed packages of {name}: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout.decode(errors="replace")


def download(status: str, wanted: list[str], work: Path, sources: str | None = None) -> tuple[list[Path], list[tuple[str, str]]]:
    """apt-get --download-only of `wanted` (and what they need) against `status`: the .debs it fetched,
    and apt's order of the install (("Inst"|"Conf", package), from `apt-get -s`): a batch `dpkg -i`
    would unpack a package before what it pre-depends on is configured."""
    (work / "archives" / "partial").mkdir(parents=True)
    (work / "status").write_text(status)
    opts = [
        "-o", f"Dir::Cache::archives={work}/archives",
        "-o", f"Dir::State::status={work}/status",
        "-o", "Debug::NoLocking=1",
        "-o", "APT::Sandbox::User=root",
    ]  # fmt: skip
    if sources is not None:
        (work / "lists" / "partial").mkdir(parents=True)
        (work / "sources.list").write_text(sources.rstrip("\n") + "\n")
        opts += [
            "-o", f"Dir::Etc::sourcelist={work}/sources.list",
            "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::State::lists={work}/lists",
            "-o", f"Dir::Cache={work}",
        ]  # fmt: skip
        run_apt(["apt-get", "-q", *opts, "update"])
    install = ["--no-install-recommends", *opts, "install", *wanted]
    run_apt(["apt-get", "-q", "-y", "--download-only", *install])
    order = []
    for line in run_apt(["apt-get", "-q", "-s", *install]).splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("Inst", "Conf"):
            order.append((parts[0], parts[1].split(":")[0]))
    return sorted((work / "archives").glob("*.deb")), order


def run_apt(argv: list[str]) -> str:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800, check=False)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise JailError(f"{' '.join(argv[:2])} ... {argv[-1]} failed: {' / '.join(tail)}")
    return r.stdout


def install_script(debs: dict[str, str], order: list[tuple[str, str]]) -> str:
    """The shell steps tenant root runs: `dpkg --unpack` and `dpkg --configure` in apt's order (debs: package -> file in the tar)."""
    steps: list[str] = []
    for verb, pkg in order:
        if not pkg or not NAME_CHARS.issuperset(pkg):
            raise JailError(f"apt named an unexpected package {pkg!r}")
        if verb == "Inst":
            if pkg not in debs:
                raise JailError(f"apt would install {pkg} but fetched no .deb of it")
            steps.append(f"dpkg --unpack {debs[pkg]}")
        elif steps and steps[-1] == f"dpkg --unpack {debs.get(pkg)}":
            # Unpacked and configured back to back: one `dpkg -i` (busybox's dpkg loses the
            # package's stanza on a separate --configure).
            steps[-1] = f"dpkg -i {debs[pkg]}"
        else:
            steps.append(f"dpkg --configure {pkg}")
    return INSTALL_HEAD + "; ".join(steps) + INSTALL_TAIL


def ensure_packages(name: str, packages: list[str], check: bool = False, jailrun: str = JAILRUN, sources: str | None = None) -> list[str]:
    """Install what of `packages` the admin jail `name` lacks; the names installed (or, in check mode, to install)."""
    if not packages:
        return []
    status = jail_status(name, jailrun)
    have = installed(status)
    missing = [p for p in packages if p not in have]
    if not missing or check:
        return missing
    with tempfile.TemporaryDirectory(prefix=f"jailyard-packages-{name}-") as tmp:
        work = Path(tmp)
        debs, order = download(status, missing, work, sources)
        if not debs:
            raise JailError(f"apt-get fetched nothing for {', '.join(missing)} of {name}")
        bundle = work / "debs.tar"
        files: dict[str, str] = {}
        with tarfile.open(bundle, "w") as tar:
            for i, deb in enumerate(debs):
                # The package a .deb holds (its file name encodes the version); in the tar as N.deb.
                pkg = subprocess.run(["dpkg-deb", "-f", str(deb), "Package"], capture_output=True, text=True, check=True).stdout.strip()
                files[pkg] = f"{i}.deb"
                tar.add(deb, arcname=f"{i}.deb")
        r = _jailrun(jailrun, name, ["sh", "-c", install_script(files, order)], stdin=bundle.read_bytes())
        if r.returncode != 0:
            raise JailError(f"dpkg -i in {name} failed: {r.stderr.decode(errors='replace').strip()[-500:]}")
    have = installed(jail_status(name, jailrun))
    still = [p for p in missing if p not in have]
    if still:
        raise JailError(f"after dpkg -i, {name} still lacks {', '.join(still)}")
    return missing
