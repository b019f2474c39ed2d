"""Work over thousands of jails in two processes at once, on a node with two CPUs or more (issue 21).

The work per jail is mostly Python, so threads would take turns on the interpreter lock, while
two processes run at once. `split` runs one half here and the other in a forked child, which
pickles its result into a memfd and leaves with os._exit (no atexit, no buffer flushed twice).
`map_halves` is [func(x) for x in items] on it (jail_facts: `jail_info`, `jailctl list`): the
results in the items' order, or the exception of the first item in that order that raised.
converge_many splits a bulk run on it too (lifecycle._converge_forked), each jail under its own
lock, the first failure in either half stopping both.
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
    mine, theirs = split(lambda: _run(func, items, 0, keep=True), lambda: _run(func, items, 1), "this read")
    failures = [f for f in (mine, theirs) if f[0] == "raised"]
    if failures:
        raise min(failures, key=lambda f: f[1])[2]
    results: list[Any] = [None] * len(items)
    results[0::2], results[1::2] = mine[1], theirs[1]
    return results


def split(mine: Callable[[], T], theirs: Callable[[], Any], what: str, interrupted: Callable[[], None] | None = None) -> tuple[T, Any]:
    """(mine(), theirs()), theirs() run in a forked child at the same time; what names the work in errors.

    The child pickles what theirs() returns into a memfd and leaves with os._exit (no atexit, no
    buffer flushed twice). interrupted() is called in the process where the work raised, so the
    other half can stop early (a flag both share). A child that raised, was killed or said
    nothing is a JailError naming the second process, once this process's own half is done."""
    import pickle

    out = os.memfd_create("jailyard-split", os.MFD_CLOEXEC)
    try:
        pid = os.fork()
        if pid == 0:  # the child: its half, gone, whatever happens (never back into the caller)
            code = 1
            try:
                try:
                    data = pickle.dumps(("done", theirs()), pickle.HIGHEST_PROTOCOL)
                except BaseException as exc:  # noqa: BLE001 - handed to the parent
                    if interrupted is not None:
                        interrupted()
                    data = pickle.dumps(("crashed", f"{type(exc).__name__}: {exc}"))
                while data:
                    data = data[os.write(out, data) :]
                code = 0
            finally:
                os._exit(code)
        try:
            here = mine()
        except BaseException:
            if interrupted is not None:
                interrupted()
            raise
        finally:
            status = os.waitpid(pid, 0)[1]
        os.lseek(out, 0, 0)
        with os.fdopen(os.dup(out), "rb") as fh:
            raw = fh.read()
    finally:
        os.close(out)
    if os.WIFSIGNALED(status):
        raise JailError(f"the second process of {what} was killed by signal {os.WTERMSIG(status)}")
    if not raw:
        raise JailError(f"the second process of {what} reported nothing (exit {os.WEXITSTATUS(status)})")
    kind, there = pickle.loads(raw)  # our own child's, through a memfd only we hold
    if kind == "crashed":
        raise JailError(f"the second process of {what} failed: {there}")
    return here, there


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
