"""The launcher's mount step, run as `python3 -I -S jailyard-mount --config CONF [--lock-held] NAME`."""

from __future__ import annotations

import sys
import syslog

from .config import load_config
from .errors import JailError
from .lifecycle import mount_tenant


def main(argv: list[str]) -> int:
    args = list(argv)
    config = None
    lock_held = False
    while args and args[0].startswith("--"):
        opt = args.pop(0)
        if opt == "--config" and args:
            config = args.pop(0)
        elif opt == "--lock-held":
            lock_held = True
        else:
            print(f"jailyard-mount: unknown option {opt!r}", file=sys.stderr)
            return 2
    if config is None or len(args) != 1:
        print("jailyard-mount: usage: jailyard-mount --config CONF [--lock-held] NAME", file=sys.stderr)
        return 2
    try:
        result = mount_tenant(load_config(config), args[0], lock_held=lock_held)
    except JailError as exc:
        print(f"jailyard-mount: {exc}", file=sys.stderr)
        syslog.syslog(syslog.LOG_ERR, f"jailyard-mount: {args[0]}: {exc}")
        return 1
    if result.changed:
        syslog.syslog(syslog.LOG_INFO, f"jailyard-mount: {'; '.join(result.actions)}")
    return 0
