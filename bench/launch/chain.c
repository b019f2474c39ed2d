/* chain SOCKET NAME PROGRAM [ARGS...] [:: PROGRAM [ARGS...]]...: one timed cold-launch candidate.
 * Unless SOCKET is "-", first asks the mount service listening there to mount NAME (connect,
 * send the name, wait for its one-byte answer: 0 = mounted); then runs each command in turn
 * (posix_spawn + wait). Prints the wall time of the whole chain in microseconds; exits
 * non-zero when the service said no or a command did not exit 0. Bench only (bench/launch). */
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
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

static int ask(const char *path, const char *name)
{
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (fd < 0 || strlen(path) >= sizeof sa.sun_path)
        return 1;
    strcpy(sa.sun_path, path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        return 1;
    if (send(fd, name, strlen(name), 0) < 0)
        return 1;
    char answer = 1;
    if (recv(fd, &answer, 1, 0) != 1)
        return 1;
    close(fd);
    return answer;
}

int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    double a = now_us();
    if (strcmp(argv[1], "-") != 0 && ask(argv[1], argv[2]) != 0) {
        fprintf(stderr, "chain: the mount service refused or failed\n");
        return 3;
    }
    int i = 3;
    while (i < argc) {
        int j = i;
        while (j < argc && strcmp(argv[j], "::") != 0)
            j++;
        argv[j < argc ? j : argc] = NULL;
        pid_t pid;
        int st = 0;
        if (posix_spawn(&pid, argv[i], NULL, NULL, argv + i, environ) != 0)
            return 4;
        waitpid(pid, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "chain: %s exited %d\n", argv[i], WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
            return 5;
        }
        i = j + 1;
    }
    printf("%.1f\n", now_us() - a);
    return 0;
}
