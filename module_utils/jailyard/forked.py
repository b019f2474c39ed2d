"""[func(x) for x in items], every second item in a forked copy of this process (issue 21).

For reads over thousands of jails (jail_facts: `jail_info`, `jailctl list`) on a node with two CPUs
or more: the work per jail is mostly Python, so threads would take turns on the interpreter lock,
while two processes run at once. The child computes its half, pickles the results (or the first
exception it met, with its item's index) into a memfd, and leaves with os._exit (no atexit, no
buffer flushed twice). The caller sees what the plain loop gives: the results in the items' order,
or the exception of the first item in that order that raised.

converge_many has its own split (lifecycle._converge_forked): it stops both halves at the first
failure and reports what changed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .errors import JailError

T = TypeVar("T")

FORK_FROM = 1000  # items; below this the fork costs more than it saves


def worth_it(count: int) -> bool:
    """Whether count items are worth a second process on this node."""
    return count >= FORK_FROM and len(os.sched_getaffinity(0)) > 1


def map_halves(func: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
    """[func(x) for x in items], the odd-numbered items in a child process, at the same time."""
    import pickle

    out = os.memfd_create("jailyard-halves", os.MFD_CLOEXEC)
    try:
        pid = os.fork()
        if pid == 0:  # the child: its half, gone, whatever happens (never back into the caller)
            code = 1
            try:
                data = pickle.dumps(_run(func, items, 1), pickle.HIGHEST_PROTOCOL)
                while data:
                    data = data[os.write(out, data) :]
                code = 0
            finally:
                os._exit(code)
        try:
            mine = _run(func, items, 0, keep=True)
        finally:
            status = os.waitpid(pid, 0)[1]
        os.lseek(out, 0, 0)
        with os.fdopen(os.dup(out), "rb") as fh:
            raw = fh.read()
    finally:
        os.close(out)
    if os.WIFSIGNALED(status):
        raise JailError(f"the second process of this read was killed by signal {os.WTERMSIG(status)}")
    if not raw:
        raise JailError(f"the second process of this read reported nothing (exit {os.WEXITSTATUS(status)})")
    theirs = pickle.loads(raw)  # our own child's, through a memfd only we hold
    failures = [f for f in (mine, theirs) if f[0] == "raised"]
    if failures:
        raise min(failures, key=lambda f: f[1])[2]
    results: list[Any] = [None] * len(items)
    results[0::2], results[1::2] = mine[1], theirs[1]
    return results


def _run(func: Callable[[Any], T], items: Sequence[Any], start: int, keep: bool = False) -> tuple:
    """("done", results) for items[start::2], or ("raised", the item's index, the exception).
    keep: the exception as it is (this process); else one that pickles (the child's)."""
    done = []
    for offset, item in enumerate(items[start::2]):
        try:
            done.append(func(item))
        except Exception as exc:  # noqa: BLE001 - raised by the caller, in the items' order
            return "raised", start + 2 * offset, exc if keep else _picklable(exc)
    return "done", done


def _picklable(exc: Exception) -> Exception:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any failure to round-trip: say what it was
        return JailError(f"the second process of this read failed: {type(exc).__name__}: {exc}")
    return exc
