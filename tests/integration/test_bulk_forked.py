"""A bulk run split over two processes (forked.FORK_FROM, issue 21): the same outcome as one
process, every second jail done by a forked child, and a failure in either half stops both and is
reported as one run's failure. Real mounts; FORK_FROM lowered so a dozen jails split."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from jailtest import make_config
from jailyard import apply, forked, lifecycle
from jailyard.config import Config
from jailyard.errors import JailError
from jailyard.lifecycle import PartialFailure, converge_many, jail_facts
from jailyard.mountinfo import jails_with_mounts, read_mountinfo

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

NAMES = [f"b{i:02d}" for i in range(12)]


def mounted(cfg: Config) -> set[str]:
    return set(jails_with_mounts(read_mountinfo(), str(cfg.jails_dir)))


def items(state: str) -> list[dict]:
    return [{"name": n, "uid": 12000 + i, "layout": "overlay" if i % 4 == 0 else "bind", "state": state} for i, n in enumerate(NAMES)]


@pytest.fixture
def split(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bulk runs of two jails or more split, on a node with two CPUs whatever this host has."""
    monkeypatch.setattr(forked, "FORK_FROM", 2)
    monkeypatch.setattr(forked.os, "sched_getaffinity", lambda pid: {0, 1})


def mounts_by_process(monkeypatch: pytest.MonkeyPatch, log: str, fail: str = "", where: str = "", error: type = JailError) -> None:
    """Have apply's mount_jail write its process id and jail to log first; for the jail `fail`,
    raise `error` instead of mounting, in this process (where='here') or the child ('there')."""
    real, parent = apply.mount_jail, os.getpid()

    def mount_jail(cfg, plan, state=None, anchors=None):  # apply.mount_jail, with the same arguments
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, f"{os.getpid()} {plan.name}\n".encode())
        os.close(fd)
        if plan.name == fail and (os.getpid() == parent) == (where == "here"):
            raise error(f"planted failure at {fail}")
        return real(cfg, plan, state, anchors)

    monkeypatch.setattr(apply, "mount_jail", mount_jail)


def outcome(cfg: Config, results: list) -> list[tuple]:
    """What a run reports, its node's paths made alike."""

    def alike(text: str) -> str:
        return text.replace(str(cfg.jails_dir), "JAILS").replace(str(cfg.tenants_dir), "TENANTS")

    return [(r.name, r.state, r.changed, [alike(a) for a in r.actions], r.after.get("state")) for r in results]


def test_a_split_run_does_what_one_process_does(
    cfg: Config, tmp_path: Path, image_store: Path, monkeypatch: pytest.MonkeyPatch, split: None
) -> None:
    (tmp_path / "alone").mkdir()
    alone = make_config(tmp_path / "alone", image_store)
    log = str(tmp_path / "mounts")
    mounts_by_process(monkeypatch, log)
    for state in ("present", "mounted", "mounted", "unmounted", "mounted"):
        monkeypatch.setattr(forked, "FORK_FROM", 2)
        there = converge_many(cfg, items(state))
        monkeypatch.setattr(forked, "FORK_FROM", 10**9)
        here = converge_many(alone, items(state))
        assert outcome(cfg, there) == outcome(alone, here)  # in the items' order, before and after read in the child too
        assert [r.name for r in there] == NAMES
        assert mounted(cfg) == mounted(alone) == (set() if state in ("present", "unmounted") else set(NAMES))
    with open(log) as fh:
        by = [line.split() for line in fh.read().splitlines()]
    split_pids = {pid for pid, _name in by[: len(NAMES)]}  # the first mount: this run's, two processes
    assert len(split_pids) == 2
    assert sorted(name for _pid, name in by[: len(NAMES)]) == NAMES
    monkeypatch.setattr(forked, "FORK_FROM", 2)
    gone = converge_many(cfg, items("absent")[3:], exclusive=False)
    assert all(r.changed for r in gone) and mounted(cfg) == set(NAMES[:3])
    kept = converge_many(cfg, items("mounted")[:2], exclusive=True)  # b02 is unlisted: removed, in the child or here
    assert [r.name for r in kept] == ["b00", "b01", "b02"] and [r.changed for r in kept] == [False, False, True]
    assert mounted(cfg) == {"b00", "b01"}
    converge_many(cfg, [{"name": n, "state": "absent", "purge": True} for n in NAMES[:2]])
    converge_many(alone, [{"name": n, "state": "absent", "purge": True} for n in NAMES])


