/* jailrun: enter a jailyard jail and run one program in it as the tenant.
 *
 *   jailrun [options] NAME [[--] PROGRAM [ARGS...]]
 *
 * With no PROGRAM, the tenant's default program (its plan's "exec" and "env" lines, issue 15).
 *
 * Threat model. Installed setuid root. Trusted: root, the config file fixed
 * at build time (JAILRUN_CONFIG) when it and its directory are root-owned and
 * not group/other writable, the allowed callers it lists (root and the web
 * server by default), and the root-owned tenant plan and mount helper it
 * names. Everyone else is refused before anything else is read. The tenant is
 * hostile: nothing it can write (its home, tmp, overlay upper) is ever
 * followed as a path by this program with privileges, and inside the jail it
 * runs with no privileges, no host path reachable, its own PID, IPC, UTS,
 * cgroup and network namespaces (the tenant's own, made at mount, with
 * `net: private`; the host's only where the plan allows it), a fresh read-only /proc, a
 * minimal /dev, rlimits and per-tenant cgroup limits. The caller is trusted
 * but careless: its environment, descriptors, umask and terminal never reach
 * the tenant. Anything malformed is refused with one line on stderr, a line
 * in the audit log and an exit code from 120 to 127 (docs/contracts.md); every
 * launch adds one line there too. An admin tenant's program (plan line "admin BASE") runs
 * instead as uid 0 of a user namespace mapping the tenant's own range of host
 * ids, with a container runtime's default capabilities inside it and none on
 * the host; every other namespace of its session is still made by host root
 * and owned by the host's user namespace (userns.c). The audit log (JAILRUN_AUDIT_LOG, fixed at
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
 * With --pty the program's controlling terminal is a pty of the session's own
 * devpts, made by PID 1; the supervisor holds its master and relays bytes
 * between it and the caller's terminal (raw meanwhile), so the tenant never
 * holds a descriptor of the caller's terminal (pty.c).
 *
 * Entering is flat in the number of host mounts: the host mount namespace is
 * never copied. The jail tree is cloned with open_tree(OPEN_TREE_CLONE |
 * AT_RECURSIVE), PID 1 setns()es into a tiny template namespace kept at
 * <run_dir>/mntns-v2 (one tmpfs), unshares a copy of that, moves the tree in,
 * pivot_root()s into it and detaches the old root.
 *
 * The parts: main below is the launch sequence; audit.c (messages, the audit
 * log), config.c (config, plan, what the caller may ask), records.c (locks,
 * session records, last use), tree.c (mounted?, the mount step, the tree's
 * copy), template.c (the template namespace), cgroup.c (v1 and v2 cgroups),
 * jail.c (PID 1, privileges, the program), jailfs.c (the jail's filesystem),
 * supervise.c (waiting, --timeout, how the session ended), pty.c (--pty),
 * files.c (small file helpers). The hardening flags are in the Makefile.
 */
