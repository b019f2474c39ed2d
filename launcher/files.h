/* Small file helpers, used with privileges: nothing here follows a path the
 * tenant could have planted (open_beneath), and trusted files are root's. */
#ifndef JAILRUN_FILES_H
#define JAILRUN_FILES_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

/* "a/b"; refuses (dies) rather than truncates. */
void join(char *out, size_t outlen, const char *a, const char *b);

/* Raw system calls glibc 2.36 does not wrap. */
int sys_openat2(int dirfd, const char *path, int flags, unsigned long long resolve);
int sys_pivot_root(const char *new_root, const char *put_old);
/* A path below dirfd, without following any symlink and without leaving it. */
int open_beneath(int dirfd, const char *rel, int flags);

ssize_t read_all(int fd, char *buf, size_t size);
int write_all(int fd, const char *buf, size_t len);
/* A short value into an existing file (cgroup knobs). */
int write_file(const char *path, const char *value);
/* A small (kernel) file as a string; its length, or -1 if missing or empty. */
ssize_t read_small(const char *path, char *buf, size_t size);
/* The number after "key " in a key/value file (the first line's number for ""), or 0. */
unsigned long long read_key(const char *path, const char *key);

/* Root-owned, not group/other writable. */
int trusted_stat(const struct stat *st);
/* A root-owned regular file below dirfd nobody else can write, into buf (dies with code). */
size_t read_trusted(int dirfd, const char *name, char *buf, size_t size, int code, const char *what);
/* dir/name as a directory (root 0755) if missing; an O_PATH fd to it, or -1. */
int ensure_dir(int dirfd, const char *name);

#endif