@pytest.mark.parametrize("where", ["here", "there"])
def test_a_failure_in_either_half_stops_the_run_and_names_the_jail(
    cfg: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: None, where: str
) -> None:
    converge_many(cfg, items("present"))
    failing = "b06" if where == "here" else "b05"  # even items stay here, odd ones go to the child
    mounts_by_process(monkeypatch, str(tmp_path / "mounts"), fail=failing, where=where)
    with pytest.raises(PartialFailure) as err:
        converge_many(cfg, items("mounted"))
    failure = err.value
    assert failure.failed == failing and f"planted failure at {failing}" in failure.error
    done = [r.name for r in failure.results]
    # Every jail is exactly one of: done (mounted, changed), the failed one, not attempted (untouched).
    assert sorted([*done, failing, *failure.not_attempted]) == NAMES
    assert done == sorted(done) and all(r.changed for r in failure.results)
    assert mounted(cfg) == set(done)
    assert f"not attempted: {', '.join(failure.not_attempted)}" in str(failure) if failure.not_attempted else True
    # The next run, without the planted failure, finishes the job.
    monkeypatch.undo()
    converge_many(cfg, items("mounted"))
    assert mounted(cfg) == set(NAMES)
    converge_many(cfg, [{"name": n, "state": "absent", "purge": True} for n in NAMES])


def test_a_crash_in_the_child_is_an_error_naming_the_second_process(
    cfg: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: None
) -> None:
    converge_many(cfg, items("present"))
    mounts_by_process(monkeypatch, str(tmp_path / "mounts"), fail="b03", where="there", error=RuntimeError)
    with pytest.raises(JailError, match=r"second process of this bulk run failed: RuntimeError: planted failure at b03"):
        converge_many(cfg, items("mounted"))
    assert "b03" not in mounted(cfg)
    monkeypatch.undo()
    converge_many(cfg, [{"name": n, "state": "absent", "purge": True} for n in NAMES])
    assert mounted(cfg) == set()


def test_what_is_not_split(split: None) -> None:
    plain = SimpleNamespace(spec=SimpleNamespace(net="none"))
    private = SimpleNamespace(spec=SimpleNamespace(net="private"))
    absent = SimpleNamespace(spec=None)
    assert lifecycle._forks([plain, absent], [plain, plain], check=False)
    assert not lifecycle._forks([plain, absent], [plain, plain], check=True)  # check mode: one process
    assert not lifecycle._forks([plain, plain], [plain, private], check=False)  # the node's bridge: one process makes it
    assert not lifecycle._forks([private, plain], [absent, plain], check=False)  # a removal of one too
    assert not lifecycle._forks([plain], [plain], check=False)  # below FORK_FROM


def test_jail_facts_split_are_the_facts_of_one_process(cfg: Config, monkeypatch: pytest.MonkeyPatch, split: None) -> None:
    converge_many(cfg, [{**item, "state": "mounted" if i % 3 else "present"} for i, item in enumerate(items("x"))])
    (cfg.tenants_dir / "b99").mkdir()  # a directory without a spec: no fact, in either process
    calls = []
    real = forked.map_halves
    monkeypatch.setattr(forked, "map_halves", lambda func, names: calls.append(len(names)) or real(func, names))
    split_facts = jail_facts(cfg)
    assert calls == [len(NAMES) + 1]  # the split ran
    monkeypatch.setattr(forked, "FORK_FROM", 10**9)
    assert split_facts == jail_facts(cfg)
    assert [f["name"] for f in split_facts] == NAMES and sum(f["mounted"] for f in split_facts) == 8
    # A spec that cannot be read: the error the loop in one process raises, whichever half met it.
    for bad in ("b03", "b06"):
        (cfg.tenants_dir / bad / "tenant.json").write_text("{not json")
    monkeypatch.setattr(forked, "FORK_FROM", 2)
    with pytest.raises(JailError) as split_error:
        jail_facts(cfg)
    monkeypatch.setattr(forked, "FORK_FROM", 10**9)
    with pytest.raises(JailError) as one_error:
        jail_facts(cfg)
    assert str(split_error.value) == str(one_error.value) and "b03" in str(one_error.value)
    converge_many(cfg, [{"name": n, "state": "absent", "purge": True} for n in NAMES if n not in ("b03", "b06")])


def test_map_halves_keeps_order_and_raises_the_first_failure_in_order(split: None) -> None:
    assert forked.map_halves(lambda x: (x, os.getpid()), list(range(7)))[::2] == [(x, os.getpid()) for x in range(0, 7, 2)]
    got = forked.map_halves(lambda x: (x, os.getpid()), list(range(7)))
    assert [x for x, _pid in got] == list(range(7)) and len({pid for _x, pid in got}) == 2

    def fails_at(bad: set[int]):
        def func(x: int) -> int:
            if x in bad:
                raise JailError(f"item {x} is bad")
            return x

        return func

    for bad, first in (({5}, 5), ({4}, 4), ({3, 6}, 3), ({2, 5}, 2)):  # in the child, here, or both
        with pytest.raises(JailError, match=rf"^item {first} is bad$"):
            forked.map_halves(fails_at(bad), list(range(8)))

    class Unpicklable(Exception):
        def __reduce__(self):  # an exception that cannot cross the process boundary
            raise TypeError("no")

    def odd(x: int) -> int:
        if x == 1:
            raise Unpicklable("local")
        return x

    with pytest.raises(JailError, match=r"second process of this read failed: Unpicklable: local"):
        forked.map_halves(odd, list(range(4)))
