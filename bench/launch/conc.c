/* conc N SECONDS OUT TENANTS PROGRAM [ARGS...]: N workers, each launching PROGRAM in a loop
 * (posix_spawn + wait) for SECONDS, all released at once. In each argument "@@" becomes the
 * worker's tenant index (worker i uses i % TENANTS, so N <= TENANTS gives every worker a tenant
 * of its own). Worker i writes OUT.i: one line per launch, "start_us wall_us status", start
 * relative to the common release. Exits non-zero when a worker could not run. */
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static char *subst(const char *arg, int idx)
{
    const char *at = strstr(arg, "@@");
    if (!at)
        return (char *)arg;
    char num[16];
    snprintf(num, sizeof num, "%d", idx);
    size_t n = strlen(arg) - 2 + strlen(num) + 1;
    char *out = malloc(n);
    if (!out)
        exit(4);
    snprintf(out, n, "%.*s%s%s", (int)(at - arg), arg, num, at + 2);
    return out;
}

static int worker(int i, double seconds, const char *out, int tenants, int argc, char **argv, int gate)
{
    char **args = calloc((size_t)argc + 1, sizeof *args);
    for (int k = 0; k < argc; k++)
        args[k] = subst(argv[k], i % tenants);
    size_t cap = 4096, n = 0;
    double *rec = malloc(cap * 3 * sizeof *rec);
    char c;
    if (read(gate, &c, 1) < 0) /* blocks until the parent closes the gate: EOF */
        return 5;
    double t0 = now_us(), end = t0 + seconds * 1e6;
    while (now_us() < end) {
        double a = now_us();
        pid_t pid;
        int st = 0;
        if (posix_spawn(&pid, args[0], NULL, NULL, args, environ) != 0)
            return 3;
        waitpid(pid, &st, 0);
        double b = now_us();
        if (n == cap) {
            cap *= 2;
            rec = realloc(rec, cap * 3 * sizeof *rec);
        }
        rec[3 * n] = a - t0;
        rec[3 * n + 1] = b - a;
        rec[3 * n + 2] = (WIFEXITED(st) && WEXITSTATUS(st) == 0) ? 0 : 1;
        n++;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s.%d", out, i);
    FILE *f = fopen(path, "w");
    if (!f)
        return 6;
    for (size_t k = 0; k < n; k++)
        fprintf(f, "%.1f %.1f %d\n", rec[3 * k], rec[3 * k + 1], (int)rec[3 * k + 2]);
    return fclose(f) == 0 ? 0 : 6;
}

int main(int argc, char **argv)
{
    if (argc < 6)
        return 2;
    int n = atoi(argv[1]), tenants = atoi(argv[4]);
    double seconds = atof(argv[2]);
    if (n < 1 || tenants < 1 || seconds <= 0)
        return 2;
    int gate[2];
    if (pipe(gate) != 0)
        return 2;
    pid_t *pids = calloc((size_t)n, sizeof *pids);
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] < 0)
            return 2;
        if (pids[i] == 0) {
            close(gate[1]);
            _exit(worker(i, seconds, argv[3], tenants, argc - 5, argv + 5, gate[0]));
        }
    }
    close(gate[0]);
    close(gate[1]); /* release every worker at once */
    int bad = 0;
    for (int i = 0; i < n; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            bad = 1;
    }
    return bad;
}
