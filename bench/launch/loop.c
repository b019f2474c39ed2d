/* loop N PROGRAM [ARGS...]: run PROGRAM N times (posix_spawn + wait) and print
 * each launch's wall time in microseconds, one per line. Exits non-zero if
 * any run did not exit 0. LOOP_GAP_MS=M sleeps M ms before each launch (not
 * timed), to measure launches on an otherwise idle host. */
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    int n = atoi(argv[1]), bad = 0;
    const char *gap_env = getenv("LOOP_GAP_MS");
    long gap_ms = gap_env ? atol(gap_env) : 0;
    for (int i = 0; i < n; i++) {
        struct timespec a, b;
        if (gap_ms > 0) {
            struct timespec gap = {gap_ms / 1000, (gap_ms % 1000) * 1000000L};
            nanosleep(&gap, NULL);
        }
        pid_t pid;
        int st;
        clock_gettime(CLOCK_MONOTONIC, &a);
        if (posix_spawn(&pid, argv[2], NULL, NULL, argv + 2, environ) != 0)
            return 3;
        waitpid(pid, &st, 0);
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            bad = 1;
        printf("%.1f\n", (double)(b.tv_sec - a.tv_sec) * 1e6 + (double)(b.tv_nsec - a.tv_nsec) / 1e3);
    }
    return bad;
}
