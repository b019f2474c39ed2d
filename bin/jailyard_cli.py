"""jailctl, the node CLI: list, status, create, mount, unmount, remove, run, shell, sessions, kill, expire, gc, images,
install, uninstall."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jailyard import image as images
from jailyard.config import DEFAULT_CONFIG_PATH, Config, load_config
from jailyard.control import SESSION_COLUMNS, kill_sessions, kill_summary, list_sessions, session_row
from jailyard.errors import JailError
from jailyard.expiry import expire_pass
from jailyard.lifecycle import converge, jail_facts
from jailyard.registry import load_spec
from jailyard.spec import LIMIT_KEYS, RESOURCE_KEYS

JAILRUN = "/usr/local/sbin/jailrun"
FLAGS = {"force": "--force", "purge": "--purge", "shared_gid": "--shared-gid"}
UNITS = {"K": 10, "M": 20, "G": 30, "T": 40}  # as jailrun's --mem and --fsize
SIZED = ("mem", "fsize", "disk", "memsw")
# Past tense of the verbs that start an action ("mount alice: /" -> "mounted alice: /").
PAST = {
    "create": "created",
    "fix": "fixed",
    "write": "wrote",
    "mount": "mounted",
    "unmount": "unmounted",
    "remove": "removed",
    "purge": "purged",
    "release": "released",
    "switch": "switched",
    "start": "started",
    "stop": "stopped",
    "restart": "restarted",
}


def _limits(pairs: list[str]) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if sep and key in RESOURCE_KEYS:
            limits[key] = value  # checked by the spec (sizes, weights, CPUs), which names the value
            continue
        if not sep or key not in LIMIT_KEYS:
            raise JailError(f"invalid --limit {pair!r}: expected KEY=N with KEY one of {', '.join(LIMIT_KEYS + RESOURCE_KEYS)}")
        limits[key] = _limit_value(pair, key, value)
    return limits


def _limit_value(pair: str, key: str, value: str) -> int:
    shift = UNITS.get(value[-1:], 0) if key in SIZED else 0
    digits = value[:-1] if shift else value
    if not digits.isascii() or not digits.isdigit():
        units = " with an optional K, M, G or T suffix" if key in SIZED else ""
        raise JailError(f"invalid --limit {pair!r}: the value of {key} must be a non-negative integer{units}, got {value!r}")
    return int(digits) << shift


def _past(action: str) -> str:
    verb, sep, rest = action.partition(" ")
    return f"{PAST[verb]}{sep}{rest}" if verb in PAST else f"done: {action}"


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _package_columns(fact: dict[str, Any]) -> dict[str, str]:
    """Issue 15, the registry: the package installed, its version and hash, when, how the last install went, the program."""
    pkg = fact.get("package") or {}
    return {
        "package": f"{pkg['name']} {pkg.get('version') or '-'}" if pkg.get("name") else "-",
        "hash": (pkg.get("hash") or "-")[:12],
        "installed": pkg.get("installed") or "-",
        "result": pkg.get("result") or "-",
        "program": " ".join(fact.get("program") or []) or "-",
    }


def cmd_list(cfg: Config, args: argparse.Namespace) -> Any:
    facts = jail_facts(cfg, args.pattern)
    if args.json:
        return facts
    rows = [
        {
            "name": f["name"],
            "uid": f["uid"],
            "layout": f["layout"],
            "image": f["image_id"][:12],
            "mounted": "yes" if f["mounted"] else ("partly" if any(m["mounted"] for m in f["mounts"]) else "no"),
            "sessions": len(f["sessions"]),
            **_package_columns(f),
        }
        for f in facts
    ]
    columns = ["name", "uid", "layout", "image", "mounted", "sessions"]
    if any(f.get("package") for f in facts):  # the registry's columns, on a node with packages
        columns += ["package", "hash", "installed", "result"]
    if any(f.get("program") for f in facts):
        columns.append("program")
    return _table(rows, columns)


def cmd_install(cfg: Config, args: argparse.Namespace) -> Any:
    """Issue 15: install or update a tenant package (a directory or a tarball) on this node."""
    from jailyard.package import install

    result = install(cfg, args.path, check=args.check, jailrun=shutil.which("jailrun") or JAILRUN, sources=args.sources)
    if args.json:
        return result
    name, after, before = result["name"], result["after"], result["before"]
    if result["action"] == "none":
        return f"{name}: {after.get('version')} is installed already ({after.get('hash', '')[:12]})"
    verb, done = {"create": ("install", "installed"), "update": ("update", "updated")}[result["action"]]
    if args.check:
        return f"{name}: would {verb} {before.get('version') or '-'} -> {after['version']}"
    return f"{name}: {done} {before.get('version') or '-'} -> {after['version']} (log {result['log']})"


def cmd_inbox(cfg: Config, args: argparse.Namespace) -> Any:
    """Issue 15: one pass over a packages inbox (the path unit or cron job of the inbox runs this)."""
    from jailyard.package import inbox_pass

    report = inbox_pass(cfg, args.inbox, jailrun=shutil.which("jailrun") or JAILRUN, sources=args.sources)
    if args.json:
        return report
    lines = [f"{'ok' if r['ok'] else 'failed'} {r['package']}: {r['result']} -> {r['moved_to']}" for r in report]
    if any(not r["ok"] for r in report):
        raise JailError("\n".join(lines))
    return "\n".join(lines) or "inbox: nothing to install"


def cmd_uninstall(cfg: Config, args: argparse.Namespace) -> Any:
    from jailyard.package import uninstall

    result = uninstall(cfg, args.name, purge=args.purge, check=args.check)
    if args.json:
        return result
    if not result["changed"]:
        return f"{args.name}: not installed"
    kept = "" if args.purge else " (home kept)"
    return f"{args.name}: {'would remove' if args.check else 'removed'} {result['before'].get('version') or '-'}{kept}"


def cmd_status(cfg: Config, args: argparse.Namespace) -> Any:
    facts = [f for f in jail_facts(cfg, args.name, disk_usage=args.disk_usage) if f["name"] == args.name]
    if not facts:
        raise JailError(f"unknown jail {args.name!r}")
    fact = facts[0]
    if args.json:
        return fact
    lines = [f"{k}: {v}" for k, v in fact.items() if k not in ("mounts", "limits", "service", "service_status")]
    lines.append("limits: " + " ".join(f"{k}={v}" for k, v in fact["limits"].items()))
    lines += [f"mount {m['target']}: {'mounted' if m['mounted'] else 'not mounted'}" for m in fact["mounts"]]
    if fact["service"] or fact["service_status"]["running"]:
        lines.append(f"service: {'' if fact['service'] else '(not wanted) '}{_service_line(fact['service_status'])}")
    return "\n".join(lines)


STATS_COLUMNS = ["name", "resource", "current", "peak", "limit", "failcnt"]


def cmd_stats(cfg: Config, args: argparse.Namespace) -> Any:
    """Beancounters (usage.py): per tenant and resource, current, peak, limit and failure count."""
    facts = jail_facts(cfg, args.name or "*", usage=True)
    if args.name and not facts:
        raise JailError(f"unknown jail {args.name!r}")
    if args.json:
        return {f["name"]: f["usage"] for f in facts}
    rows = []
    for fact in facts:
        for resource, row in fact["usage"].items():
            cells = {k: _stat_cell(resource, k, row.get(k)) for k in ("current", "peak", "limit", "failcnt")}
            if row.get("full"):
                cells["failcnt"] = "full"
            rows.append({"name": fact["name"], "resource": resource, **cells})
    return _table(rows, STATS_COLUMNS)


def _stat_cell(resource: str, key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "limit" and not value:
        return "none"
    if key == "failcnt":
        return str(value)
    if resource in ("memory", "disk") and isinstance(value, int):
        for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
            if value >= 1 << shift:
                return f"{value / (1 << shift):.1f}{unit}"
    if resource == "cpu":
        return f"{value:g}" if key == "limit" else f"{value:.2f}s"
    return str(value)


def _service_line(st: dict[str, Any]) -> str:
    if not st["running"]:
        return "not running"
    return f"{st['state']} (session {st['session'] or '-'}, starts {st['starts']}, failures {st['failures']}, last exit {st['last_exit']})"


def _change(state: str) -> Callable[[Config, argparse.Namespace], Any]:
    def run(cfg: Config, args: argparse.Namespace) -> Any:
        params: dict[str, Any] = {"name": args.name, "state": state}
        for key in ("uid", "gid", "layout", "image", "hostname", "force", "purge"):
            if getattr(args, key, None) is not None:
                params[key] = getattr(args, key)
        if getattr(args, "net", None):
            params["net"] = args.net  # issue 17: none, host (bare --net, as before) or private
        if getattr(args, "shared_gid", False):
            params["shared_gid"] = True
        if getattr(args, "program", None) is not None:
            params["program"] = args.program
        if getattr(args, "service", None) is not None:
            params["service"] = args.service
        if getattr(args, "admin", False):
            params["admin"] = True
        if getattr(args, "limit", None):
            params["limits"] = _limits(args.limit)
        if state in ("mounted", "unmounted") and params.get("uid") is None and load_spec(cfg, args.name) is None:
            raise JailError(f"unknown jail {args.name!r}" + (" (give --uid to create it)" if state == "mounted" else ""))
        result = converge(cfg, params, check=args.check, flags=FLAGS)
        if args.json:
            return result.as_dict()
        if not result.actions:
            return f"{args.name}: nothing to do ({result.after.get('state')})"
        if args.check:
            return "\n".join(f"{args.name}: would {a}" for a in result.actions)
        return "\n".join(f"{args.name}: {_past(a)}" for a in result.actions)

    return run


def cmd_run(cfg: Config, args: argparse.Namespace) -> Any:
    jailrun = shutil.which("jailrun") or JAILRUN
    argv = [jailrun, *args.jailrun_args]
    os.execv(jailrun, argv)


def cmd_shell(cfg: Config, args: argparse.Namespace) -> Any:
    jailrun = shutil.which("jailrun") or JAILRUN
    os.execv(jailrun, [jailrun, "--pty", args.name, "--", args.program])


def cmd_sessions(cfg: Config, args: argparse.Namespace) -> Any:
    found = list_sessions(cfg, args.name)
    if args.json:
        return [s.as_dict() for s in found]
    return _table([session_row(s) for s in found], SESSION_COLUMNS)


def cmd_kill(cfg: Config, args: argparse.Namespace) -> Any:
    result = kill_sessions(cfg, args.name, session=args.session, sig=args.signal)
    return result if args.json else kill_summary(args.name, result)


def cmd_expire(cfg: Config, args: argparse.Namespace) -> Any:
    report = expire_pass(cfg)
    if args.json:
        return report.as_dict()
    lines = [f"unmounted {name}" for name in report.unmounted]
    lines += [f"error {name}: {err}" for name, err in report.errors.items()]
    lines += [f"removed the cgroup of a killed session: {path}" for path in report.stale_cgroups]
    first = " (first pass: recording only)" if report.previous_pass is None else ""
    lines.append(
        f"expiry pass{first}: {report.mounted} mounted, {len(report.unmounted)} unmounted, "
        f"{len(report.kept_in_use)} in use, {len(report.kept_busy)} busy, {report.seconds:.3f}s"
    )
    if report.errors:
        raise JailError("\n".join(lines))
    return "\n".join(lines)


def cmd_gc(cfg: Config, args: argparse.Namespace) -> Any:
    removed = images.gc_images(cfg, check=args.check)
    if args.json:
        return {"removed": removed, "check": args.check}
    verb = "would remove" if args.check else "removed"
    return "\n".join(f"{verb} image {i}" for i in removed) or "no unused image"


def cmd_images(cfg: Config, args: argparse.Namespace) -> Any:
    listed = images.list_images(cfg)
    if args.json:
        return listed
    rows = [{**row, "current": "yes" if row["current"] else "no", "in_use": "yes" if row["in_use"] else "no"} for row in listed]
    return _table(rows, ["id", "current", "in_use", "created", "size"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jailctl", description="Operate the tenant jails of this node.")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="node config (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[..., Any], help_text: str, jail: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts")
        if jail:
            p.add_argument("name", metavar="NAME", help="the jail (tenant) name")
        return p

    p = add("list", cmd_list, "List jails with their mount state and live sessions.", jail=False)
    p.add_argument("pattern", nargs="?", default="*", help="a glob of names (default: all)")
    p = add("status", cmd_status, "Show one jail: spec, each mount, sessions.")
    p.add_argument("--disk-usage", action="store_true", help="also add up the tenant's disk usage")
    for name, state, help_text in (
        ("create", "present", "Create a jail (spec, plan, home) without mounting it."),
        ("mount", "mounted", "Mount a jail (creating it first if --uid is given)."),
        ("unmount", "unmounted", "Unmount a jail; refused while a session is live unless --force."),
        ("remove", "absent", "Remove a jail; its home is kept unless --purge."),
    ):
        p = add(name, _change(state), help_text)
        p.add_argument("--check", action="store_true", help="only say what would change")
        if state != "absent":
            p.add_argument("--uid", type=int, help="tenant uid (required to create)")
            p.add_argument("--gid", type=int, help="tenant gid (default: the uid); another tenant's only with --shared-gid")
            p.add_argument("--shared-gid", action="store_true", help="allow a gid that is another tenant's group")
            p.add_argument("--layout", choices=("bind", "overlay"), help="bind (default) or overlay")
            p.add_argument("--image", help="an image id or 'current' (default)")
            p.add_argument("--hostname", help="hostname inside the jail (default: the name)")
            p.add_argument(
                "--net",
                nargs="?",
                const="host",
                choices=["none", "host", "private"],
                help="the network: private (its own, made at mount), host (bare --net: jailrun --net; needs net_host = 1) or none",
            )
            p.add_argument(
                "--admin", action="store_true", help="tenant root: run as uid 0 of its own user namespace (overlay layout, at creation)"
            )
            p.add_argument(
                "--limit",
                action="append",
                metavar="KEY=N",
                help=f"a limit: {', '.join(LIMIT_KEYS + RESOURCE_KEYS)} (mem, fsize, disk, memsw: K, M, G, T suffixes; cpu_rate in CPUs)",
            )
        if state in ("present", "mounted"):
            p.add_argument("--program", help="the tenant's program: an absolute path inside the jail and its arguments (shell words)")
            p.add_argument(
                "--service",
                action=argparse.BooleanOptionalAction,
                default=None,
                help="run --program as a service while mounted (restarted on failure); --no-service stops it",
            )
        if state in ("unmounted", "absent"):
            p.add_argument("--force", action="store_true", default=None, help="unmount even with live sessions")
        if state == "absent":
            p.add_argument("--purge", action="store_true", default=None, help="also delete home and upper layer")
    p = sub.add_parser(
        "run", help="Run a program in a jail through jailrun.", description="jailctl run NAME [jailrun options] -- PROGRAM [ARGS...]"
    )
    p.set_defaults(func=cmd_run)
    p.add_argument("jailrun_args", nargs=argparse.REMAINDER, help="passed to jailrun as they are")
    p = add("shell", cmd_shell, "An interactive shell in a jail, on a terminal of its own (jailrun --pty).")
    p.add_argument("--program", default="/bin/sh", help="the shell, a path inside the jail (default: %(default)s)")
    p = add(
        "stats", cmd_stats, "Beancounters: per tenant memory, processes, CPU, disk, inodes: current, peak, limit, failures.", jail=False
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="one jail (default: every jail)")
    p = add("sessions", cmd_sessions, "List live sessions: pid, caller, program, start, CPU, memory, terminal.", jail=False)
    p.add_argument("name", nargs="?", metavar="NAME", help="one jail (default: every jail)")
    p = add("kill", cmd_kill, "End one or all of a jail's sessions, every process of each (no escape by forking).")
    p.add_argument("--session", type=int, metavar="PID", help="only this session: its pid in `jailctl sessions`")
    p.add_argument("--signal", default="KILL", metavar="SIG", help="a name or number (default: KILL, the one that surely ends it)")
    add("expire", cmd_expire, "Unmount jails nobody entered since the previous pass.", jail=False)
    p = add("gc", cmd_gc, "Remove base images no jail uses (never the current one).", jail=False)
    p.add_argument("--check", action="store_true", help="only say what would be removed")
    add("images", cmd_images, "List base images and which are in use.", jail=False)
    p = add("install", cmd_install, "Install or update a tenant package (a directory or tarball with config.json and progs/).", jail=False)
    p.add_argument("path", metavar="PATH", help="the package")
    p.add_argument("--check", action="store_true", help="only say what would change")
    p.add_argument("--sources", help="a sources.list text for the package's Debian depends (default: the host's)")
    p = add("inbox", cmd_inbox, "Install every package dropped into an inbox; move each to done/ or failed/ with its log.", jail=False)
    p.add_argument("inbox", metavar="DIR", help="the inbox directory")
    p.add_argument("--sources", help="a sources.list text for the packages' Debian depends (default: the host's)")
    p = add("uninstall", cmd_uninstall, "Remove a packaged tenant; its home is kept unless --purge.")
    p.add_argument("--check", action="store_true", help="only say what would change")
    p.add_argument("--purge", action="store_true", help="also delete its home, upper layer and install logs")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = load_config(Path(args.config))
        out = args.func(cfg, args)
    except JailError as exc:
        print(f"jailctl: error: {exc}", file=sys.stderr)
        return 1
    except PermissionError as exc:
        print(f"jailctl: error: {exc.filename}: permission denied (run as root)", file=sys.stderr)
        return 1
    try:
        if args.json:
            json.dump(out, sys.stdout, indent=2, sort_keys=True, default=str)
            sys.stdout.write("\n")
        elif out:
            print(out)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left (`jailctl --json list | head -3`): stop quietly, as `cat` would.
        # Python flushes stdout again at exit; point it at /dev/null so that finds nothing to write.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # 128 + SIGPIPE, what a shell reports for a program the pipe ended
    return 0
