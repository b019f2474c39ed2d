/* Attacks a hostile tenant tries from inside a jail (tests/launcher).
 * Exit 0 = the attack worked, 1 = it was stopped, 2 = usage. One line on stdout says what happened. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static int result(int ok, const char *what)
{
    printf("%s %s%s%s\n", ok ? "WORKED" : "STOPPED", what, ok ? "" : ": ", ok ? "" : strerror(errno));
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    const char *cmd = argv[1], *arg = argc > 2 ? argv[2] : "";
    char buf[4096];
    if (!strcmp(cmd, "abstract")) {    /* connect to the abstract unix socket @arg */
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        size_t len = strlen(arg);
        if (len == 0 || len >= sizeof sa.sun_path - 1)
            return 2;
        memcpy(sa.sun_path + 1, arg, len);
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        return result(s >= 0 && connect(s, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len)) == 0,
                      "connect to an abstract unix socket");
    }
    if (!strcmp(cmd, "read")) {
        int fd = open(arg, O_RDONLY);
        return result(fd >= 0 && read(fd, buf, sizeof buf) >= 0, arg);
    }
    if (!strcmp(cmd, "readfd")) {
        int fd = atoi(arg);
        struct stat st;
        if (fstat(fd, &st) < 0)
            return result(0, "fstat");
        int sub = openat(fd, argc > 3 ? argv[3] : ".", O_RDONLY);
        return result(sub >= 0 || read(fd, buf, sizeof buf) >= 0, "fd");
    }
    if (!strcmp(cmd, "write")) {
        int fd = open(arg, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        return result(fd >= 0 && write(fd, "x", 1) == 1, arg);
    }
    if (!strcmp(cmd, "mknod"))
        return result(mknod(arg, S_IFCHR | 0666, makedev(1, 3)) == 0, "mknod");
    if (!strcmp(cmd, "mount"))
        return result(mount("none", arg, "tmpfs", 0, NULL) == 0, "mount");
    if (!strcmp(cmd, "userns")) {
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
            return result(0, "unshare(CLONE_NEWUSER|CLONE_NEWNS)");
        return result(mount("none", arg, "tmpfs", 0, NULL) == 0, "mount in a user namespace");
    }
    if (!strcmp(cmd, "kill"))
        return result(kill(atoi(arg), SIGKILL) == 0, "kill");
    if (!strcmp(cmd, "ptrace"))
        return result(ptrace(PTRACE_ATTACH, atoi(arg), 0, 0) == 0, "ptrace");
    if (!strcmp(cmd, "tiocsti")) {
        const char *s = "echo INJECTED\n";
        int ok = 1;
        for (const char *c = s; *c && ok; c++)
            ok = ioctl(0, TIOCSTI, c) == 0;
        return result(ok, "TIOCSTI");
    }
    if (!strcmp(cmd, "forkloop")) {
        /* Every process forks for ever, retrying when the pids limit refuses: a session that
         * is never still, for `jailctl kill`. Prints "looping" once the first fork worked. */
        int said = 0;
        for (;;) {
            pid_t p = fork();
            if (p > 0 && !said) {
                printf("looping\n");
                fflush(stdout);
                said = 1;
            }
            if (p < 0)
                usleep(1000);
        }
    }
    if (!strcmp(cmd, "forkbomb")) {
        int want = atoi(arg), n = 0;
        static pid_t kids[100000];
        for (; n < want && n < 100000; n++) {
            pid_t p = fork();
            if (p < 0)
                break;
            if (p == 0) {
                pause();
                _exit(0);
            }
            kids[n] = p;
        }
        printf("forked %d\n", n);
        fflush(stdout);
        for (int i = 0; i < n; i++)
            kill(kids[i], SIGKILL);
        while (wait(NULL) > 0)
            ;
        return n >= want ? 0 : 1;
    }
    if (!strcmp(cmd, "memhog")) {
        size_t mb = (size_t)atol(arg);
        for (size_t i = 0; i < mb; i++) {
            char *p = malloc(1 << 20);
            if (!p)
                return result(0, "malloc");
            memset(p, 1, 1 << 20);
        }
        return result(1, "memhog");
    }
    if (!strcmp(cmd, "cpuloop")) {
        /* Spin for ever; with a CPU number, first pin this process to that CPU (sched_setaffinity
         * from inside the jail: the tests put one spinner of each tenant on every CPU). */
        if (*arg) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(atoi(arg), &one);
            if (sched_setaffinity(0, sizeof one, &one) < 0)
                return result(0, "sched_setaffinity");
        }
        for (volatile unsigned long i = 0;; i++)
            ;
    }
    if (!strcmp(cmd, "bigfile")) {
        int fd = open(arg, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        memset(buf, 'x', sizeof buf);
        long want = atol(argv[3]) * 256, i = 0;
        for (; fd >= 0 && i < want; i++)
            if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf)
                break;
        return result(fd >= 0 && i == want, "bigfile");
    }
    if (!strcmp(cmd, "setproject") || !strcmp(cmd, "noinherit")) {
        /* Take the file or dir arg out of the tenant's disk quota (issue 16): set its project id
         * to 0 (FS_IOC_FSSETXATTR), or clear a dir's flags (FS_IOC_SETFLAGS, which drops the
         * project-inherit flag); the owner may do either in the initial user namespace. */
        int fd = open(arg, O_RDONLY);
        if (fd < 0)
            return result(0, "open");
        if (!strcmp(cmd, "setproject")) {
            unsigned char fsx[28] = {0};    /* struct fsxattr: xflags, extsize, nextents, projid, ... */
            if (ioctl(fd, 0x801c581fu /* FS_IOC_FSGETXATTR */, fsx) < 0)
                return result(0, "FS_IOC_FSGETXATTR");
            memset(fsx + 12, 0, 4);
            return result(ioctl(fd, 0x401c5820u /* FS_IOC_FSSETXATTR */, fsx) == 0, "set the project id to 0");
        }
        long flags = 0;
        return result(ioctl(fd, 0x40086602u /* FS_IOC_SETFLAGS */, &flags) == 0, "clear the inode flags");
    }
    if (!strcmp(cmd, "euid")) {
        printf("euid %d\n", (int)geteuid());
        return geteuid() == 0 ? 0 : 1;
    }
    return 2;
}