#define _GNU_SOURCE
#include "audit.h"
#include "cgroup.h"
#include "config.h"
#include "jail.h"
#include "jailrun.h"
#include "pty.h"
#include "records.h"
#include "supervise.h"
#include "template.h"
#include "tree.h"
#include "userns.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static void usage(void)
{
    printf("usage: jailrun [options] NAME [[--] PROGRAM [ARGS...]]\n"
           "Run PROGRAM as tenant NAME inside its jail (mounting the jail first if needed);\n"
           "with no PROGRAM, the tenant's own program (its package's or spec's `program`) with its environment.\n"
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
           "                   mem_peak, killed_by (none, wall, cpu, memory, procs, fsize, disk),\n"
           "                   cpu_throttled, cpu_throttled_periods\n"
           "  --net            keep the host network (only if the tenant's plan allows it)\n"
           "  --user NAME|UID  admin tenants: run as this user of the jail's own /etc/passwd (default root)\n"
           "  --pty            give the program a terminal of the session's own (controlling terminal, job\n"
           "                   control), relayed to the caller's terminal on stdin, put in raw mode meanwhile\n"
           "  --help           this text\n"
           "\n"
           "Exit status: the program's own (128+N if killed by signal N), or 120 usage, 121 caller not allowed,\n"
           "122 config untrusted or malformed, 123 unknown tenant or bad plan, 124 mount step failed,\n"
           "125 internal failure, 126 program not executable, 127 program not found.\n"
           "Config: %s\nAudit log: %s\n",
           JAILRUN_CONFIG, JAILRUN_AUDIT_LOG);
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

/* Before anything is read: sane descriptors, the audit log, no environment, no new privileges. */
static void start(void)
{
    int bad_fd = sanitize_fds();
    openlog("jailrun", LOG_PID, LOG_AUTHPRIV);
    umask(022);
    const char *why = geteuid() == 0 ? audit_open() : NULL;
    if (why)
        die(EXIT_INTERNAL, "cannot use the audit log %s: %s", JAILRUN_AUDIT_LOG, why);
    if (bad_fd >= 0)
        die(EXIT_USAGE, "descriptor %d is a directory or a path handle; refusing to pass it into a jail", bad_fd);
    records_start();
    if (clearenv() != 0)
        die(EXIT_INTERNAL, "clearenv");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        die_with_error(EXIT_INTERNAL, "no_new_privs");
    if (geteuid() != 0)
        die(EXIT_INTERNAL, "not running as root (install setuid root)");
}

/* The result file is the caller's: open it with the caller's rights. */
static int open_meta(const char *path, uid_t caller)
{
    if (!path)
        return -1;
    setfsuid(caller);
    setfsgid(getgid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0644);
    int saved = errno;
    setfsuid(0);
    setfsgid(0);
    errno = saved;
    if (fd < 0)
        die_with_error(EXIT_USAGE, "cannot open --meta %s", path);
    return fd;
}

/* ---- the jail's tree, under the tenant's lock ------------------------------------- */

/* Mount on demand, clone the tree and record the session under the tenant's
 * lock. Warm: the tree is cloned now. Cold: the mount step (mostly a Python
 * interpreter starting) runs while the template namespace and cgroups are
 * opened and PID 1 is created and prepares what needs no tree; the tree
 * follows over a socket (hand_over_tree). */
struct tree {
    int lock, tree_fd, sock[2];
    pid_t step;
    int netns;  /* issue 17: a private plan's network namespace (warm), else -1 */
};

/* open_if_mounted, and for a private plan its network namespace too: a jail whose
 * network is not (or no longer) set up is not ready, and the mount step repairs it. */
static int open_if_ready(const struct launch *l, int *netns)
{
    int rootfd = open_if_mounted(&l->plan);
    if (rootfd < 0 || l->plan.net != JR_NET_PRIVATE)
        return rootfd;
    *netns = open_tenant_netns(l);
    if (*netns < 0) {
        close(rootfd);
        return -1;
    }
    return rootfd;
}

static struct tree acquire_tree(const struct launch *l)
{
    struct tree t = {.tree_fd = -1, .sock = {-1, -1}, .step = -1, .netns = -1};
    char lockname[JR_NAME_MAX + 8];
    snprintf(lockname, sizeof lockname, "%s.lock", l->args.name);
    t.lock = lock_file(lockname, LOCK_SH);
    int rootfd = open_if_ready(l, &t.netns);
    if (rootfd < 0) {
        if (flock(t.lock, LOCK_EX) < 0)
            die_with_error(EXIT_INTERNAL, "cannot lock %s", lockname);
        rootfd = open_if_ready(l, &t.netns);
        if (rootfd < 0)
            t.step = start_mount_step(l, t.lock);
    }
    if (t.step < 0) {
        t.tree_fd = clone_tree(rootfd);
        /* Last use is stamped here, under the lock, as the session starts (a cold start
         * in hand_over_tree): an expiry pass that holds this lock then needs only the
         * stamp to know the jail was entered since it listed the session records. */
        write_session(l->args.name, l->args.argv[0], l->pty);
        touch_lastuse(l->args.name);
        close(t.lock);
    } else if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, t.sock) < 0) {
        die_with_error(EXIT_INTERNAL, "socketpair");
    }
    return t;
}

static pid_t waiting_init = -1;   /* PID 1, created during the mount step, before it has its tree */

/* Cold launch, PID 1 made: wait for the mount step, check the plan PID 1 took
 * still holds, and send it the freshly mounted tree. */
static void hand_over_tree(struct launch *l, struct tree *t, pid_t init)
{
    static struct jr_plan before;
    waiting_init = init;    /* killed by cleanup() if anything below fails */
    close(t->sock[1]);
    before = l->plan;
    finish_mount_step(t->step, l->args.name);
    load_plan(&l->cfg, l->args.name, &l->plan);    /* the mount step may have moved the jail to a newer image */
    if (!same_session(&before, &l->plan))
        die(EXIT_MOUNT, "tenant '%s' changed while it was being mounted; run again", l->args.name);
    int rootfd = open_if_mounted(&l->plan);
    if (rootfd < 0)
        die(EXIT_MOUNT, "jail '%s' is still not fully mounted after the mount step", l->args.name);
    int netns = -1;
    if (l->plan.net == JR_NET_PRIVATE && (netns = open_tenant_netns(l)) < 0)
        die(EXIT_MOUNT, "the network of jail '%s' is still not set up after the mount step", l->args.name);
    t->tree_fd = clone_tree(rootfd);
    /* If this fails PID 1 has stopped (or, closed out below, stops): its status byte,
     * read below, carries its reason. */
    (void)send_fd(t->sock[0], t->tree_fd);
    if (netns >= 0) {
        (void)send_fd(t->sock[0], netns);   /* private: after the tree, on the same socket (jail.c) */
        close(netns);
    }
    close(t->sock[0]);
    write_session(l->args.name, l->args.argv[0], l->pty);
    touch_lastuse(l->args.name);   /* under the lock, as on a warm start (acquire_tree) */
    close(t->lock);
    waiting_init = -1;
}

