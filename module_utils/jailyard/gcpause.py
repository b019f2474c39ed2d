"""collector_paused: Python's cyclic garbage collector off for the length of one bulk call."""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import Any


def collector_paused(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run func with Python's cyclic garbage collector off (on again after, if it was).

    A bulk pass over 10,000 jails allocates millions of short-lived objects and keeps its results,
    so the collector walked a growing heap again and again: a quarter of a no-op re-converge of
    10,000 jails (issue 21). What the pass makes is freed by reference counting; a cycle it leaves
    waits for the next collection after it. The expiry pass is paused too: with 100,000 tenants'
    results in the caller's heap, a full collection that fell in it took seconds (and, in the
    process it forks, copied every page it touched).
    """

    @functools.wraps(func)
    def paused(*args: Any, **kwargs: Any) -> Any:
        if not gc.isenabled():
            return func(*args, **kwargs)
        gc.disable()
        try:
            return func(*args, **kwargs)
        finally:
            gc.enable()

    return paused
