"""`jailrun --pty` (issue 19): the session's own terminal, driven from a host-side pseudo-terminal.

Each test runs jailrun the way a terminal emulator or a web console does: on
the slave of a pty pair the test made (python's `pty.openpty`), as its
controlling terminal, the test reading and writing the master. Every wait is
bounded; markers are computed by the shell (`A$((1+1))B` prints `A2B`) so the
terminal's echo of a command never satisfies a wait.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

STOPPED = 1


def _ctty() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Console:
    """jailrun --pty on a host pty; `out` is everything it printed so far."""

    def __init__(self, node, *argv: str, rows: int = 24, cols: int = 80, ctty: bool = True) -> None:
        self.master, self.slave = pty.openpty()
        self.set_size(rows, cols)
        self.modes = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen(
            [node.jailrun, *argv],
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            start_new_session=True,
            preexec_fn=_ctty if ctty else None,
            env={"PATH": "/usr/bin:/bin"},
        )
        self.out = b""
        self.seen = 0  # expect() looks past what earlier expects matched

    def set_size(self, rows: int, cols: int) -> None:
        """What a terminal does when its window changes: the kernel signals SIGWINCH to jailrun."""
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every holder of the slave is gone
            return False
        self.out += data
        return bool(data)

    def expect(self, pattern: bytes, timeout: float = 30) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            m = re.compile(pattern).search(self.out, self.seen)
            if m:
                self.seen = m.end()
                return m
            left = deadline - time.monotonic()
            if left <= 0 or (not self._read(min(left, 1.0)) and self.proc.poll() is not None and not self._read(0)):
                raise AssertionError(f"no {pattern!r} in {self.out!r}")

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.2)
        rc = self.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        while self._read(0):
            pass
        return rc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


def console(node, *argv: str, **kw) -> Console:
    return Console(node, "--pty", *argv, **kw)


def test_tty_names_a_terminal_of_the_sessions_own_and_the_exit_status_comes_back(node) -> None:
    """issue 19: without --pty, `tty` said "not a tty" and /dev/tty was ENXIO (no controlling terminal)."""
    c = console(node, "alice", "--", "/bin/sh", "-c", "tty; stty size; echo via-dev-tty > /dev/tty; exit 7")
    try:
        assert c.wait() == 7, c.out
        assert re.search(rb"^/dev/pts/\d+\r$", c.out, re.M), c.out
        assert b"24 80\r\n" in c.out
        assert b"via-dev-tty" in c.out
    finally:
        c.close()


def test_the_terminal_is_the_tenants_and_from_the_sessions_own_devpts(node) -> None:
    c = console(node, "alice", "--", "/bin/sh", "-c", "ls -ln $(tty); ls /dev/pts")
    try:
        assert c.wait() == 0, c.out
        uid = 47101
        assert re.search(rf"crw--w---- +1 +{uid} +{uid} ".encode(), c.out), c.out
        # The session's devpts has only its own terminal: the host's and other sessions' are not there.
        names = set(c.out.split(b"\r\n")[-2].split())
        assert names == {b"0", b"ptmx"}, c.out
    finally:
        c.close()


def test_stty_size_follows_a_resize(node) -> None:
    c = console(node, "alice", "--", "/bin/sh", rows=24, cols=80)
    try:
        c.send(b"stty size; echo A$((1+1))B\r")
        c.expect(rb"24 80\r\nA2B")
        c.set_size(40, 132)
        c.send(b"stty size; echo C$((1+2))D\r")
        c.expect(rb"40 132\r\nC3D")
        c.send(b"exit 3\r")
        assert c.wait() == 3
    finally:
        c.close()


def test_job_control_and_ctrl_c_reaches_the_foreground_job_only(node) -> None:
    c = console(node, "alice", "--", "/bin/sh")
    try:
        c.send(b"sleep 100 &\r")
        c.send(b"jobs; echo J$((4+4))K\r")
        c.expect(rb"\[1\]\+? +Running +sleep 100[^\n]*\n(?:.*\n)*?J8K")
        # A foreground job that says it runs, then Ctrl-C typed at the caller's terminal.
        c.send(b"sh -c 'echo S$((2+3))T; exec sleep 50'\r")
        c.expect(rb"S5T")
        c.send(b"\x03")
        c.send(b"echo R$?Q; jobs; echo E$((6+1))F\r")
        c.expect(rb"R130Q")  # the foreground job died of SIGINT
        c.expect(rb"Running +sleep 100[^\n]*\n(?:.*\n)*?E7F")  # the background job and the shell did not
        c.send(b"kill %1; exit 0\r")
        assert c.wait() == 0, c.out
    finally:
        c.close()


def test_tiocsti_stays_blocked_on_the_sessions_own_terminal(node) -> None:
    """The terminal is now the session's: pushing keystrokes into it must still fail (seccomp)."""
    sysctl = Path("/proc/sys/dev/tty/legacy_tiocsti")
    saved = sysctl.read_text() if sysctl.exists() else None
    if saved is not None:
        sysctl.write_text("1\n")
    try:
        control = console(node, "alice", "--", "/bin/sh", "-c", "echo started")  # the terminal works at all
        try:
            assert control.wait() == 0 and b"started" in control.out
        finally:
            control.close()
        c = console(node, "alice", "--", "/bin/attack", "tiocsti")
        try:
            assert c.wait() == STOPPED, c.out
            assert b"STOPPED" in c.out and b"INJECTED" not in c.out
        finally:
            c.close()
    finally:
        if saved is not None:
            sysctl.write_text(saved)


