/* Supervising a running session and judging how it ended. */
#define _GNU_SOURCE
#include "supervise.h"

#include "audit.h"
#include "cgroup.h"
#include "files.h"
#include "pty.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static double seconds(const struct timeval *tv) { return (double)tv->tv_sec + (double)tv->tv_usec / 1e6; }

/* Forward signals, enforce the wall-clock limit; PID 1's wait status. */
static int wait_for_init(pid_t init, const sigset_t *set, const struct timespec *t0, unsigned long long wall_limit,
                         int *timed_out, struct rusage *ru)
{
    int init_status;
    for (;;) {
        siginfo_t info;
        int sig;
        if (wall_limit) {
            struct timespec now, left;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long long ns = (long long)wall_limit * 1000000000LL - ((now.tv_sec - t0->tv_sec) * 1000000000LL +
                                                                  (now.tv_nsec - t0->tv_nsec));
            if (ns <= 0) {
                sig = -1;
                errno = EAGAIN;
            } else {
                left.tv_sec = ns / 1000000000LL;
                left.tv_nsec = ns % 1000000000LL;
                sig = sigtimedwait(set, &info, &left);
            }
        } else {
            sig = sigwaitinfo(set, &info);
        }
        if (sig < 0 && errno == EAGAIN && !*timed_out) {
            *timed_out = 1;
            kill(init, SIGKILL);    /* PID 1 gone: the kernel kills the whole session */
            continue;
        }
        if (sig < 0 && errno == EAGAIN) {
            sig = sigwaitinfo(set, &info);
        }
        if (sig < 0)
            continue;
        if (sig != SIGCHLD) {
            kill(init, sig);
            continue;
        }
        pid_t r = wait4(init, &init_status, WNOHANG, ru);
        if (r == init)
            return init_status;
    }
}

static const char *verdict(const struct outcome *o, unsigned long long cpu_limit)
{
    int sig = WIFSIGNALED(o->status) ? WTERMSIG(o->status) : 0;
    if (o->timed_out)
        return "wall";
    if (sig == SIGKILL && cg_events(CG_MEMORY) > 0)
        return "memory";
    if (sig == SIGXCPU || (sig == SIGKILL && cpu_limit && seconds(&o->ru.ru_utime) + seconds(&o->ru.ru_stime) >=
                                                              (double)cpu_limit))
        return "cpu";
    if (sig == SIGXFSZ)
        return "fsize";
    if (o->exit_code != 0 && cg_events(CG_PIDS) > 0)
        return "procs";
    if (o->exit_code != 0 && cg_quota_hit())
        return "disk";  /* failed with its project quota or volume full: EDQUOT or ENOSPC stopped it (issue 16) */
    return "none";
}

struct outcome supervise(pid_t init, const sigset_t *set, const struct timespec *start,
                         unsigned long long wall_limit, unsigned long long cpu_limit, int result_fd, int pty)
{
    struct outcome o;
    struct timespec t1;
    memset(&o, 0, sizeof o);
    int init_status = pty ? pty_relay(init, set, start, wall_limit, &o.timed_out, &o.ru)
                          : wait_for_init(init, set, start, wall_limit, &o.timed_out, &o.ru);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    o.wall = (double)(t1.tv_sec - start->tv_sec) + (double)(t1.tv_nsec - start->tv_nsec) / 1e9;
    if (read_all(result_fd, (char *)&o.status, sizeof o.status) != sizeof o.status)
        o.status = init_status;  /* PID 1 itself was killed (timeout, OOM): the session died with it */
    close(result_fd);
    o.exit_code = WIFEXITED(o.status) ? WEXITSTATUS(o.status) : 128 + WTERMSIG(o.status);
    o.killed_by = verdict(&o, cpu_limit);
    return o;
}

void write_meta(int fd, const struct outcome *o, const char *shown_path)
{
    char buf[1024];
    unsigned long long peak = (unsigned long long)o->ru.ru_maxrss * 1024, periods;
    cg_session_peak(&peak);
    double throttled = cg_cpu_throttled(&periods);
    int n = snprintf(buf, sizeof buf,
                     "status %d\n%s %d\ncpu_user %.3f\ncpu_sys %.3f\nwall %.3f\nmem_peak %llu\nkilled_by %s\n"
                     "cpu_throttled %.3f\ncpu_throttled_periods %llu\n",
                     o->exit_code, WIFEXITED(o->status) ? "exitcode" : "signal",
                     WIFEXITED(o->status) ? WEXITSTATUS(o->status) : WTERMSIG(o->status), seconds(&o->ru.ru_utime),
                     seconds(&o->ru.ru_stime), o->wall, peak, o->killed_by, throttled, periods);
    if (write_all(fd, buf, (size_t)n) < 0) {
        char shown[512];
        fprintf(stderr, "jailrun: cannot write --meta %s: %s\n", escape(shown, sizeof shown, shown_path),
                strerror(errno));
    }
    close(fd);
}
