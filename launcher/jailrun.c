/* jailrun: enter a jailyard jail and run one program in it as the tenant.
 *
 *   jailrun [options] NAME [--] PROGRAM [ARGS...]
 *
 * Threat model. Installed setuid root. Trusted: root, the config file fixed
 * at build time (JAILRUN_CONFIG) when it and its directory are root-owned and
 * not group/other writable, the allowed callers it lists (root and the web
 * server by default), and the root-owned tenant plan and mount helper it
 * names. Everyone else is refused before anything else is read. The tenant is
 * hostile: nothing it can write (its home, tmp, overlay upper) is ever
 * followed as a path by this program with privileges, and inside the jail it
 * runs with no privileges, no host path reachable, its own PID, IPC, UTS,
 * cgroup and (unless allowed) network namespaces, a fresh read-only /proc, a
 * minimal /dev, rlimits and per-tenant cgroup limits. The caller is trusted
 * but careless: its environment, descriptors, umask and terminal never reach
 * the tenant. Anything malformed is refused with one line on stderr, a line
 * in the audit log and an exit code from 120 to 127 (docs/contracts.md); every
 * launch adds one line there too. The audit log (JAILRUN_AUDIT_LOG, fixed at
 * build time) is appended to in a root-owned directory nobody else can write,
 * without following a symlink, whatever daemons run (a copy goes to syslog,
 * journald's or a syslog daemon's /dev/log, when there is one). Every value
 * from the caller is escaped before it is printed or logged: one message is
 * one line.
 *
 * Processes: the launcher (the "supervisor", in the host namespaces) checks,
 * mounts on demand, clones the jail's mount tree, records the session and
 * waits; its child is PID 1 of the jail (a reaper that forwards signals and
 * reaps orphans), whose child execs the program. When the program ends, PID 1
 * exits and the kernel kills whatever is left in the session; PID 1 has a
 * parent-death signal, so the session never outlives the supervisor. On a cold launch
 * the mount step (a fresh Python interpreter, most of the launch) runs while
 * PID 1 is made and joins its cgroups and namespaces; the supervisor then
 * clones the freshly mounted tree and hands it over a socketpair (SCM_RIGHTS).
 *
 * Entering is flat in the number of host mounts: the host mount namespace is
 * never copied. The jail tree is cloned with open_tree(OPEN_TREE_CLONE |
 * AT_RECURSIVE), PID 1 setns()es into a tiny template namespace kept at
 * <run_dir>/mntns (one tmpfs), unshares a copy of that, moves the tree in,
 * pivot_root()s into it and detaches the old root.
 */
#define _GNU_SOURCE
#include "parse.h"
#include "seccomp_filter.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/nsfs.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#ifndef JAILRUN_CONFIG
#define JAILRUN_CONFIG "/etc/jailyard/jailyard.conf"
#endif
#ifndef JAILRUN_AUDIT_LOG
#define JAILRUN_AUDIT_LOG "/var/log/jailyard/launch.log"
#endif

enum {
    EXIT_USAGE = 120,
    EXIT_CALLER = 121,
    EXIT_CONFIG = 122,
    EXIT_TENANT = 123,
    EXIT_MOUNT = 124,
    EXIT_INTERNAL = 125,
    EXIT_NOEXEC = 126,
    EXIT_NOTFOUND = 127,
};

#define JAIL_PATH "/usr/local/bin:/usr/bin:/bin"
#define HELPER_PATH "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
#define NEWROOT "/r"    /* mount point for the jail inside the template namespace */
#define DEVTMPL "/dev"  /* the prepared read-only /dev inside the template namespace */
/* The template's pin; the version changes whenever the template's content does,
 * and a launcher finding an older pin detaches it and builds its own. */
#define TEMPLATE_PIN "mntns-v2"
#define TEMPLATE_PIN_OLD "mntns"

/* ---- who we are and what to say when we stop ---------------------------------- */

static uid_t caller_uid;
static const char *log_tenant = "-";
static const char *log_program = "-";
static int status_fd = -1;  /* in the jail's processes: where a failure code goes */
static char *cmdline_start; /* our argv strings, which /proc/<pid>/cmdline shows */
static size_t cmdline_len;
static void cleanup(void);
static void audit(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* `in` with backslash, control characters and bytes outside printable ASCII
 * as C escapes (\n, \t, \\, \x1b), cut to fit `out`: what the caller gave
 * never splits a message or a log line, nor sends the terminal a sequence. */
static const char *escape(char *out, size_t outlen, const char *in)
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
    cleanup();
    exit(code);
}

static void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(code, 0, fmt, ap);
    va_end(ap);
    _exit(code);
}

static void die_with_error(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die_with_error(int code, const char *fmt, ...)
{
    int errnum = errno;
    va_list ap;
    va_start(ap, fmt);
    vreport(code, errnum, fmt, ap);
    va_end(ap);
    _exit(code);
}

/* "a/b" joined with a separator; refuses rather than truncates. */
static void join(char *out, size_t outlen, const char *a, const char *b)
{
    int n = snprintf(out, outlen, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= outlen)
        die(EXIT_INTERNAL, "path too long: %s/%s", a, b);
}

/* ---- the audit log --------------------------------------------------------------- */

static int audit_fd = -1;

/* Open JAILRUN_AUDIT_LOG for appending: its directory (made root 0750 if
 * missing) must be root's and writable by nobody else, the log itself a
 * regular root-owned file, not a symlink, with one link. Returns the reason
 * when it is not, NULL when open. Called once fds 0-2 are in place. */
static const char *open_audit_log(void)
{
    char dir[PATH_MAX];
    const char *path = JAILRUN_AUDIT_LOG, *slash = strrchr(path, '/');
    if (!slash || slash == path || (size_t)(slash - path) >= sizeof dir)
        return "its path is not absolute";
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
    int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 && errno == ENOENT && mkdir(dir, 0750) == 0)
        dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    struct stat st;
    if (dfd < 0 || fstat(dfd, &st) < 0)
        return "cannot open its directory";
    if (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH))) {
        close(dfd);
        return "its directory is not owned by root or is writable by others";
    }
    int fd = openat(dfd, slash + 1, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0640);
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

/* One line: "<UTC time> jailrun[<pid>]: caller=<uid> tenant=<name> program=<path> <text>" to the audit
 * log (one write, O_APPEND) and the same to syslog. Tenant and program are escaped here. */