def test_the_callers_terminal_is_restored_after_the_session(node) -> None:
    c = console(node, "alice", "--", "/bin/sh", "-c", "exit 0")
    try:
        assert c.wait() == 0
        assert termios.tcgetattr(c.slave) == c.modes
    finally:
        c.close()


def test_the_callers_terminal_is_restored_when_jailrun_dies_of_a_signal(node) -> None:
    """A caller may send jailrun any signal; one that ends it must not leave the terminal raw."""
    c = console(node, "alice", "--", "/bin/sh")
    try:
        c.send(b"echo A$((1+1))B\r")
        c.expect(rb"A2B")
        assert termios.tcgetattr(c.slave) != c.modes  # raw while the session runs
        c.proc.send_signal(signal.SIGALRM)
        assert c.wait() == -signal.SIGALRM
        assert termios.tcgetattr(c.slave) == c.modes
    finally:
        c.close()


def test_timeout_under_a_pty(node, tmp_path: Path) -> None:
    meta = tmp_path / "meta"
    c = console(node, "--timeout", "1", "--meta", str(meta), "alice", "--", "/bin/sleep", "100")
    try:
        assert c.wait() == 137, c.out
        assert "killed_by wall" in meta.read_text()
        assert termios.tcgetattr(c.slave) == c.modes
    finally:
        c.close()


def test_the_caller_hanging_up_ends_the_session(node) -> None:
    c = console(node, "alice", "--", "/bin/sh")
    try:
        c.send(b"echo A$((1+1))B\r")
        c.expect(rb"A2B")
        os.close(c.master)  # the terminal emulator (or the web console's socket) went away
        c.master = os.open("/dev/null", os.O_RDONLY)  # for close()
        assert c.proc.wait(timeout=30) == 128 + signal.SIGHUP
    finally:
        c.close()


def test_pty_without_a_terminal_is_refused_naming_what_stdin_is(node) -> None:
    records = node.cfg.run_dir / "sessions" / "alice"
    before = set(records.glob("*"))
    r = node.run("--pty", "alice", "--", "/bin/true", stdin=subprocess.DEVNULL)
    assert r.returncode == 120
    assert "--pty needs a terminal on descriptor 0, which is a device that is not a terminal" in r.stderr
    assert r.stderr.count("\n") == 1
    r = node.run("--pty", "alice", "--", "/bin/true", input="")
    assert r.returncode == 120 and "which is a pipe" in r.stderr, r.stderr
    assert set(records.glob("*")) <= before  # refused before anything was launched


def test_pty_is_an_option_before_name_only(node) -> None:
    """After NAME it is the program (not found); as another option's value it is that value."""
    r = node.run("alice", "--pty", input="")
    assert r.returncode == 127, r.stderr
    r = node.run("--env", "X=--pty", "alice", "--", "/bin/sh", "-c", 'echo "$X"', input="")
    assert r.returncode == 0 and r.stdout == "--pty\n", r.stderr
    r = node.run("--pt", "alice", "--", "/bin/true", input="")  # a unique prefix, like every long option
    assert r.returncode == 120 and "--pty needs a terminal" in r.stderr
    r = node.run("--pty=1", "alice", "--", "/bin/true", input="")
    assert r.returncode == 120 and "bad option '--pty=1'" in r.stderr


def test_the_web_console_recipe_of_the_readme(node) -> None:
    """launcher/README.md, "Consoles": the front end's pty is not jailrun's controlling terminal; a
    resize is TIOCSWINSZ plus SIGWINCH to jailrun, closing the master ends the session."""
    c = console(node, "alice", "--", "/bin/sh", rows=30, cols=90, ctty=False)
    try:
        c.send(b"stty size; echo A$((1+1))B\r")
        c.expect(rb"30 90\r\nA2B")
        c.set_size(50, 120)
        c.proc.send_signal(signal.SIGWINCH)
        c.send(b"stty size; echo C$((1+2))D\r")
        c.expect(rb"50 120\r\nC3D")
        os.close(c.master)
        c.master = os.open("/dev/null", os.O_RDONLY)
        assert c.proc.wait(timeout=30) == 128 + signal.SIGHUP
    finally:
        c.close()


def test_pty_on_a_cold_launch(node) -> None:
    """The jail mounted on demand (PID 1 made during the mount step, its tree sent after): same terminal."""
    from jailyard.lifecycle import converge

    converge(node.cfg, {"name": "pia", "uid": 47121, "state": "present"})
    try:
        c = console(node, "pia", "--", "/bin/sh", "-c", "tty; exit 4")
        try:
            assert c.wait() == 4, c.out
            assert re.search(rb"^/dev/pts/\d+\r$", c.out, re.M), c.out
        finally:
            c.close()
    finally:
        converge(node.cfg, {"name": "pia", "state": "absent", "force": True, "purge": True})


def test_a_program_that_cannot_run_is_reported_on_the_callers_terminal(node) -> None:
    """The error of a failed exec must reach the caller, not the session's terminal nobody reads yet."""
    c = console(node, "alice", "--", "/nope")
    try:
        assert c.wait() == 127
        assert b"cannot run /nope" in c.out, c.out
        assert termios.tcgetattr(c.slave) == c.modes
    finally:
        c.close()
    c = console(node, "--cwd", "/nowhere", "alice", "--", "/bin/true")
    try:
        assert c.wait() == 120
        assert b"cannot change to --cwd /nowhere" in c.out, c.out
    finally:
        c.close()