static void cleanup(void)
{
    if (waiting_init > 0) {
        kill(waiting_init, SIGKILL);
        while (waitpid(waiting_init, NULL, 0) < 0 && errno == EINTR)
            ;
        waiting_init = -1;
    }
    pty_restore();
    remove_session();
    cg_remove_session();
}

/* <run_dir>/ipc, read-only, for the jail's /run/ipc (jailfs.c, mount_ipc); -1 if there is none.
 * Also (issue 15) <run_dir>/ipc-tenants/NAME for /run/ipc-self. run_dir is root's: no symlink is
 * followed in the last component, and ipc-tenants must be a directory too. */
static int clone_ipc(const struct jr_config *cfg, int run_fd, const char *rel)
{
    struct stat st;
    if (fstatat(run_fd, rel, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode))
        return -1;
    if (strchr(rel, '/') && (fstatat(run_fd, "ipc-tenants", &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)))
        return -1;
    int fd = open_tree(run_fd, rel, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_SYMLINK_NOFOLLOW);
    struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC};
    if (fd < 0 || mount_setattr(fd, "", AT_EMPTY_PATH, &ro, sizeof ro) < 0)
        die_with_error(EXIT_INTERNAL, "cannot clone %s/%s", cfg->run_dir, rel);
    return fd;
}

/* Issue 15: no PROGRAM given: the plan's default program ("exec" lines) with its environment ("env" lines). */
static void use_default_program(struct launch *l, uid_t caller)
{
    const struct jr_plan *p = &l->plan;
    if (p->n_prog == 0)
        die(EXIT_USAGE, "missing PROGRAM: tenant '%s' has no default program (usage: jailrun [options] NAME [[--] PROGRAM [ARGS...]])",
            l->args.name);
    memcpy(l->prog_buf, p->prog_buf, sizeof l->prog_buf);
    for (size_t i = 0; i < p->n_prog; i++)
        l->prog_argv[i] = l->prog_buf + p->prog[i];
    l->prog_argv[p->n_prog] = NULL;
    for (size_t i = 0; i < p->n_prog_env; i++)
        l->prog_env[i] = l->prog_buf + p->prog_env[i];
    l->n_prog_env = p->n_prog_env;
    l->args.argv = l->prog_argv;
    /* An admin tenant's programs run as its root by default; its own program runs as its own user. */
    if (p->admin && !l->args.user)
        l->args.user = p->name;
    audit_subject(caller, l->args.name, l->args.argv[0]);
}

/* The supervisor's side of a running PID 1. */
struct running {
    pid_t init;
    int status_fd, result_fd;   /* read ends: PID 1's setup failure code, the program's wait status */
    sigset_t signals;           /* blocked here: forwarded to the session, and SIGCHLD */
    struct timespec start;      /* what --timeout counts from */
};

/* PID 1 in new PID, IPC, UTS (and network) namespaces (jail.c); in the
 * supervisor, with the signals it will wait for blocked from now on. */
static struct running start_jail(const struct launch *l, const struct tree *t, int mntns_fd, int ipc_fd)
{
    struct running r;
    int status_pipe[2], result_pipe[2];
    if (pipe2(status_pipe, O_CLOEXEC) < 0 || pipe2(result_pipe, O_CLOEXEC) < 0)
        die_with_error(EXIT_INTERNAL, "pipe");
    sigemptyset(&r.signals);
    add_forwarded_signals(&r.signals);
    sigaddset(&r.signals, SIGCHLD);
    sigprocmask(SIG_BLOCK, &r.signals, NULL);
    clock_gettime(CLOCK_MONOTONIC, &r.start);
    unsigned long flags = CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | (l->new_net ? CLONE_NEWNET : 0);
    /* fork() with namespace flags: the child continues on a copy of our stack. */
    r.init = (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);
    if (r.init < 0)
        die_with_error(EXIT_INTERNAL, "cannot create the jail's namespaces");
    if (r.init == 0) {
        close(status_pipe[0]);
        close(result_pipe[0]);
        if (t->sock[0] >= 0)
            close(t->sock[0]);
        struct jail_fds fds = {mntns_fd, t->tree_fd, t->sock[1], ipc_fd, status_pipe[1], result_pipe[1], t->netns};
        jail_init(l, fds);
    }
    close(status_pipe[1]);
    close(result_pipe[1]);
    r.status_fd = status_pipe[0];
    r.result_fd = result_pipe[0];
    return r;
}

