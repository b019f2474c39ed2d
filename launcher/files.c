/* Small file helpers and the system calls glibc 2.36 does not wrap. */
#define _GNU_SOURCE
#include "files.h"

#include "audit.h"
#include "jailrun.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

void join(char *out, size_t outlen, const char *a, const char *b)
{
    int n = snprintf(out, outlen, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= outlen)
        die(EXIT_INTERNAL, "path too long: %s/%s", a, b);
}

int sys_openat2(int dirfd, const char *path, int flags, unsigned long long resolve)
{
    struct open_how how = {.flags = (unsigned long long)flags, .mode = 0, .resolve = resolve};
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

int sys_pivot_root(const char *new_root, const char *put_old)
{
    return (int)syscall(SYS_pivot_root, new_root, put_old);
}

int open_beneath(int dirfd, const char *rel, int flags)
{
    return sys_openat2(dirfd, rel, flags | O_CLOEXEC, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
}

ssize_t read_all(int fd, char *buf, size_t size)
{
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

int write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int write_file(const char *path, const char *value)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    int r = write_all(fd, value, strlen(value));
    int saved = errno;
    close(fd);
    errno = saved;
    return r;
}

ssize_t read_small(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read_all(fd, buf, size - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    return n;
}

unsigned long long read_key(const char *path, const char *key)
{
    char buf[4096];
    if (read_small(path, buf, sizeof buf) < 0)
        return 0;
    size_t klen = strlen(key);
    for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ')
            return strtoull(line + klen + 1, NULL, 10);
        if (!key[0])
            return strtoull(line, NULL, 10);
    }
    return 0;
}

int trusted_stat(const struct stat *st)
{
    return st->st_uid == 0 && !(st->st_mode & (S_IWGRP | S_IWOTH));
}

size_t read_trusted(int dirfd, const char *name, char *buf, size_t size, int code, const char *what)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0)
        die_with_error(code, "cannot open %s", what);
    struct stat st;
    if (fstat(fd, &st) < 0)
        die_with_error(code, "cannot stat %s", what);
    if (!S_ISREG(st.st_mode) || !trusted_stat(&st))
        die(code, "%s is not a regular file owned by root and writable only by root", what);
    ssize_t n = read_all(fd, buf, size);
    if (n < 0)
        die_with_error(code, "cannot read %s", what);
    if ((size_t)n == size)
        die(code, "%s is larger than %zu bytes", what, size - 1);
    close(fd);
    buf[n] = '\0';
    return (size_t)n;
}

int ensure_dir(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0 || errno != ENOENT)
        return fd;  /* the common case: made by an earlier launch */
    if (mkdirat(dirfd, name, 0755) < 0 && errno != EEXIST)
        return -1;
    return openat(dirfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}
