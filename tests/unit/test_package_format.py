"""Issue 15, the package format: docs/package.schema.json and package.validate_config agree on a corpus of
good and bad config.json files (tests/package-corpus: good-*.json pass, bad-*.json fail), and hostile
package contents are refused (or neutralised) before anything changes."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import jsonschema
import pytest

from jailyard import package as pkgmod
from jailyard.errors import JailError
from jailyard.package import read_package, validate_config

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "docs/package.schema.json").read_text())
CORPUS = sorted((REPO / "tests/package-corpus").glob("*.json"))
GOOD = {"name": "hello", "version": "1.0", "program": ["/home/hello/progs/run.sh"]}


def test_the_schema_is_a_valid_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_schema_and_validator_agree(path: Path) -> None:
    data = json.loads(path.read_text())
    schema_ok = jsonschema.Draft202012Validator(SCHEMA).is_valid(data)
    try:
        validate_config(data, str(path))
        ours = True
    except JailError as exc:
        ours = False
        assert str(exc).count("\n") == 0 and str(path) in str(exc)  # one line naming the file
    assert schema_ok == ours == path.name.startswith("good-")


def test_a_malformed_config_is_one_line_naming_the_key_and_the_file(tmp_path: Path) -> None:
    write_pkg(tmp_path, {**GOOD, "limits": {"mem": "lots"}})
    with pytest.raises(JailError, match=rf"^{tmp_path}/config.json: limits.mem: expected a non-negative integer"):
        read_package(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(JailError, match=rf"^{tmp_path}/config.json: not JSON"):
        read_package(tmp_path)


def write_pkg(base: Path, config: dict | None = None) -> Path:
    (base / "progs").mkdir(parents=True, exist_ok=True)
    (base / "config.json").write_text(json.dumps(config or GOOD))
    (base / "progs/run.sh").write_text("#!/bin/sh\necho hi\n")
    (base / "progs/run.sh").chmod(0o755)
    return base


def test_a_directory_package_reads_and_its_hash_follows_its_content(tmp_path: Path) -> None:
    write_pkg(tmp_path)
    (tmp_path / "progs/lib").mkdir()
    (tmp_path / "progs/lib/data").write_text("x")
    pkg = read_package(tmp_path)
    assert pkg.config["name"] == "hello" and pkg.files["run.sh"] == (0o755, b"#!/bin/sh\necho hi\n")
    assert pkg.files["lib"] == (0o755, None) and pkg.files["lib/data"] == (0o644, b"x")
    assert read_package(tmp_path).hash == pkg.hash
    (tmp_path / "progs/lib/data").write_text("y")
    assert read_package(tmp_path).hash != pkg.hash


def tarball(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, linkname
    return info


def good_members() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [(member("./config.json"), json.dumps(GOOD).encode()), (member("./progs", tarfile.DIRTYPE, 0o755), None)]


def test_a_tarball_package_reads_like_the_directory(tmp_path: Path) -> None:
    pkg = read_package(tarball(tmp_path / "p.tgz", [*good_members(), (member("./progs/run.sh", mode=0o755), b"#!/bin/sh\necho hi\n")]))
    assert pkg.files == {"run.sh": (0o755, b"#!/bin/sh\necho hi\n")}
    assert pkg.hash == read_package(write_pkg(tmp_path / "d")).hash


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (member("/etc/passwd"), "refusing the absolute path '/etc/passwd'"),
        (member("progs/../../etc/cron.d/x"), "climbs out with '..'"),
        (member("progs/link", tarfile.SYMTYPE, linkname="/etc/shadow"), "'progs/link': a symlink"),
        (member("progs/inside", tarfile.SYMTYPE, linkname="run.sh"), "'progs/inside': a symlink"),
        (member("progs/hard", tarfile.LNKTYPE, linkname="config.json"), "'progs/hard': a hardlink"),
        (member("progs/null", tarfile.CHRTYPE), "'progs/null': a device"),
        (member("progs/disk", tarfile.BLKTYPE), "'progs/disk': a device"),
        (member("progs/pipe", tarfile.FIFOTYPE), "'progs/pipe': a fifo"),
        (member("progs/a\nb"), "control characters"),
        (member("etc/x"), "config.json and progs/ only"),
    ],
)
def test_hostile_tarball_members_are_refused_naming_them(tmp_path: Path, bad: tarfile.TarInfo, error: str) -> None:
    data = b"x" if bad.type == tarfile.REGTYPE else None
    with pytest.raises(JailError, match=error):
        read_package(tarball(tmp_path / "p.tgz", [*good_members(), (bad, data)]))


def test_setuid_and_world_writable_bits_are_neutralised(tmp_path: Path) -> None:
    pkg = read_package(
        tarball(
            tmp_path / "p.tgz",
            [
                *good_members(),
                (member("progs/suid", mode=0o6777), b"x"),
                (member("progs/ww", mode=0o666), b"y"),
                (member("progs/d", tarfile.DIRTYPE, 0o1777), None),
            ],
        )
    )
    assert pkg.files["suid"][0] == 0o755 and pkg.files["ww"][0] == 0o644 and pkg.files["d"][0] == 0o755
    tar = tarfile.open(fileobj=io.BytesIO(pkg.tar()))
    assert {m.name: m.mode for m in tar} == {"progs": 0o755, "progs/d": 0o755, "progs/suid": 0o755, "progs/ww": 0o644}


def test_a_tarball_bomb_is_refused_by_size_before_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 64 MiB of zeros compress to a few kB; the cap is lowered so the test stays small.
    monkeypatch.setattr(pkgmod, "MAX_BYTES", 16 << 20)
    path = tmp_path / "bomb.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for info, data in good_members():
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data) if data else None)
        info = member("progs/zeros")
        info.size = 64 << 20
        tar.addfile(info, io.BytesIO(bytes(64 << 20)))
    assert path.stat().st_size < 1 << 20
    with pytest.raises(JailError, match="more than 16777216 bytes of files"):
        read_package(path)


def test_a_tarball_bomb_is_refused_by_file_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pkgmod, "MAX_FILES", 50)
    many = [(member(f"progs/f{i}"), b"") for i in range(60)]
    with pytest.raises(JailError, match="more than 50 entries"):
        read_package(tarball(tmp_path / "p.tgz", [*good_members(), *many]))


@pytest.mark.skipif(os.geteuid() != 0, reason="device nodes need root")
@pytest.mark.parametrize("kind", ["symlink-out", "hardlink", "fifo", "device", "socket"])
def test_hostile_directory_entries_are_refused(tmp_path: Path, kind: str) -> None:
    import socket

    write_pkg(tmp_path)
    bad = tmp_path / "progs/bad"
    if kind == "symlink-out":
        bad.symlink_to("/etc/shadow")
    elif kind == "hardlink":
        (tmp_path.parent / f"{tmp_path.name}-outside").write_text("host file")
        os.link(tmp_path.parent / f"{tmp_path.name}-outside", bad)
    elif kind == "fifo":
        os.mkfifo(bad)
    elif kind == "device":
        os.mknod(bad, 0o600 | 0o020000, os.makedev(1, 3))
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(bad))
        sock.close()
    expect = {"symlink-out": "symlink", "hardlink": "hardlink"}.get(kind, kind)
    with pytest.raises(JailError, match=f"'progs/bad': a {expect}"):
        read_package(tmp_path)


def test_a_symlinked_progs_directory_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(GOOD))
    (tmp_path / "progs").symlink_to("/etc")
    with pytest.raises(JailError, match="'progs': a symlink"):
        read_package(tmp_path)
