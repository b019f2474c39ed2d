/* Refusals and launches: stderr for the caller, the audit log and syslog for
 * the operator (docs/contracts.md, "Audit log"). */
#define _GNU_SOURCE
#include "audit.h"

#include "jailrun.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static int audit_fd = -1;
static uid_t caller_uid;
static const char *log_tenant = "-";
static const char *log_program = "-";
static int status_fd = -1;          /* in the jail's processes: where a failure code goes */
static void (*at_exit)(void);

/* What the caller gave never splits a message or a log line, nor sends the
 * terminal a sequence: \\, \n, \t, \r, else \xNN outside printable ASCII; cut to fit. */
const char *escape(char *out, size_t outlen, const char *in)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 5 < outlen; p++) {
        const char *named = *p == '\\' ? "\\\\" : *p == '\n' ? "\\n" : *p == '\t' ? "\\t" : *p == '\r' ? "\\r" : NULL;
        if (named) {
            memcpy(out + o, named, 2);
            o += 2;
        } else if (*p < 0x20 || *p >= 0x7f) {
            o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", *p);
        } else {
            out[o++] = (char)*p;
        }
    }
    out[o] = '\0';
    return out;
}

/* The directory (made root 0750 if missing) must be root's and writable by
 * nobody else, the log a regular root-owned file, not a symlink, with one
 * link. Called once fds 0-2 are in place, before anything else is read. */
const char *audit_open(void)
{
    char dir[PATH_MAX];
    const char *path = JAILRUN_AUDIT_LOG, *slash = strrchr(path, '/');
    if (!slash || slash == path || path[0] != '/' || (size_t)(slash - path) >= sizeof dir)
        return "its path is not absolute";
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
    /* setuid sets only the euid: what this launch creates would get the caller's
     * gid (www-data could then read every tenant's launches), so it is given to root. */
    int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 && errno == ENOENT && mkdir(dir, 0750) == 0) {
        if (lchown(dir, 0, 0) < 0)
            return "cannot give its new directory to root";
        dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    }
    struct stat st;
    if (dfd < 0 || fstat(dfd, &st) < 0)
        return "cannot open its directory";
    if (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH))) {
        close(dfd);
        return "its directory is not owned by root or is writable by others";
    }
    const int flags = O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY;
    int fd = openat(dfd, slash + 1, flags);
    if (fd < 0 && errno == ENOENT) {
        fd = openat(dfd, slash + 1, flags | O_CREAT | O_EXCL, 0640);
        if (fd >= 0 && fchown(fd, 0, 0) < 0) {
            close(fd);
            close(dfd);
            return "cannot give it to root";
        }
        if (fd < 0 && errno == EEXIST) /* made by a concurrent launch meanwhile */
            fd = openat(dfd, slash + 1, flags);
    }
    close(dfd);
    if (fd < 0)
        return errno == ELOOP ? "it is a symlink" : "cannot open it";
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)) ||
        st.st_nlink != 1) {
        close(fd);
        return "it is not a regular file owned by root, writable only by root, with one link";
    }
    audit_fd = fd;
    return NULL;
}

void audit_subject(uid_t caller, const char *tenant, const char *program)
{
    caller_uid = caller;
    if (tenant)
        log_tenant = tenant;
    if (program)
        log_program = program;
}

/* One write (O_APPEND) per line. */
void audit(int priority, const char *fmt, ...)
{
    char text[1400], tenant[200], program[520], line[2048], stamp[32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    escape(tenant, sizeof tenant, log_tenant);
    escape(program, sizeof program, log_program);
    char *sp = strchr(text, ' ');    /* "launch: rest" -> "launch: caller=... rest" */
    int head = sp ? (int)(sp - text) : (int)strlen(text);
    syslog(priority, "%.*s caller=%u tenant=%s program=%s%s", head, text, (unsigned)caller_uid, tenant, program,
           sp ? sp : "");
    if (audit_fd < 0)
        return;
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    int n = snprintf(line, sizeof line, "%s.%03ldZ jailrun[%d]: %.*s caller=%u tenant=%s program=%s%s\n", stamp,
                     now.tv_nsec / 1000000, (int)getpid(), head, text, (unsigned)caller_uid, tenant, program,
                     sp ? sp : "");
    if (n >= (int)sizeof line) {
        n = (int)sizeof line;
        line[n - 1] = '\n';
    }
    if (n > 0 && write(audit_fd, line, (size_t)n) < 0) { /* syslog has the line, if anyone listens */ }
}

void report_to_supervisor(int fd) { status_fd = fd; }

void report_at_exit(void (*cleanup)(void)) { at_exit = cleanup; }

static void vreport(int code, int errnum, const char *fmt, va_list ap) __attribute__((noreturn));
static void vreport(int code, int errnum, const char *fmt, va_list ap)
{
    char raw[1024], msg[1024];
    vsnprintf(raw, sizeof raw, fmt, ap);
    escape(msg, sizeof msg, raw);   /* our own text has nothing to escape: only what came from outside changes */
    if (errnum)
        fprintf(stderr, "jailrun: %s: %s\n", msg, strerror(errnum));
    else
        fprintf(stderr, "jailrun: %s\n", msg);
    if (status_fd >= 0) {
        /* Inside the jail's process tree: the supervisor logs and exits with the code. */
        unsigned char c = (unsigned char)code;
        if (write(status_fd, &c, 1) < 0) { /* nothing more we can do */ }
        _exit(code);
    }
    audit(LOG_WARNING, "refused: code=%d reason=%s%s%s", code, msg, errnum ? ": " : "", errnum ? strerror(errnum) : "");
    if (at_exit)
        at_exit();
    exit(code);
}

void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(code, 0, fmt, ap);
}

void die_with_error(int code, const char *fmt, ...)
{
    int errnum = errno;
    va_list ap;
    va_start(ap, fmt);
    vreport(code, errnum, fmt, ap);
}