static void audit(int priority, const char *fmt, ...)
{
    char text[1400], tenant[200], program[520], line[2048], stamp[32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    escape(tenant, sizeof tenant, log_tenant);
    escape(program, sizeof program, log_program);
    char *sp = strchr(text, ' ');    /* "launch: ..." -> "launch: caller=... rest" */
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

/* ---- raw system calls glibc 2.36 does not wrap ---------------------------------- */

static int sys_openat2(int dirfd, const char *path, int flags, unsigned long long resolve)
{
    struct open_how how = {.flags = (unsigned long long)flags, .mode = 0, .resolve = resolve};
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

static int sys_pivot_root(const char *new_root, const char *put_old)
{
    return (int)syscall(SYS_pivot_root, new_root, put_old);
}

static pid_t sys_clone(unsigned long flags)
{
    /* fork() with namespace flags: the child continues on a copy of our stack. */
    return (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);
}

/* Open a path below dirfd without following any symlink and without leaving it. */
static int open_beneath(int dirfd, const char *rel, int flags)
{
    return sys_openat2(dirfd, rel, flags | O_CLOEXEC,
                       RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
}

/* ---- small file helpers ---------------------------------------------------------- */

static ssize_t read_all(int fd, char *buf, size_t size)
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

static int write_all(int fd, const char *buf, size_t len)
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

/* Write a short value to an existing file (cgroup knobs). */
static int write_file(const char *path, const char *value)
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

/* A small (kernel) file as a NUL-terminated string; its length, or -1 if missing or empty. */
static ssize_t read_small(const char *path, char *buf, size_t size)
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

/* The number after "key " in a cgroup key/value file, or 0. */
static unsigned long long read_key(const char *path, const char *key)
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

/* A root-owned file or directory nobody else can write. */
static int trusted_stat(const struct stat *st)
{
    return st->st_uid == 0 && !(st->st_mode & (S_IWGRP | S_IWOTH));
}

/* Read a root-owned, regular, not group/other-writable file below dirfd. */
static size_t read_trusted(int dirfd, const char *name, char *buf, size_t size, int code, const char *what)
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

/* Make dir/name a directory (root 0755) if missing; returns an O_PATH fd to it. */
static int ensure_dir(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0 || errno != ENOENT)
        return fd;  /* the common case: made by an earlier launch */
    if (mkdirat(dirfd, name, 0755) < 0 && errno != EEXIST)
        return -1;
    return openat(dirfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* ---- configuration and plan --------------------------------------------------- */

static struct jr_config cfg;
static struct jr_plan plan;
static struct jr_args args;
static unsigned long long lim[LIM_COUNT];   /* effective limits; 0 = unlimited */

static void load_config(void)
{
    static char text[JR_MAX_FILE + 1];
    char dir[JR_PATH_MAX], err[JR_ERR_MAX];
    const char *path = JAILRUN_CONFIG;
    const char *slash = strrchr(path, '/');
    if (!slash || (size_t)(slash - path) >= sizeof dir)
        die(EXIT_CONFIG, "config path %s is not absolute", path);
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
    int dfd = open(dir[0] ? dir : "/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    struct stat st;
    if (dfd < 0 || fstat(dfd, &st) < 0)
        die_with_error(EXIT_CONFIG, "cannot open the config directory %s", dir);
    if (!trusted_stat(&st))
        die(EXIT_CONFIG, "config directory %s is not owned by root or is writable by others", dir);
    size_t n = read_trusted(dfd, slash + 1, text, sizeof text, EXIT_CONFIG, path);
    close(dfd);
    if (jr_parse_config(text, n, &cfg, err, sizeof err) < 0)
        die(EXIT_CONFIG, "%s: %s", path, err);
}

static void load_plan(void)
{
    static char text[JR_MAX_FILE + 1];
    char err[JR_ERR_MAX], root[JR_PATH_MAX];
    int tfd = open(cfg.tenants_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (tfd < 0)
        die_with_error(EXIT_TENANT, "cannot open tenants_dir %s", cfg.tenants_dir);
    int dfd = openat(tfd, args.name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        if (errno == ENOENT)
            die(EXIT_TENANT, "unknown tenant '%s'", args.name);
        die_with_error(EXIT_TENANT, "cannot open the directory of tenant '%s'", args.name);
    }
    struct stat st;
    if (fstat(dfd, &st) < 0 || !trusted_stat(&st))
        die(EXIT_TENANT, "the directory of tenant '%s' is not owned by root or is writable by others", args.name);
    size_t n = read_trusted(dfd, "plan", text, sizeof text, EXIT_TENANT, "the tenant's plan");
    close(dfd);
    close(tfd);
    if (jr_parse_plan(text, n, &plan, err, sizeof err) < 0)
        die(EXIT_TENANT, "plan of '%s': %s", args.name, err);
    join(root, sizeof root, cfg.jails_dir, args.name);
    if (strcmp(plan.name, args.name) != 0 || strcmp(plan.root, root) != 0)
        die(EXIT_TENANT, "plan of '%s' names '%s' with root %s, expected root %s", args.name, plan.name, plan.root,
            root);
    if (plan.uid < cfg.uid_min || plan.uid > cfg.uid_max || plan.gid < cfg.uid_min || plan.gid > cfg.uid_max)
        die(EXIT_TENANT, "plan of '%s': uid %lu or gid %lu is outside the tenant range %lu-%lu", args.name, plan.uid,
            plan.gid, cfg.uid_min, cfg.uid_max);
}

/* ---- mounted? -------------------------------------------------------------------- */

/* Whether every mount of the plan is in place below the jail root (statx
 * STATX_ATTR_MOUNT_ROOT, resolving nothing the tenant could have planted).
 * Returns an O_PATH fd on the jail root when mounted, -1 otherwise. */
static int open_if_mounted(void)
{
    int rfd = open(plan.root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rfd < 0)
        return -1;
    for (size_t i = 0; i < plan.n_mounts; i++) {
        const char *target = plan.mounts[i].target;
        int fd = target[1] ? open_beneath(rfd, target + 1, O_PATH | O_NOFOLLOW) : rfd;
        struct statx stx;
        int ok = fd >= 0 && statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, 0, &stx) == 0 &&
                 (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) && (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
        if (fd >= 0 && fd != rfd)
            close(fd);
        if (!ok) {
            close(rfd);
            return -1;
        }
    }
    return rfd;
}

/* Start the mount step under the tenant's lock, held exclusively on `lock`;
 * finish_mount_step waits for it. The step inherits the locked descriptor, so
 * the lock lasts as long as the step runs even if this process dies first. */
static pid_t start_mount_step(int lock)
{
    pid_t pid = fork();
    if (pid < 0)
        die_with_error(EXIT_INTERNAL, "fork");
    if (pid == 0) {
        char *argv[] = {"python3", "-I", "-S", cfg.mount_helper, "--config", JAILRUN_CONFIG, "--lock-held",
                        (char *)args.name, NULL};
        char *envp[] = {HELPER_PATH, NULL};
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null < 0 || dup2(null, 0) < 0 || dup2(2, 1) < 0 || fcntl(lock, F_SETFD, 0) < 0 || setgroups(0, NULL) < 0 ||
            setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
            _exit(EXIT_MOUNT);
        umask(022);
        execve(cfg.python, argv, envp);
        fprintf(stderr, "jailrun: cannot run %s: %s\n", cfg.python, strerror(errno));
        _exit(EXIT_MOUNT);
    }
    return pid;
}

static void finish_mount_step(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            die_with_error(EXIT_INTERNAL, "waitpid");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        die(EXIT_MOUNT, "the mount step for '%s' failed (%s %d)", args.name,
            WIFEXITED(st) ? "exit status" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

/* A detached copy of the jail's mount tree (the root fd is consumed). */
static int clone_tree(int rootfd)
{
    int tree_fd = open_tree(rootfd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH);
    if (tree_fd < 0)
        die_with_error(EXIT_INTERNAL, "cannot clone the jail's mount tree");
    close(rootfd);
    /* Whatever the plan says, nothing in a jail honours setuid bits or device nodes. */
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV};
    if (mount_setattr(tree_fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0)
        die_with_error(EXIT_INTERNAL, "cannot set nosuid,nodev on the jail's tree");
    return tree_fd;
}

/* What PID 1 took from the plan when it was created before the mount step ended:
 * the step may move the jail to a newer image, never to other ids or limits. */
static int same_session(const struct jr_plan *a, const struct jr_plan *b)
{
    return a->uid == b->uid && a->gid == b->gid && a->net == b->net && strcmp(a->hostname, b->hostname) == 0 &&
           strcmp(a->home, b->home) == 0 && memcmp(a->limits, b->limits, sizeof a->limits) == 0;
}

/* The jail's tree goes to a PID 1 created before it existed over a socketpair (SCM_RIGHTS). */
union fd_cmsg {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int))];
};

/* Returns -1 if PID 1 is no longer there to take it (its status byte then says why). */
static int send_fd(int sock, int fd)
{
    char byte = 0;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union fd_cmsg u;
    memset(&u, 0, sizeof u);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    return sendmsg(sock, &msg, MSG_NOSIGNAL) == 1 ? 0 : -1;
}

static int receive_fd(int sock)
{
    char byte;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union fd_cmsg u;
    memset(&u, 0, sizeof u);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
    ssize_t n;
    while ((n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    struct cmsghdr *c = n == 1 ? CMSG_FIRSTHDR(&msg) : NULL;
    if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
        die(EXIT_INTERNAL, "PID 1 did not receive the jail's tree");
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

/* ---- run_dir records: locks, sessions, last use, the template namespace ----------- */

static int run_fd = -1;
static char session_name[32];
static int session_dir_fd = -1;
static int session_written;

static int open_run_subdir(const char *name)
{
    int fd = ensure_dir(run_fd, name);
    if (fd < 0)
        die_with_error(EXIT_INTERNAL, "cannot create %s/%s", cfg.run_dir, name);
    return fd;
}

static int lock_file(const char *lockname, int op)
{
    int locks = open_run_subdir("locks");
    int fd = openat(locks, lockname, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        die_with_error(EXIT_INTERNAL, "cannot open lock %s/locks/%s", cfg.run_dir, lockname);
    close(locks);
    while (flock(fd, op) < 0)
        if (errno != EINTR)
            die_with_error(EXIT_INTERNAL, "cannot lock %s", lockname);
    return fd;
}

static void touch_lastuse(void)
{
    char rel[JR_NAME_MAX + 16];
    snprintf(rel, sizeof rel, "lastuse/%s", args.name);
    if (utimensat(run_fd, rel, NULL, AT_SYMLINK_NOFOLLOW) == 0)
        return;     /* the common case: one call (a symlink planted there gets its own time set, nothing else) */
    int dir = open_run_subdir("lastuse");
    int fd = openat(dir, args.name, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0644);
    if (fd < 0 || futimens(fd, NULL) < 0)
        die_with_error(EXIT_INTERNAL, "cannot update %s/lastuse/%s", cfg.run_dir, args.name);
    close(fd);
    close(dir);
}

/* Field 22 of /proc/self/stat: what makes a session record's pid unambiguous. */
static void own_starttime(char *out, size_t outlen)
{
    char buf[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read_all(fd, buf, sizeof buf - 1);
    if (fd >= 0)
        close(fd);
    if (n <= 0)
        die_with_error(EXIT_INTERNAL, "cannot read /proc/self/stat");
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    for (int field = 2; p && field < 22; field++)
        p = strchr(p + 1, ' ');
    if (!p || snprintf(out, outlen, "%.*s", (int)strcspn(p + 1, " "), p + 1) <= 0)
        die(EXIT_INTERNAL, "cannot parse /proc/self/stat");
}

/* Read at the very start: the same read after the jail's tree is cloned costs
 * 10x as much (measured: 120 us against 12), a tenth of a warm launch. */
static char session_start[32];

static void write_session(void)
{
    char content[80];
    int sessions = open_run_subdir("sessions");
    session_dir_fd = ensure_dir(sessions, args.name);
    close(sessions);
    if (session_dir_fd < 0)
        die_with_error(EXIT_INTERNAL, "cannot create %s/sessions/%s", cfg.run_dir, args.name);
    snprintf(session_name, sizeof session_name, "%d", (int)getpid());
    int n = snprintf(content, sizeof content, "%d %s\n", (int)getpid(), session_start);
    int fd = openat(session_dir_fd, session_name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        die_with_error(EXIT_INTERNAL, "cannot write the session record");
    session_written = 1;
    if (write_all(fd, content, (size_t)n) < 0)
        die_with_error(EXIT_INTERNAL, "cannot write the session record");
    close(fd);
}

static void remove_session(void)
{
    if (session_written && unlinkat(session_dir_fd, session_name, 0) == 0)
        session_written = 0;
}

/* The template mount namespace: one read-only tmpfs holding the empty
 * directory NEWROOT and the /dev template, pinned by an nsfs bind mount on
 * <run_dir>/TEMPLATE_PIN. Each
 * session unshares a copy of it (one mount) instead of the host's table. */
static int build_dev_template(void);

/* One try at the template on CPU `cpu`: a child unshares a copy of our mount
 * namespace, we pin it with an nsfs bind mount, then the child turns it into
 * the template (pinned while it still looks like ours: binding it after the
 * pivot was refused too). Returns 0, or -1 with errno EINVAL when the kernel
 * refused the pin as a namespace loop (see create_template_ns). */
static int try_template_ns(int cpu, const char *path)
{
    int go[2], done[2];
    char nspath[64];
    if (pipe2(go, O_CLOEXEC) < 0 || pipe2(done, O_CLOEXEC) < 0)
        die_with_error(EXIT_INTERNAL, "pipe");
    pid_t pid = fork();
    if (pid < 0)
        die_with_error(EXIT_INTERNAL, "fork");
    if (pid == 0) {
        char c = 0;
        /* Our copy of the write end would keep the read below from ever seeing EOF. */
        close(done[1]);
        close(go[0]);
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        int ok = sched_setaffinity(0, sizeof one, &one) == 0 && unshare(CLONE_NEWNS) == 0 &&
                 mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0;
        c = ok ? 'y' : 'n';
        if (write(go[1], &c, 1) != 1 || read(done[0], &c, 1) != 1 || c != 'p')
            _exit(1);
        ok = mount("jailyard-template", cfg.run_dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                   "mode=0755,size=16k,nr_inodes=16") == 0 &&
             chdir(cfg.run_dir) == 0 && mkdir(NEWROOT + 1, 0755) == 0 && sys_pivot_root(".", ".") == 0 &&
             umount2(".", MNT_DETACH) == 0 && chdir("/") == 0 && build_dev_template() == 0 &&
             mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0;
        if (!ok)
            fprintf(stderr, "jailrun: cannot build the template namespace: %s\n", strerror(errno));
        _exit(ok ? 0 : 1);
    }
    close(go[1]);
    close(done[0]);
    char c = 'n';
    if (read(go[0], &c, 1) != 1 || c != 'y')
        die(EXIT_INTERNAL, "cannot build the template mount namespace");
    snprintf(nspath, sizeof nspath, "/proc/%d/ns/mnt", (int)pid);
    int pinned = mount(nspath, path, NULL, MS_BIND, NULL) == 0;
    int saved = errno;
    c = pinned ? 'p' : 'x';
    int st = -1;
    if (write(done[1], &c, 1) != 1 || waitpid(pid, &st, 0) != pid || (pinned && (!WIFEXITED(st) || WEXITSTATUS(st) != 0))) {
        if (pinned)
            umount2(path, MNT_DETACH);  /* never leave a half-built template for the next launch */
        die(EXIT_INTERNAL, "cannot build the template mount namespace");
    }
    close(done[1]);
    close(go[0]);
    if (pinned)
        return 0;
    if (saved != EINVAL)
        die_with_error(EXIT_INTERNAL, "cannot pin the template namespace on %s", path);
    errno = EINVAL;
    return -1;
}

/* The kernel refuses to bind a mount namespace's nsfs file unless the
 * namespace is newer than the caller's, and since Linux 6.18 judges "newer" by
 * namespace ids that each CPU hands out from its own batch: a namespace made on
 * one CPU can get a lower id than an older one made on another. Measured here:
 * from a freshly made namespace (a container, a service with PrivateTmp, the
 * benchmark's) about half of the pins were refused with EINVAL. The CPU that
 * made the caller's namespace always hands out higher ids, so one try on each
 * CPU we may run on finds one. */
static int create_template_ns(void)
{
    char path[JR_PATH_MAX];
    join(path, sizeof path, cfg.run_dir, TEMPLATE_PIN);
    int fd = openat(run_fd, TEMPLATE_PIN, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        die_with_error(EXIT_INTERNAL, "cannot create %s", path);
    close(fd);
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) < 0)
        die_with_error(EXIT_INTERNAL, "sched_getaffinity");
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, &allowed) && try_template_ns(cpu, path) == 0)
            return open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    die(EXIT_INTERNAL, "cannot pin the template namespace on %s: the kernel refused it on every CPU", path);
}

static int open_template_ns(void)
{
    int fd = openat(run_fd, TEMPLATE_PIN, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0 && ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNS)
        return fd;
    if (fd >= 0)
        close(fd);
    int lock = lock_file(".mntns.lock", LOCK_EX);
    fd = openat(run_fd, TEMPLATE_PIN, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 || ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWNS) {
        if (fd >= 0)
            close(fd);
        fd = create_template_ns();
        /* An older launcher's pin: its sessions keep their own copies; nothing uses it again. */
        char old[JR_PATH_MAX];
        join(old, sizeof old, cfg.run_dir, TEMPLATE_PIN_OLD);
        if (umount2(old, MNT_DETACH | UMOUNT_NOFOLLOW) == 0)
            unlinkat(run_fd, TEMPLATE_PIN_OLD, 0);
    }
    close(lock);
    if (fd < 0 || ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWNS)
        die(EXIT_INTERNAL, "%s/%s is not a mount namespace", cfg.run_dir, TEMPLATE_PIN);
    return fd;
}

/* ---- cgroups --------------------------------------------------------------------- */

/* Per tenant <ctrl>/<cgroup_name>/<tenant> holds the plan's limits across all
 * its sessions (v1 memory, pids, cpu here; v2 where the unified hierarchy has
 * the controller). A per-session child s<pid> carries --mem/--procs and gives
 * exact peak memory and why the session was killed; it is made only when one
 * of those or --meta is asked for (v2: always, processes live in leaves). */
#define MAX_CG 4
static struct {
    int procs_fd[MAX_CG];   /* cgroup.procs of each leaf; PID 1 writes "0" into each */
    size_t n_procs;
    char session_dirs[MAX_CG][JR_PATH_MAX];
    size_t n_session;
    char mem_peak[JR_PATH_MAX], mem_events[JR_PATH_MAX], pids_events[JR_PATH_MAX], tenant_pids_events[JR_PATH_MAX];
    unsigned long long oom_before, pids_before;
    int has_memory, has_pids;
} cg;

/* Forks refused by a pids limit so far: the leaf's counter, plus the tenant's
 * where the leaf is a session's (v2 since Linux 6.13 counts an event in the
 * cgroup whose limit was hit and its ancestors, v1 and older v2 in the
 * cgroup of the process that forked). */
static unsigned long long pids_refused(void)
{
    unsigned long long n = cg.pids_events[0] ? read_key(cg.pids_events, "max") : 0;
    if (cg.tenant_pids_events[0] && strcmp(cg.tenant_pids_events, cg.pids_events) != 0)
        n += read_key(cg.tenant_pids_events, "max");
    return n;
}

static void cg_write(const char *dir, const char *knob, const char *value)
{
    char path[JR_PATH_MAX];
    join(path, sizeof path, dir, knob);
    if (write_file(path, value) < 0)
        die_with_error(EXIT_INTERNAL, "cannot write %s to %s", value, path);
}

static void cg_mkdir(const char *path)
{
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        die_with_error(EXIT_INTERNAL, "cannot create cgroup %s", path);
}

static void limit_text(char *out, size_t len, unsigned long long v, const char *unlimited)
{
    if (v)
        snprintf(out, len, "%llu", v);
    else
        snprintf(out, len, "%s", unlimited);
}

static void cg_add_leaf(const char *dir)
{
    char path[JR_PATH_MAX];
    join(path, sizeof path, dir, "cgroup.procs");
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        die_with_error(EXIT_INTERNAL, "cannot open %s", path);
    cg.procs_fd[cg.n_procs++] = fd;
}

/* Which of ctrls[0..n) the unified hierarchy at root offers (one read of its cgroup.controllers). */
static void v2_controllers(const char *root, const char *const *ctrls, int n, int *in_v2)
{
    char path[JR_PATH_MAX], buf[512];
    join(path, sizeof path, root, "cgroup.controllers");
    if (read_small(path, buf, sizeof buf) < 0)
        return;
    for (char *tok = buf, *save = NULL; (tok = strtok_r(tok, " \n", &save)); tok = NULL)
        for (int i = 0; i < n; i++)
            in_v2[i] |= strcmp(tok, ctrls[i]) == 0;
}

static void setup_cgroups(int want_session, int session_mem, int session_procs)
{
    static const char *const ctrls[] = {"memory", "pids", "cpu"};
    char v2root[64] = "", tenant[JR_PATH_MAX], group[JR_PATH_MAX], session[JR_PATH_MAX], value[32], sname[32];
    int in_v2[3] = {0, 0, 0};
    snprintf(sname, sizeof sname, "s%d", (int)getpid());

    if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0)
        strcpy(v2root, "/sys/fs/cgroup");
    else if (access("/sys/fs/cgroup/unified/cgroup.controllers", F_OK) == 0)
        strcpy(v2root, "/sys/fs/cgroup/unified");
    if (v2root[0])
        v2_controllers(v2root, ctrls, 3, in_v2);

    /* cgroup v1: one hierarchy per controller. */
    for (int i = 0; i < 3; i++) {
        char base[64];
        if (in_v2[i])
            continue;
        snprintf(base, sizeof base, "/sys/fs/cgroup/%s", ctrls[i]);
        join(group, sizeof group, base, "cgroup.procs");
        if (access(group, F_OK) != 0)
            continue;  /* controller not mounted: rlimits only */
        join(group, sizeof group, base, cfg.cgroup_name);
        join(tenant, sizeof tenant, group, args.name);
        if (access(tenant, F_OK) != 0) {    /* made by an earlier launch, as a rule */
            cg_mkdir(group);
            cg_mkdir(tenant);
        }
        const char *leaf = tenant;
        if (i == 0) {
            cg.has_memory = 1;
            limit_text(value, sizeof value, plan.limits[LIM_MEM], "-1");
            cg_write(tenant, "memory.limit_in_bytes", value);
        } else if (i == 1) {
            cg.has_pids = 1;
            limit_text(value, sizeof value, plan.limits[LIM_PROCS], "max");
            cg_write(tenant, "pids.max", value);
            join(cg.tenant_pids_events, sizeof cg.tenant_pids_events, tenant, "pids.events");
        }
        if (want_session && i < 2) {
            join(session, sizeof session, tenant, sname);
            cg_mkdir(session);
            strcpy(cg.session_dirs[cg.n_session++], session);
            if (i == 0 && session_mem) {
                limit_text(value, sizeof value, lim[LIM_MEM], "-1");
                cg_write(session, "memory.limit_in_bytes", value);
            }
            if (i == 1 && session_procs) {
                limit_text(value, sizeof value, lim[LIM_PROCS], "max");
                cg_write(session, "pids.max", value);
            }
            leaf = session;
        }
        if (i == 0) {
            join(cg.mem_peak, sizeof cg.mem_peak, leaf, "memory.max_usage_in_bytes");
            join(cg.mem_events, sizeof cg.mem_events, leaf, "memory.oom_control");
        } else if (i == 1) {
            join(cg.pids_events, sizeof cg.pids_events, leaf, "pids.events");
        }
        cg_add_leaf(leaf);
    }

    /* cgroup v2: one tree; processes only in leaves, so every session gets one. */
    if (in_v2[0] || in_v2[1] || in_v2[2]) {
        char enable[64] = "";
        for (int i = 0; i < 3; i++)
            if (in_v2[i]) {
                strcat(enable, enable[0] ? " +" : "+");
                strcat(enable, ctrls[i]);
            }
        join(group, sizeof group, v2root, cfg.cgroup_name);
        join(tenant, sizeof tenant, group, args.name);
        join(session, sizeof session, tenant, sname);
        cg_write(v2root, "cgroup.subtree_control", enable);
        cg_mkdir(group);
        cg_write(group, "cgroup.subtree_control", enable);
        cg_mkdir(tenant);
        cg_write(tenant, "cgroup.subtree_control", enable);
        if (in_v2[0]) {
            cg.has_memory = 1;
            limit_text(value, sizeof value, plan.limits[LIM_MEM], "max");
            cg_write(tenant, "memory.max", value);
        }
        if (in_v2[1]) {
            cg.has_pids = 1;
            limit_text(value, sizeof value, plan.limits[LIM_PROCS], "max");
            cg_write(tenant, "pids.max", value);
            join(cg.tenant_pids_events, sizeof cg.tenant_pids_events, tenant, "pids.events");
        }
        cg_mkdir(session);
        strcpy(cg.session_dirs[cg.n_session++], session);
        if (in_v2[0]) {
            if (session_mem) {
                limit_text(value, sizeof value, lim[LIM_MEM], "max");
                cg_write(session, "memory.max", value);
            }
            join(cg.mem_peak, sizeof cg.mem_peak, session, "memory.peak");
            join(cg.mem_events, sizeof cg.mem_events, session, "memory.events");
        }
        if (in_v2[1]) {
            if (session_procs) {
                limit_text(value, sizeof value, lim[LIM_PROCS], "max");
                cg_write(session, "pids.max", value);
            }
            join(cg.pids_events, sizeof cg.pids_events, session, "pids.events");
        }
        cg_add_leaf(session);
    }
    /* Without a session cgroup the counters are the tenant's: count the difference. */
    if (args.meta) {    /* only --meta reports why a session died */
        cg.oom_before = cg.mem_events[0] ? read_key(cg.mem_events, "oom_kill") : 0;
        cg.pids_before = pids_refused();
    }
}

static void remove_session_cgroups(void)
{
    for (size_t i = cg.n_session; i-- > 0;)
        if (rmdir(cg.session_dirs[i]) < 0 && errno != ENOENT)
            audit(LOG_WARNING, "warning: cannot remove cgroup %s: %s", cg.session_dirs[i], strerror(errno));
    cg.n_session = 0;
}

static pid_t waiting_init = -1;   /* PID 1, created during the mount step, before it has its tree */

static void cleanup(void)
{
    if (waiting_init > 0) {
        kill(waiting_init, SIGKILL);
        while (waitpid(waiting_init, NULL, 0) < 0 && errno == EINTR)
            ;
        waiting_init = -1;
    }
    remove_session();
    remove_session_cgroups();
}

/* ---- inside: the jail's filesystem ------------------------------------------------ */

static int fs_mount(const char *fstype, const char *const *opts, unsigned attrs)
{
    int fs = fsopen(fstype, FSOPEN_CLOEXEC);
    if (fs < 0)
        die_with_error(EXIT_INTERNAL, "fsopen %s", fstype);
    for (size_t i = 0; opts && opts[i]; i += 2)
        if (fsconfig(fs, FSCONFIG_SET_STRING, opts[i], opts[i + 1], 0) < 0)
            die_with_error(EXIT_INTERNAL, "%s option %s=%s", fstype, opts[i], opts[i + 1]);
    if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        die_with_error(EXIT_INTERNAL, "cannot create a %s", fstype);
    int mfd = fsmount(fs, FSMOUNT_CLOEXEC, attrs);
    if (mfd < 0)
        die_with_error(EXIT_INTERNAL, "fsmount %s", fstype);
    close(fs);
    return mfd;
}

/* Attach a detached mount on dir/rel, resolved without symlinks. */
static void attach(int mfd, int dirfd, const char *rel, const char *what)
{
    int target = open_beneath(dirfd, rel, O_PATH | O_DIRECTORY);
    if (target < 0)
        die_with_error(EXIT_INTERNAL, "the jail has no directory /%s for %s", rel, what);
    if (move_mount(mfd, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        die_with_error(EXIT_INTERNAL, "cannot mount %s", what);
    close(target);
    close(mfd);
}

/* The read-only part of every jail's /dev, made once in the template namespace
 * (in its private mount namespace, as root): a tmpfs with the device nodes, the
 * /proc/self/fd links and the pts and shm mount points. Sessions move their copy
 * of it into the jail and add their own devpts and /dev/shm. */
static int build_dev_template(void)
{
    static const struct {
        const char *name;
        unsigned maj, min;
    } nodes[] = {{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};
    static const struct {
        const char *target, *name;
    } links[] = {{"/proc/self/fd", "fd"},     {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"},
                 {"/proc/self/fd/2", "stderr"}, {"pts/ptmx", "ptmx"}};
    if (mkdir(DEVTMPL, 0755) < 0 ||
        mount("jailyard-dev", DEVTMPL, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k,nr_inodes=64") < 0)
        return -1;
    int dfd = open(DEVTMPL, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    umask(0);
    int ok = 1;
    for (size_t i = 0; ok && i < sizeof nodes / sizeof nodes[0]; i++)
        ok = mknodat(dfd, nodes[i].name, S_IFCHR | 0666, makedev(nodes[i].maj, nodes[i].min)) == 0;
    for (size_t i = 0; ok && i < sizeof links / sizeof links[0]; i++)
        ok = symlinkat(links[i].target, dfd, links[i].name) == 0;
    ok = ok && mkdirat(dfd, "pts", 0755) == 0 && mkdirat(dfd, "shm", 0755) == 0;
    umask(022);
    close(dfd);
    if (!ok)
        return -1;
    return mount(NULL, DEVTMPL, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC, NULL);
}

/* The session's /dev: its copy of the template's, a private devpts instance and
 * a per-session tmpfs /dev/shm. */
static void build_dev(int rootfd)
{
    static const char *const pts_opts[] = {"ptmxmode", "0666", "mode", "0620", NULL};
    char shm_size[32];

    int tmpl = open(DEVTMPL, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (tmpl < 0)
        die_with_error(EXIT_INTERNAL, "the template namespace has no %s", DEVTMPL);
    attach(tmpl, rootfd, "dev", "/dev");

    int devfd = open_beneath(rootfd, "dev", O_PATH | O_DIRECTORY);
    if (devfd < 0)
        die_with_error(EXIT_INTERNAL, "cannot open /dev");
    attach(fs_mount("devpts", pts_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC), devfd, "pts", "/dev/pts");
    /* /dev/shm is charged to the session's memory cgroup; cap it at the memory limit too. */
    if (lim[LIM_MEM])
        snprintf(shm_size, sizeof shm_size, "%llu", lim[LIM_MEM]);
    else
        snprintf(shm_size, sizeof shm_size, "50%%");
    const char *shm_opts[] = {"mode", "01777", "size", shm_size, NULL};
    attach(fs_mount("tmpfs", shm_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC), devfd, "shm",
           "/dev/shm");
    close(devfd);
}

static void enter_jail_fs(int mntns_fd, int tree_fd, int tree_sock, int ipc_fd)
{
    if (setns(mntns_fd, CLONE_NEWNS) < 0)
        die_with_error(EXIT_INTERNAL, "cannot enter the template mount namespace");
    close(mntns_fd);
    if (unshare(CLONE_NEWNS) < 0)
        die_with_error(EXIT_INTERNAL, "cannot copy the template mount namespace");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        die_with_error(EXIT_INTERNAL, "cannot make / private");
    if (tree_fd < 0) {
        tree_fd = receive_fd(tree_sock);
        close(tree_sock);
    }
    if (move_mount(tree_fd, "", AT_FDCWD, NEWROOT, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        die_with_error(EXIT_INTERNAL, "cannot attach the jail's tree");
    close(tree_fd);
    int rootfd = open(NEWROOT, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        die_with_error(EXIT_INTERNAL, "cannot open the jail root");

    attach(fs_mount("proc", NULL, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC),
           rootfd, "proc", "/proc");
    build_dev(rootfd);
    if (ipc_fd >= 0) {
        /* Optional: only where the image has the mount point. */
        int target = open_beneath(rootfd, "run/jailyard/ipc", O_PATH | O_DIRECTORY);
        if (target >= 0) {
            close(target);
            attach(ipc_fd, rootfd, "run/jailyard/ipc", "/run/jailyard/ipc");
        } else {
            close(ipc_fd);
        }
    }
    if (fchdir(rootfd) < 0 || sys_pivot_root(".", ".") < 0 || umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
        die_with_error(EXIT_INTERNAL, "cannot pivot into the jail");
    close(rootfd);
}

static void loopback_up(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        die_with_error(EXIT_INTERNAL, "cannot read the flags of lo");
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        die_with_error(EXIT_INTERNAL, "cannot bring lo up");
    close(s);
}

/* ---- inside: privileges ------------------------------------------------------------ */

static const struct {
    int resource;
    int slot;   /* LIM_* or -1 for a fixed value */
    rlim_t fixed;
    const char *name;
} rlimit_table[] = {
    {RLIMIT_CPU, LIM_CPU, 0, "cpu"},
    {RLIMIT_FSIZE, LIM_FSIZE, 0, "fsize"},
    {RLIMIT_NOFILE, LIM_NOFILE, 0, "nofile"},
    {RLIMIT_NPROC, LIM_PROCS, 0, "procs"},  /* only without a pids cgroup: see apply_rlimits */
    {RLIMIT_AS, LIM_MEM, 0, "as"},          /* only without a memory cgroup: see apply_rlimits */
    {RLIMIT_CORE, -1, 0, "core"},
    {RLIMIT_MEMLOCK, -1, 64 * 1024, "memlock"},
    {RLIMIT_MSGQUEUE, -1, 64 * 1024, "msgqueue"},
};

static void apply_rlimits(void)
{
    for (size_t i = 0; i < sizeof rlimit_table / sizeof rlimit_table[0]; i++) {
        struct rlimit rl;
        if (rlimit_table[i].slot < 0) {
            rl.rlim_cur = rl.rlim_max = rlimit_table[i].fixed;
        } else {
            unsigned long long v = lim[rlimit_table[i].slot];
            if (rlimit_table[i].resource == RLIMIT_AS && cg.has_memory)
                continue;   /* the memory cgroup limits what is used, not what is mapped */
            /* The pids cgroup limits the session and the tenant and counts what it refuses
             * (--meta's killed_by procs); RLIMIT_NPROC counts the uid's tasks host-wide and,
             * checked first by fork, would refuse without a trace. */
            if (rlimit_table[i].resource == RLIMIT_NPROC && cg.has_pids)
                continue;
            if (v == 0 && rlimit_table[i].resource == RLIMIT_NOFILE)
                continue;   /* the kernel refuses an infinite nofile; keep the inherited one */
            rl.rlim_cur = rl.rlim_max = v ? (rlim_t)v : RLIM_INFINITY;
            if (rlimit_table[i].resource == RLIMIT_CPU && v)
                rl.rlim_max = (rlim_t)v + 1;    /* SIGXCPU first, SIGKILL a second later */
        }
        if (setrlimit(rlimit_table[i].resource, &rl) < 0)
            die_with_error(EXIT_INTERNAL, "cannot set the %s limit", rlimit_table[i].name);
    }
}

static void drop_privileges(int exec_follows)
{
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        die_with_error(EXIT_INTERNAL, "no_new_privs");
    if (exec_follows) {
        /* Capabilities are numbered without gaps: the first EINVAL is past the last one. */
        for (int cap = 0; cap <= 63; cap++)
            if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
                if (errno == EINVAL && cap > 0)  /* older kernels know fewer than the headers */
                    break;
                die_with_error(EXIT_INTERNAL, "cannot drop capability %d from the bounding set", cap);
            }
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
            die_with_error(EXIT_INTERNAL, "cannot clear ambient capabilities");
    }
    gid_t gid = (gid_t)plan.gid;
    uid_t uid = (uid_t)plan.uid;
    if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0)
        die_with_error(EXIT_INTERNAL, "cannot change to uid %u gid %u", (unsigned)uid, (unsigned)gid);
    uid_t r, e, s;
    gid_t rg, eg, sg;
    if (getresuid(&r, &e, &s) < 0 || getresgid(&rg, &eg, &sg) < 0 || r != uid || e != uid || s != uid || rg != gid ||
        eg != gid || sg != gid || getgroups(0, NULL) != 0)
        die(EXIT_INTERNAL, "the change to uid %u gid %u did not take", (unsigned)uid, (unsigned)gid);
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) < 0 || data[0].effective || data[0].permitted || data[0].inheritable ||
        data[1].effective || data[1].permitted || data[1].inheritable)
        die(EXIT_INTERNAL, "capabilities are left after the change to uid %u", (unsigned)uid);
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        die_with_error(EXIT_INTERNAL, "dumpable");
}

/* Landlock scopes (ABI 6, Linux 6.12), newer than Debian 12's headers. */
struct jr_landlock_ruleset_attr {
    uint64_t handled_access_fs, handled_access_net, scoped;
};
#define JR_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)

/* Abstract unix sockets live in the network namespace, not in the filesystem:
 * with --net the jail shares the host's, and its programs could connect to any
 * host daemon listening on one (X11, D-Bus, systemd and container runtimes use
 * them). A Landlock scope confines connections to sockets made inside the
 * session. Kernels without Landlock ABI 6 skip this: the session's own network
 * namespace is then the only barrier, and --net lifts it (README, "Security model"). */
static void scope_abstract_sockets(void)
{
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    if (abi < 6)
        return;
    struct jr_landlock_ruleset_attr attr = {.scoped = JR_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET};
    int fd = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0);
    if (fd < 0 || syscall(SYS_landlock_restrict_self, fd, 0) < 0)
        die_with_error(EXIT_INTERNAL, "cannot confine abstract unix sockets (landlock)");
    close(fd);
}

static void install_seccomp(void)
{
    struct sock_fprog prog = {.len = sizeof jr_seccomp_filter / sizeof jr_seccomp_filter[0],
                              .filter = (struct sock_filter *)jr_seccomp_filter};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
        die_with_error(EXIT_INTERNAL, "cannot install the seccomp filter");
}

/* ---- inside: the program ---------------------------------------------------------- */

static const int forwarded[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};

static void run_program(void) __attribute__((noreturn));
static void run_program(void)
{
    sigset_t none;
    sigemptyset(&none);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
        signal(forwarded[i], SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (setsid() < 0)
        die_with_error(EXIT_INTERNAL, "setsid");
    apply_rlimits();
    drop_privileges(1);
    umask(077);
    const char *cwd = args.cwd ? args.cwd : plan.home;
    if (chdir(cwd) < 0) {
        if (args.cwd)
            die_with_error(EXIT_USAGE, "cannot change to --cwd %s", cwd);
        die_with_error(EXIT_INTERNAL, "cannot change to the home directory %s", cwd);
    }
    if (clearenv() != 0 || setenv("PATH", JAIL_PATH, 1) < 0 || setenv("HOME", plan.home, 1) < 0 ||
        setenv("USER", plan.name, 1) < 0 || setenv("LOGNAME", plan.name, 1) < 0 || setenv("SHELL", "/bin/sh", 1) < 0 ||
        setenv("LANG", "C.UTF-8", 1) < 0)
        die_with_error(EXIT_INTERNAL, "environment");
    for (size_t i = 0; i < args.n_env; i++) {
        char key[256];
        size_t klen = strcspn(args.env[i], "=");
        if (klen >= sizeof key)
            die(EXIT_USAGE, "--env name too long");
        memcpy(key, args.env[i], klen);
        key[klen] = '\0';
        if (setenv(key, args.env[i] + klen + 1, 1) < 0)
            die_with_error(EXIT_INTERNAL, "environment");
    }
    if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        die_with_error(EXIT_INTERNAL, "close_range");
    scope_abstract_sockets();
    install_seccomp();
    execvp(args.argv[0], args.argv);
    die_with_error(errno == ENOENT ? EXIT_NOTFOUND : EXIT_NOEXEC, "cannot run %s", args.argv[0]);
}

static void noop_handler(int sig) { (void)sig; }

/* PID 1 of the jail: set up, start the program, forward signals, reap, and
 * report the program's wait status on result_fd. Exiting ends the session. */
static void jail_init(int mntns_fd, int tree_fd, int tree_sock, int ipc_fd, int result_fd, int new_net)
    __attribute__((noreturn));
/* The session lives only as long as its supervisor: if the supervisor is killed
 * (say with SIGKILL by a caller's own timeout), PID 1 gets SIGKILL and the
 * kernel kills the whole session, which then cannot outlive its session record
 * or its --timeout. PR_SET_PDEATHSIG covers a supervisor that dies from now on;
 * one that died before has closed the read end of `fd`, a pipe to it. */
static void die_with_supervisor(int fd)
{
    struct pollfd p = {.fd = fd, .events = 0};
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || (poll(&p, 1, 0) == 1 && (p.revents & POLLERR)))
        _exit(EXIT_INTERNAL);   /* (prctl fails only for an invalid signal) */
}

/* tree_fd is -1 when PID 1 is created while the mount step runs: it then
 * prepares everything that needs no tree and waits for it on tree_sock. */
static void jail_init(int mntns_fd, int tree_fd, int tree_sock, int ipc_fd, int result_fd, int new_net)
{
    die_with_supervisor(result_fd);
    for (size_t i = 0; i < cg.n_procs; i++) {
        if (write(cg.procs_fd[i], "0", 1) != 1)
            die_with_error(EXIT_INTERNAL, "cannot join the tenant's cgroup");
        close(cg.procs_fd[i]);
    }
    if (unshare(CLONE_NEWCGROUP) < 0)
        die_with_error(EXIT_INTERNAL, "cgroup namespace");
    if (setsid() < 0)
        die_with_error(EXIT_INTERNAL, "setsid");
    if (sethostname(plan.hostname, strlen(plan.hostname)) < 0)
        die_with_error(EXIT_INTERNAL, "sethostname");
    if (new_net)
        loopback_up();
    enter_jail_fs(mntns_fd, tree_fd, tree_sock, ipc_fd);

    /* A PID 1 only receives signals it has a handler for. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = noop_handler;
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) {
        sigaction(forwarded[i], &sa, NULL);
        sigaddset(&set, forwarded[i]);
    }
    sigaction(SIGCHLD, &sa, NULL);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);

    pid_t child = fork();
    if (child < 0)
        die_with_error(EXIT_INTERNAL, "fork");
    if (child == 0) {
        close(result_fd);
        run_program();
    }
    /* Keep nothing of the host: only the result pipe stays open. */
    int keep = result_fd;
    if (keep > 3)
        close_range(3, (unsigned)keep - 1, 0);
    close_range((unsigned)keep + 1, ~0U, 0);
    /* The tenant sees PID 1 in its ps: show it no host path and no caller's command line. */
    memset(cmdline_start, 0, cmdline_len);
    snprintf(cmdline_start, cmdline_len, "jailrun-init");
    prctl(PR_SET_NAME, "jailrun-init", 0, 0, 0);
    status_fd = -1;
    drop_privileges(0);
    die_with_supervisor(result_fd);  /* a change of uid clears the parent-death signal */

    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&set, &info);
        if (sig < 0)
            continue;
        if (sig != SIGCHLD) {
            kill(child, sig);
            continue;
        }
        int st;
        pid_t pid;
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
            if (pid == child) {
                if (write(result_fd, &st, sizeof st) < 0) { /* the supervisor sees SIGKILL then */ }
                _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
            }
        }
    }
}

/* ---- the supervisor ------------------------------------------------------------------ */

static void usage(void)
{
    printf("usage: jailrun [options] NAME [--] PROGRAM [ARGS...]\n"
           "Run PROGRAM as tenant NAME inside its jail (mounting the jail first if needed).\n"
           "\n"
           "  --cwd DIR        working directory inside the jail (default: the tenant's home)\n"
           "  --env NAME=VALUE set a variable (repeatable); nothing else of the caller's environment passes\n"
           "  --timeout SEC    wall-clock limit; the whole session is killed when it passes\n"
           "  --cpu SEC        CPU time per process\n"
           "  --mem BYTES      memory of the session (K, M, G, T suffixes)\n"
           "  --procs N        processes\n"
           "  --fsize BYTES    largest file written (K, M, G, T suffixes)\n"
           "  --nofile N       open files per process\n"
           "                   (each limit may only lower what the tenant's plan allows)\n"
           "  --meta FILE      write the result: status, exitcode or signal, cpu_user, cpu_sys, wall,\n"
           "                   mem_peak, killed_by (none, wall, cpu, memory, procs, fsize)\n"
           "  --net            keep the host network (only if the tenant's plan allows it)\n"
           "  --help           this text\n"
           "\n"
           "Exit status: the program's own (128+N if killed by signal N), or 120 usage, 121 caller not allowed,\n"
           "122 config untrusted or malformed, 123 unknown tenant or bad plan, 124 mount step failed,\n"
           "125 internal failure, 126 program not executable, 127 program not found.\n"
           "Config: %s\n",
           JAILRUN_CONFIG);
}

/* Descriptors 0-2 are the caller's to give. Closed ones become /dev/null open
 * for reading and writing, so nothing we open later lands on them, and so do
 * the ones glibc's start-up of a setuid program opened in their place for a
 * caller it does not trust (stdin write-only on /dev/full, stdout and stderr
 * read-only on /dev/null, modes no caller passes on purpose): every caller's
 * session gets the same descriptors. Everything above 2 is closed.
 * Returns the first descriptor that opens a way out (a directory, an O_PATH
 * handle), to be refused once the audit log is open, or -1. */
static int sanitize_fds(void)
{
    int bad = -1;
    for (int fd = 0; fd <= 2; fd++) {
        struct stat st;
        int fl = fcntl(fd, F_GETFL);
        int glibcs = fl >= 0 && fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) &&
                     (fd == 0 ? st.st_rdev == makedev(1, 7) && (fl & O_ACCMODE) == O_WRONLY
                              : st.st_rdev == makedev(1, 3) && (fl & O_ACCMODE) == O_RDONLY);
        if (fl < 0 || glibcs) {
            /* 0..fd-1 are open: a closed fd is the lowest free one. */
            int null = open("/dev/null", O_RDWR | O_NOCTTY);
            if (null < 0 || (null != fd && (dup2(null, fd) != fd || close(null) < 0)))
                _exit(EXIT_INTERNAL);
            continue;
        }
        if (bad < 0 && ((fl & O_PATH) || fstat(fd, &st) < 0 || S_ISDIR(st.st_mode)))
            bad = fd;
    }
    if (close_range(3, ~0U, 0) < 0)
        _exit(EXIT_INTERNAL);
    return bad;
}

static double seconds(const struct timeval *tv) { return (double)tv->tv_sec + (double)tv->tv_usec / 1e6; }

int main(int argc, char **argv)
{
    char err[JR_ERR_MAX];
    caller_uid = getuid();
    if (argc < 1)
        _exit(EXIT_USAGE);  /* execve with an empty argv: nothing to name */
    cmdline_start = argv[0];
    cmdline_len = (size_t)(argv[argc - 1] + strlen(argv[argc - 1]) + 1 - argv[0]);
    int bad_fd = sanitize_fds();
    openlog("jailrun", LOG_PID, LOG_AUTHPRIV);
    umask(022);
    const char *why = geteuid() == 0 ? open_audit_log() : NULL;
    if (why)
        die(EXIT_INTERNAL, "cannot use the audit log %s: %s", JAILRUN_AUDIT_LOG, why);
    if (bad_fd >= 0)
        die(EXIT_USAGE, "descriptor %d is a directory or a path handle; refusing to pass it into a jail", bad_fd);
    own_starttime(session_start, sizeof session_start);
    if (clearenv() != 0)
        die(EXIT_INTERNAL, "clearenv");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        die_with_error(EXIT_INTERNAL, "no_new_privs");
    if (geteuid() != 0)
        die(EXIT_INTERNAL, "not running as root (install setuid root)");

    load_config();
    int allowed = 0;
    for (size_t i = 0; i < cfg.n_allowed_callers; i++)
        allowed |= cfg.allowed_callers[i] == caller_uid;
    if (!allowed)
        die(EXIT_CALLER, "uid %u may not run jailrun", (unsigned)caller_uid);

    if (jr_parse_args(argc, argv, &args, err, sizeof err) < 0)
        die(EXIT_USAGE, "%s", err);
    if (args.help) {
        usage();
        return 0;
    }
    log_program = args.argv[0];
    log_tenant = args.name;     /* escaped wherever it is printed */
    if (!jr_valid_name(args.name))
        die(EXIT_USAGE, "invalid tenant name '%.64s': expected [a-z_][a-z0-9_-]{0,31}", args.name);
    load_plan();
    for (int i = 0; i < LIM_COUNT; i++)
        if (jr_effective_limit(plan.limits[i], args.limits[i], &lim[i]) < 0)
            die(EXIT_USAGE, "--%s %llu is above the tenant's limit %llu", i == LIM_WALL ? "timeout" : jr_limit_names[i],
                args.limits[i], plan.limits[i]);
    if (args.net && !plan.net)
        die(EXIT_USAGE, "--net: tenant '%s' has no network", args.name);
    int new_net = !(args.net && plan.net);

    /* The result file is the caller's: open it with the caller's rights. */
    int meta_fd = -1;
    if (args.meta) {
        setfsuid(caller_uid);
        setfsgid(getgid());
        meta_fd = open(args.meta, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0644);
        int saved = errno;
        setfsuid(0);
        setfsgid(0);
        errno = saved;
        if (meta_fd < 0)
            die_with_error(EXIT_USAGE, "cannot open --meta %s", args.meta);
    }

    run_fd = open(cfg.run_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (run_fd < 0) {
        if (mkdir(cfg.run_dir, 0755) < 0 && errno != EEXIST)
            die_with_error(EXIT_INTERNAL, "cannot create run_dir %s", cfg.run_dir);
        run_fd = open(cfg.run_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (run_fd < 0)
            die_with_error(EXIT_INTERNAL, "cannot open run_dir %s", cfg.run_dir);
    }
    /* Mount on demand, clone the tree and record the session under the tenant's lock.
     * A mount step (mostly a Python interpreter starting) runs while the
     * template namespace and cgroups are opened and PID 1 is created and
     * prepares what needs no tree; the tree follows over a socket. */
    char lockname[JR_NAME_MAX + 8];
    snprintf(lockname, sizeof lockname, "%s.lock", args.name);
    int lock = lock_file(lockname, LOCK_SH);
    int rootfd = open_if_mounted();
    pid_t step = -1;
    if (rootfd < 0) {
        if (flock(lock, LOCK_EX) < 0)
            die_with_error(EXIT_INTERNAL, "cannot lock %s", lockname);
        rootfd = open_if_mounted();
        if (rootfd < 0)
            step = start_mount_step(lock);
    }
    int tree_fd = -1, tree_sock[2] = {-1, -1};
    if (step < 0) {
        tree_fd = clone_tree(rootfd);
        /* Last use is stamped when the session ends (and by the mount step): expiry
         * never takes a jail with a live session, so a stamp here would add nothing. */
        write_session();
        close(lock);
    } else if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, tree_sock) < 0) {
        die_with_error(EXIT_INTERNAL, "socketpair");
    }
    int mntns_fd = open_template_ns();
    setup_cgroups(args.meta || args.limits[LIM_MEM] != JR_UNSET || args.limits[LIM_PROCS] != JR_UNSET,
                  args.limits[LIM_MEM] != JR_UNSET, args.limits[LIM_PROCS] != JR_UNSET);

    int ipc_fd = -1;
    struct stat ipc_st;
    if (fstatat(run_fd, "ipc", &ipc_st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(ipc_st.st_mode)) {
        ipc_fd = open_tree(run_fd, "ipc", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC};
        if (ipc_fd < 0 || mount_setattr(ipc_fd, "", AT_EMPTY_PATH, &ro, sizeof ro) < 0)
            die_with_error(EXIT_INTERNAL, "cannot clone %s/ipc", cfg.run_dir);
    }

    int status_pipe[2], result_pipe[2];
    if (pipe2(status_pipe, O_CLOEXEC) < 0 || pipe2(result_pipe, O_CLOEXEC) < 0)
        die_with_error(EXIT_INTERNAL, "pipe");
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
        sigaddset(&set, forwarded[i]);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned long flags = CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | (new_net ? CLONE_NEWNET : 0);
    pid_t init = sys_clone(flags);
    if (init < 0)
        die_with_error(EXIT_INTERNAL, "cannot create the jail's namespaces");
    if (init == 0) {
        close(status_pipe[0]);
        close(result_pipe[0]);
        if (tree_sock[0] >= 0)
            close(tree_sock[0]);
        status_fd = status_pipe[1];
        jail_init(mntns_fd, tree_fd, tree_sock[1], ipc_fd, result_pipe[1], new_net);
    }
    close(status_pipe[1]);
    close(result_pipe[1]);
    if (step > 0) {
        waiting_init = init;    /* killed by cleanup() if anything below fails */
        close(tree_sock[1]);
        static struct jr_plan before;
        before = plan;
        finish_mount_step(step);
        load_plan();    /* the mount step may have moved the jail to a newer image */
        if (!same_session(&before, &plan))
            die(EXIT_MOUNT, "tenant '%s' changed while it was being mounted; run again", args.name);
        rootfd = open_if_mounted();
        if (rootfd < 0)
            die(EXIT_MOUNT, "jail '%s' is still not fully mounted after the mount step", args.name);
        tree_fd = clone_tree(rootfd);
        /* If this fails PID 1 has stopped (or, closed out below, stops): its status byte,
         * read below, carries its reason. */
        (void)send_fd(tree_sock[0], tree_fd);
        close(tree_sock[0]);
        write_session();
        close(lock);
        waiting_init = -1;
        clock_gettime(CLOCK_MONOTONIC, &t0);   /* --timeout counts from here, not from before the mount */
    }
    close(tree_fd);
    close(mntns_fd);
    if (ipc_fd >= 0)
        close(ipc_fd);
    for (size_t i = 0; i < cg.n_procs; i++)
        close(cg.procs_fd[i]);

    /* EOF: the program was executed. A byte: setup failed with that code (already explained on stderr). */
    unsigned char code;
    ssize_t got;
    while ((got = read(status_pipe[0], &code, 1)) < 0 && errno == EINTR)
        ;
    close(status_pipe[0]);
    if (got == 1) {
        while (waitpid(init, NULL, 0) < 0 && errno == EINTR)
            ;
        audit(LOG_WARNING, "refused: code=%d reason=setup failed in the jail", code);
        cleanup();
        return code;
    }

    /* Supervise: forward signals, enforce the wall-clock limit. */
    int timed_out = 0;
    struct rusage ru;
    int init_status;
    for (;;) {
        siginfo_t info;
        int sig;
        if (lim[LIM_WALL]) {
            struct timespec now, left;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long long ns = (long long)lim[LIM_WALL] * 1000000000LL - ((now.tv_sec - t0.tv_sec) * 1000000000LL +
                                                                     (now.tv_nsec - t0.tv_nsec));
            if (ns <= 0) {
                sig = -1;
                errno = EAGAIN;
            } else {
                left.tv_sec = ns / 1000000000LL;
                left.tv_nsec = ns % 1000000000LL;
                sig = sigtimedwait(&set, &info, &left);
            }
        } else {
            sig = sigwaitinfo(&set, &info);
        }
        if (sig < 0 && errno == EAGAIN && !timed_out) {
            timed_out = 1;
            kill(init, SIGKILL);    /* PID 1 gone: the kernel kills the whole session */
            continue;
        }
        if (sig < 0 && errno == EAGAIN) {
            sig = sigwaitinfo(&set, &info);
        }
        if (sig < 0)
            continue;
        if (sig != SIGCHLD) {
            kill(init, sig);
            continue;
        }
        pid_t r = wait4(init, &init_status, WNOHANG, &ru);
        if (r == init)
            break;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double wall = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;

    int prog_status;
    if (read_all(result_pipe[0], (char *)&prog_status, sizeof prog_status) != sizeof prog_status)
        prog_status = init_status;  /* PID 1 itself was killed (timeout, OOM): the session died with it */
    close(result_pipe[0]);
    int exit_code = WIFEXITED(prog_status) ? WEXITSTATUS(prog_status) : 128 + WTERMSIG(prog_status);

    double cpu_user = seconds(&ru.ru_utime), cpu_sys = seconds(&ru.ru_stime);
    unsigned long long oom = cg.mem_events[0] ? read_key(cg.mem_events, "oom_kill") : 0;
    unsigned long long pids_max = pids_refused();
    const char *killed_by = "none";
    int sig = WIFSIGNALED(prog_status) ? WTERMSIG(prog_status) : 0;
    if (timed_out)
        killed_by = "wall";
    else if (sig == SIGKILL && oom > cg.oom_before)
        killed_by = "memory";
    else if (sig == SIGXCPU || (sig == SIGKILL && lim[LIM_CPU] && cpu_user + cpu_sys >= (double)lim[LIM_CPU]))
        killed_by = "cpu";
    else if (sig == SIGXFSZ)
        killed_by = "fsize";
    else if (exit_code != 0 && pids_max > cg.pids_before)
        killed_by = "procs";

    if (meta_fd >= 0) {
        char buf[1024];
        unsigned long long peak = (unsigned long long)ru.ru_maxrss * 1024;
        if (cg.mem_peak[0] && cg.n_session)
            peak = read_key(cg.mem_peak, "");
        int n = snprintf(buf, sizeof buf,
                         "status %d\n%s %d\ncpu_user %.3f\ncpu_sys %.3f\nwall %.3f\nmem_peak %llu\nkilled_by %s\n",
                         exit_code, WIFEXITED(prog_status) ? "exitcode" : "signal",
                         WIFEXITED(prog_status) ? WEXITSTATUS(prog_status) : WTERMSIG(prog_status), cpu_user, cpu_sys,
                         wall, peak, killed_by);
        if (write_all(meta_fd, buf, (size_t)n) < 0)
        {
            char shown[512];
            fprintf(stderr, "jailrun: cannot write --meta %s: %s\n", escape(shown, sizeof shown, args.meta),
                    strerror(errno));
        }
        close(meta_fd);
    }
    cleanup();
    touch_lastuse();
    audit(LOG_INFO, "launch: status=%d wall=%.3f killed_by=%s", exit_code, wall, killed_by);
    return exit_code;
}
