"""A tenant's program as a service (issue 19, `service: true`): one supervisor loop per tenant.

The loop runs `jailrun NAME -- PROGRAM...` again whenever it fails, waiting
`base * 2**(failures-1)` seconds (at most `max_delay`) between starts, so a
program that exits at once is restarted a few times a minute, never in a
storm; a run that lasted `reset_after` seconds starts the count again. A
program that exits 0 is done (the loop ends). Its state is
`<run_dir>/services/<name>` (JSON: the loop's pid and start time, the
session's launcher pid, failures, last exit, state, next start), which
`jailctl`/`jail_info` show and expiry reads: a jail whose service runs is
not unmounted (its session record keeps it mounted while the program runs;
`service_running` covers the back-off pauses too).

Where systemd runs, the loop is the `ExecStart` of the template unit
`jailyard@NAME.service` (`UNIT`): output to the journal, stopped with the
system, restarted by systemd if the loop itself dies. Elsewhere `start`
detaches it (setsid) with its output appended to `<log_dir>/service-<name>.log` (LOG_DIR, /var/log/jailyard).
`stop` (SIGTERM: passed to the session, SIGKILL after `timeout`) comes before
any unmount.

The spec's `service: true` (a mounted jail's converge starts it: planner.py)
uses `program`, split by `TenantSpec.service_argv` (shlex.split); the
jail_launcher role installs UNIT as /etc/systemd/system/jailyard@.service
(roles/jail_launcher/templates/etc/systemd/system/jailyard@.service.j2, the same text).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import TextIO

from .errors import JailError
from .plan import is_valid_name
from .sessions import process_starttime

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess

    from .config import Config

# subprocess is imported where a loop is run, started or stopped: the mount step
# imports this module (through lifecycle) on every cold launch and never needs it.

JAILRUN = "/usr/local/sbin/jailrun"
LOG_DIR = "/var/log/jailyard"  # without systemd: the loop's output, <LOG_DIR>/service-<name>.log

UNIT = """\
# jailyard: a tenant's program as a service (module_utils/jailyard/service.py). Managed by Ansible.
[Unit]
Description=jailyard tenant service %i
After=local-fs.target

[Service]
Type=simple
ExecStart=/usr/bin/python3 -I -S -c "import sys; sys.path.insert(0, '{lib_dir}'); \\
from jailyard.service import main; sys.exit(main())" --config {config} %i
KillMode=mixed
TimeoutStopSec=30
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
"""


def _say(line: str, stream: TextIO | None = None) -> None:
    """One line to the journal (under systemd) or the service's log: the loop's stdout or stderr."""
    out = stream or sys.stdout
    out.write(line + "\n")
    out.flush()


def _state_path(cfg: Config, name: str) -> str:
    return f"{cfg.run_dir}/services/{name}"


def _write_state(cfg: Config, name: str, state: dict) -> None:
    path = _state_path(cfg, name)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(state, fh, sort_keys=True)
    os.replace(tmp, path)


def status(cfg: Config, name: str) -> dict | None:
    """The service's state if its loop runs, else None (a state left by a dead loop is ignored)."""
    try:
        with open(_state_path(cfg, name)) as fh:
            state = json.load(fh)
    except (FileNotFoundError, ValueError):
        return None
    if process_starttime(int(state.get("pid", 0))) != state.get("starttime"):
        return None
    return state


def service_running(cfg: Config, name: str) -> bool:
    """For expiry: true while the tenant's service loop runs, in a session or between two."""
    return status(cfg, name) is not None


class _Loop:
    def __init__(self, cfg: Config, name: str, argv: list[str], jailrun: str, base: float, max_delay: float, reset_after: float):
        self.cfg, self.name, self.argv, self.jailrun = cfg, name, argv, jailrun
        self.base, self.max_delay, self.reset_after = base, max_delay, reset_after
        self.stopping = False
        self.child: subprocess.Popen | None = None
        self.state = {
            "pid": os.getpid(),
            "starttime": process_starttime(os.getpid()),
            "name": name,
            "program": argv,
            "failures": 0,
            "starts": 0,
            "last_exit": None,
            "session": None,
            "state": "starting",
            "next_start": None,
        }

    def _stop(self, _sig: int, _frame: object) -> None:
        self.stopping = True
        if self.child and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)  # jailrun passes it to the program

    def run(self, stop_timeout: float) -> int:
        import subprocess

        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        try:
            while not self.stopping:
                started = time.monotonic()
                self.child = subprocess.Popen([self.jailrun, self.name, "--", *self.argv], stdin=subprocess.DEVNULL)
                self.state.update(state="running", session=self.child.pid, next_start=None, starts=self.state["starts"] + 1)
                _write_state(self.cfg, self.name, self.state)
                rc = self.child.wait()
                self.state.update(last_exit=rc, session=None)
                if self.stopping:
                    break
                if rc == 0:
                    self.state["state"] = "exited"
                    _say(f"jailyard-service {self.name}: the program exited 0; not restarting it")
                    return 0
                if time.monotonic() - started >= self.reset_after:
                    self.state["failures"] = 0
                self.state["failures"] += 1
                delay = min(self.max_delay, self.base * 2 ** (self.state["failures"] - 1))
                self.state.update(state="backoff", next_start=time.time() + delay)
                _write_state(self.cfg, self.name, self.state)
                _say(f"jailyard-service {self.name}: exit {rc}, failure {self.state['failures']}, restart in {delay:g} s")
                deadline = time.monotonic() + delay
                while not self.stopping and time.monotonic() < deadline:
                    time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))
            return 0
        finally:
            if self.child and self.child.poll() is None:
                try:
                    self.child.wait(timeout=stop_timeout)
                except subprocess.TimeoutExpired:
                    self.child.kill()  # jailrun killed: its session dies with it
                    self.child.wait()
            try:
                os.unlink(_state_path(self.cfg, self.name))
            except FileNotFoundError:
                pass


