"""The launcher's mount step, run as `python3 -I -S jailyard-mount --config CONF [--lock-held] NAME`.

A program, not part of the jailyard library: bin/jailyard-mount (the script the
launcher runs) imports it from beside itself, and the role installs both into
lib_dir next to the jailyard package (a module, so its compiled form is cached;
the script itself is compiled on every run and stays a few lines).

Every cold launch starts a fresh interpreter for this, so its start-up is part
of the launch latency. The common case (the jail has a plan and the image it
names is still current) imports only the light modules (conffile, plan, mount,
kernel, safefs, sessions, lease, and lock when the caller does not hold it: no os,
ctypes, types, dataclasses, pathlib, re or json; tests/integration/test_kernel.py
holds that list) and mounts straight from the plan file. Anything else (no plan
yet, a new current image to switch to) goes through lifecycle.mount_tenant, the
same code the `jail` module and jailctl use.
"""

from __future__ import annotations

import posix
import sys
import syslog

from jailyard.conffile import ConfValues
from jailyard.errors import JailError
from jailyard.lease import acquire, settings_for
from jailyard.mount import mount_jail, mount_state
from jailyard.plan import NAME_PATTERN, is_valid_name, parse_plan
from jailyard.sessions import touch_lastuse


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
    name = args[0]
    try:
        if not is_valid_name(name):
            raise JailError(f"invalid jail name {name!r}: expected a name matching {NAME_PATTERN}")
        cfg = ConfValues(config)
        if lock_held:
            actions = mount_step(cfg, config, name)
        else:
            from jailyard.lock import tenant_lock  # jailrun holds the lock already (--lock-held): not imported then

            with tenant_lock(cfg, name):
                actions = mount_step(cfg, config, name)
    except JailError as exc:
        print(f"jailyard-mount: {exc}", file=sys.stderr)
        syslog.syslog(syslog.LOG_ERR, f"jailyard-mount: {name}: {exc}")
        return 1
    if actions:
        syslog.syslog(syslog.LOG_INFO, f"jailyard-mount: {'; '.join(actions)}")
    return 0


def mount_step(cfg: ConfValues, config: str, name: str) -> list[str]:
    """Mount the jail per its plan (the caller holds the tenant lock); the actions taken."""
    path = f"{cfg.tenants_dir}/{name}/plan"
    try:
        with open(path) as fh:
            plan = parse_plan(fh.read(), path)
    except FileNotFoundError:
        return _full_mount_step(config, name)
    if plan.net == "private":
        return _full_mount_step(config, name)  # issue 17: the tenant's network is made (or repaired) there
    state = mount_state(plan)
    if all(present for _entry, present in state):
        return []
    if not state[0][1]:
        # A fresh mount takes the current image if the jail follows it: only the
        # full step reads the spec to know whether it does.
        try:
            current = posix.readlink(f"{cfg.images_dir}/current")
        except OSError:
            current = None
        if current != plan.image:
            return _full_mount_step(config, name)
    leases = settings_for(config)
    if leases is not None:
        acquire(cfg.tenants_dir, name, leases)  # another node holds it: refused, one line naming it
    done = mount_jail(cfg, plan, state)
    touch_lastuse(cfg, name)
    return [f"mount {name}: {' '.join(done)}"]


def _full_mount_step(config: str, name: str) -> list[str]:
    # Imported here: the heavy modules load only when the fast path cannot serve.
    from jailyard.config import load_config
    from jailyard.lifecycle import mount_tenant

    return mount_tenant(load_config(config), name, lock_held=True).actions
