/* --pty: a pseudo-terminal from the session's own devpts as the program's
 * controlling terminal, relayed by the supervisor to the caller's terminal.
 *
 * Supervisor: pty_check_caller (fd 0 must be a terminal: its size and modes
 * are read), pty_prepare (a socketpair PID 1 inherits), then, once the
 * program runs, pty_receive (the master), pty_relay (the caller's terminal in
 * raw mode <-> the master, SIGWINCH as TIOCSWINSZ, the wait for PID 1) and
 * pty_restore (the caller's terminal as it was; also on every refusal, from
 * jailrun.c's cleanup). PID 1: pty_open_in_jail (master and slave from
 * /dev/pts/ptmx, the slave the tenant's, the master to the supervisor).
 * The program: pty_attach (its controlling terminal on 0, 1 and 2). */
#ifndef JAILRUN_PTY_H
#define JAILRUN_PTY_H

#include <signal.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <time.h>

/* Refuse (120) unless fd 0 is a terminal; note its modes and size. */
void pty_check_caller(void);
/* The socketpair the master comes back on; before PID 1 is made. */
void pty_prepare(void);
/* PID 1, in the jail's mount namespace, still root: make the pty, send the master. */
void pty_open_in_jail(unsigned long uid, unsigned long gid);
/* PID 1 after forking the program: close the slave, the socket. */
void pty_close_in_init(void);
/* The program, a session leader: the slave as controlling terminal on 0, 1, 2. */
void pty_attach(void);
/* The supervisor, after the program was executed: take the master (125 if it did not come). */
void pty_receive(void);
/* Relay until PID 1 exits; forward the other signals of `set`, kill PID 1 at
 * the wall limit (*timed_out). Returns PID 1's wait status. */
int pty_relay(pid_t init, const sigset_t *set, const struct timespec *t0, unsigned long long wall_limit,
              int *timed_out, struct rusage *ru);
/* The caller's terminal back to its modes (harmless when nothing was changed). */
void pty_restore(void);

#endif