def run_loop(
    cfg: Config,
    name: str,
    argv: list[str],
    jailrun: str = JAILRUN,
    base: float = 1.0,
    max_delay: float = 60.0,
    reset_after: float = 60.0,
    stop_timeout: float = 10.0,
) -> int:
    """Supervise the tenant's program until SIGTERM (or until it exits 0). Runs in this process."""
    if not is_valid_name(name):
        raise JailError(f"invalid jail name {name!r}")
    if not argv or not argv[0].startswith("/"):
        raise JailError(f"the service program of {name} must be an absolute path inside the jail, got {argv!r}")
    if status(cfg, name) is not None:
        raise JailError(f"the service of jail {name} already runs")
    return _Loop(cfg, name, argv, jailrun, base, max_delay, reset_after).run(stop_timeout)


def _has_systemd() -> bool:
    return os.path.isdir("/run/systemd/system")


def _unit(name: str) -> str:
    return f"jailyard@{name}.service"


def start(
    cfg: Config, name: str, log_dir: str = LOG_DIR, jailrun: str = JAILRUN, systemd: bool | None = None, timeout: float = 30.0
) -> bool:
    """Start the tenant's service (its spec's program); False if it already runs.

    Under systemd: `systemctl start jailyard@NAME.service` (the role installs the template, UNIT).
    Elsewhere: the loop, detached in a session of its own, output appended to
    <log_dir>/service-<name>.log (rotated with the launch log)."""
    import subprocess

    if not is_valid_name(name):
        raise JailError(f"invalid jail name {name!r}")
    if status(cfg, name) is not None:
        return False
    if _has_systemd() if systemd is None else systemd:
        subprocess.run(["systemctl", "start", _unit(name)], check=True, capture_output=True)
    else:
        os.makedirs(log_dir, mode=0o750, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        log = os.open(f"{log_dir}/service-{name}.log", flags, 0o640)
        code = f"import sys; sys.path.insert(0, {str(cfg.lib_dir)!r}); from jailyard.service import main; sys.exit(main())"
        argv = ["/usr/bin/python3", "-I", "-S", "-c", code, "--config", str(cfg.path), "--jailrun", jailrun, name]
        try:
            subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        finally:
            os.close(log)
    deadline = time.monotonic() + timeout
    while status(cfg, name) is None:
        if time.monotonic() > deadline:
            raise JailError(f"the service of jail {name} did not start (see {log_dir}/service-{name}.log or the journal)")
        time.sleep(0.05)
    return True


def stop(cfg: Config, name: str, timeout: float = 30.0) -> bool:
    """Stop the tenant's service loop (and its session); True if one ran. Before any unmount."""
    import subprocess

    state = status(cfg, name)
    if state is None:
        return False
    if _has_systemd() and subprocess.run(["systemctl", "is-active", "--quiet", _unit(name)], check=False).returncode == 0:
        subprocess.run(["systemctl", "stop", _unit(name)], check=True, capture_output=True)
        return True
    pid = int(state["pid"])
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        if process_starttime(pid) != state["starttime"]:
            return False
        signal.pidfd_send_signal(fd, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while process_starttime(pid) == state["starttime"] and time.monotonic() < deadline:
            time.sleep(0.05)
        if process_starttime(pid) == state["starttime"]:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    finally:
        os.close(fd)
    return True


def main(argv: list[str] | None = None) -> int:
    """`... --config FILE NAME`: the unit's ExecStart (and the detached loop where there is no systemd)."""
    import argparse

    from .config import load_config
    from .registry import load_spec

    ap = argparse.ArgumentParser(prog="jailyard-service")
    ap.add_argument("--config", default="/etc/jailyard/jailyard.conf")
    ap.add_argument("--jailrun", default=JAILRUN)
    ap.add_argument("name")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
        spec = load_spec(cfg, args.name)
        if spec is None or not spec.program:
            raise JailError(f"jail {args.name} has no program to run as a service")
        return run_loop(cfg, args.name, spec.service_argv(), jailrun=args.jailrun)
    except JailError as exc:
        _say(f"jailyard-service: error: {exc}", sys.stderr)
        return 1