/* EOF: the program was executed. A byte: setup failed with that code (already explained on stderr). */
static int setup_failure(int status_fd)
{
    unsigned char code;
    ssize_t got;
    while ((got = read(status_fd, &code, 1)) < 0 && errno == EINTR)
        ;
    close(status_fd);
    return got == 1 ? code : 0;
}

int main(int argc, char **argv)
{
    static struct launch l;
    char err[JR_ERR_MAX];
    uid_t caller = getuid();
    if (argc < 1)
        _exit(EXIT_USAGE);  /* execve with an empty argv: nothing to name */
    l.cmdline = argv[0];
    l.cmdline_len = (size_t)(argv[argc - 1] + strlen(argv[argc - 1]) + 1 - argv[0]);
    audit_subject(caller, NULL, NULL);
    report_at_exit(cleanup);
    start();

    /* Who asks for what: the caller, the request, the tenant's plan. */
    load_config(&l.cfg);
    check_caller(&l.cfg, caller);
    argc = take_pty_option(argc, argv, &l.pty);
    if (jr_parse_args(argc, argv, &l.args, err, sizeof err) < 0)
        die(EXIT_USAGE, "%s", err);
    if (l.args.help) {
        usage();
        return 0;
    }
    audit_subject(caller, l.args.name, l.args.argv ? l.args.argv[0] : NULL);   /* NULL: the default program, below */
    if (!jr_valid_name(l.args.name))
        die(EXIT_USAGE, "invalid tenant name '%.64s': expected [a-z_][a-z0-9_-]{0,31}", l.args.name);
    if (l.pty)
        pty_check_caller();
    load_plan(&l.cfg, l.args.name, &l.plan);
    if (!l.args.argv)
        use_default_program(&l, caller);
    resolve_limits(&l);
    if (l.args.user && !l.plan.admin)
        die(EXIT_USAGE, "--user: tenant '%s' is not an admin tenant; its programs run as itself", l.args.name);
    l.userns_fd = l.plan.admin ? userns_open(&l.plan) : -1;
    int meta_fd = open_meta(l.args.meta, caller);

    /* The jail: its tree (mounted on demand), the template namespace, cgroups, PID 1. */
    int run_fd = records_open(&l.cfg);
    struct tree t = acquire_tree(&l);
    int mntns_fd = open_template_ns(&l.cfg, run_fd);
    int session_mem = l.args.limits[LIM_MEM] != JR_UNSET, session_procs = l.args.limits[LIM_PROCS] != JR_UNSET;
    cg_setup(&l, l.args.meta || session_mem || session_procs, l.args.meta != NULL);
    int ipc_fd = clone_ipc(&l.cfg, run_fd, "ipc");
    char self_rel[JR_NAME_MAX + 16];
    snprintf(self_rel, sizeof self_rel, "ipc-tenants/%s", l.args.name);
    l.ipc_self_fd = clone_ipc(&l.cfg, run_fd, self_rel);
    if (l.pty)
        pty_prepare();
    struct running r = start_jail(&l, &t, mntns_fd, ipc_fd);
    if (t.step >= 0) {   /* cold: the step (its pid) or the mount service (0) mounts */
        hand_over_tree(&l, &t, r.init);
        clock_gettime(CLOCK_MONOTONIC, &r.start);   /* --timeout counts from here, not from before the mount */
    }
    close(t.tree_fd);   /* PID 1 has them now */
    if (t.netns >= 0)
        close(t.netns);
    close(mntns_fd);
    if (ipc_fd >= 0)
        close(ipc_fd);
    if (l.ipc_self_fd >= 0)
        close(l.ipc_self_fd);
    cg_close_leaves();
    int code = setup_failure(r.status_fd);
    if (code) {
        while (waitpid(r.init, NULL, 0) < 0 && errno == EINTR)
            ;
        audit(LOG_WARNING, "refused: code=%d reason=setup failed in the jail", code);
        cleanup();
        return code;
    }

    /* The session runs: supervise it (relaying its terminal), then record how it ended. */
    if (l.pty)
        pty_receive();
    struct outcome o = supervise(r.init, &r.signals, &r.start, l.lim[LIM_WALL], l.lim[LIM_CPU], r.result_fd, l.pty);
    if (meta_fd >= 0)
        write_meta(meta_fd, &o, l.args.meta);
    cleanup();
    touch_lastuse(l.args.name);
    audit(LOG_INFO, "launch: status=%d wall=%.3f killed_by=%s", o.exit_code, o.wall, o.killed_by);
    return o.exit_code;
}
