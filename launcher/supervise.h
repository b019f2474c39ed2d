/* The supervisor's part once PID 1 runs: wait for the session (forwarding
 * signals, enforcing --timeout), then say how it ended. */
#ifndef JAILRUN_SUPERVISE_H
#define JAILRUN_SUPERVISE_H

#include "jailrun.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <time.h>

struct outcome {
    int status;             /* the program's wait status (PID 1's if it was killed first) */
    int exit_code;          /* what jailrun exits with: the status as a shell shows it */
    int timed_out;
    double wall;            /* seconds since `start` */
    struct rusage ru;       /* PID 1's, its reaped children included */
    const char *killed_by;  /* none, wall, cpu, memory, fsize, procs (docs/contracts.md) */
};

/* Wait for PID 1 with `set` blocked: forward signals in it, kill the session
 * at --timeout (wall_limit seconds after start, 0 = none), read the program's
 * status from result_fd, and judge what stopped it. With pty, relay the
 * session's terminal meanwhile (pty.c). */
struct outcome supervise(pid_t init, const sigset_t *set, const struct timespec *start,
                         unsigned long long wall_limit, unsigned long long cpu_limit, int result_fd, int pty);
/* The --meta lines. */
void write_meta(int fd, const struct outcome *o, const char *shown_path);

#endif
