/* PID 1 of the jail (a reaper that forwards signals), its privileges, and the program. */
#define _GNU_SOURCE
#include "jail.h"

#include "audit.h"
#include "cgroup.h"
#include "jailfs.h"
#include "pty.h"
#include "tree.h"
#include "seccomp_filter.h"
#include "userns.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/nsfs.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const int forwarded[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};

void add_forwarded_signals(sigset_t *set)
{
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
        sigaddset(set, forwarded[i]);
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

/* ---- the tenant's own network (issue 17) -------------------------------------------- */

int open_tenant_netns(const struct launch *l)
{
    char path[JR_PATH_MAX + JR_NAME_MAX + 16];
    if ((size_t)snprintf(path, sizeof path, "%s/netns/%s", l->cfg.run_dir, l->plan.name) >= sizeof path)
        die(EXIT_CONFIG, "run_dir is too long for the network namespace path");
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT)
            return -1;
        die_with_error(EXIT_MOUNT, "cannot open the network namespace %s", path);
    }
    /* A bind mount of a namespace answers NS_GET_NSTYPE; a plain file left there does not. */
    if (ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWNET) {
        close(fd);
        return -1;
    }
    return fd;
}

static void join_tenant_netns(int fd)
{
    if (setns(fd, CLONE_NEWNET) < 0)
        die_with_error(EXIT_INTERNAL, "cannot join the tenant's network namespace");
    close(fd);
}

/* ---- privileges ------------------------------------------------------------------- */

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

static void apply_rlimits(const unsigned long long *lim)
{
    for (size_t i = 0; i < sizeof rlimit_table / sizeof rlimit_table[0]; i++) {
        struct rlimit rl;
        if (rlimit_table[i].slot < 0) {
            rl.rlim_cur = rl.rlim_max = rlimit_table[i].fixed;
        } else {
            unsigned long long v = lim[rlimit_table[i].slot];
            if (rlimit_table[i].resource == RLIMIT_AS && cg_has(CG_MEMORY))
                continue;   /* the memory cgroup limits what is used, not what is mapped */
            /* The pids cgroup limits the session and the tenant and counts what it refuses
             * (--meta's killed_by procs); RLIMIT_NPROC counts the uid's tasks host-wide and,
             * checked first by fork, would refuse without a trace. */
            if (rlimit_table[i].resource == RLIMIT_NPROC && cg_has(CG_PIDS))
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

static void drop_privileges(const struct jr_plan *plan, int exec_follows)
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
    gid_t gid = (gid_t)plan->gid;
    uid_t uid = (uid_t)plan->uid;
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

/* ---- the program ------------------------------------------------------------------ */

static void run_program(const struct launch *l) __attribute__((noreturn));
static void run_program(const struct launch *l)
{
    const struct jr_plan *plan = &l->plan;
    const struct jr_args *args = &l->args;
    sigset_t none;
    sigemptyset(&none);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
        signal(forwarded[i], SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (setsid() < 0)
        die_with_error(EXIT_INTERNAL, "setsid");
    apply_rlimits(l->lim);
    /* Tenant root: the user namespace and who the program runs as there (userns.c). */
    struct jail_user who = {.uid = plan->uid, .gid = plan->gid};
    snprintf(who.name, sizeof who.name, "%s", plan->name);
    snprintf(who.home, sizeof who.home, "%s", plan->home);
    if (plan->admin)
        userns_become(l, &who);
    else
        drop_privileges(plan, 1);
    umask(plan->admin ? 022 : 077);
    const char *cwd = args->cwd ? args->cwd : who.home;
    if (chdir(cwd) < 0) {
        if (args->cwd)
            die_with_error(EXIT_USAGE, "cannot change to --cwd %s", cwd);
        die_with_error(EXIT_INTERNAL, "cannot change to the home directory %s", cwd);
    }
    const char *path = plan->admin ? JAIL_ADMIN_PATH : JAIL_PATH;
    if (clearenv() != 0 || setenv("PATH", path, 1) < 0 || setenv("HOME", who.home, 1) < 0 ||
        setenv("USER", who.name, 1) < 0 || setenv("LOGNAME", who.name, 1) < 0 || setenv("SHELL", "/bin/sh", 1) < 0 ||
        setenv("LANG", "C.UTF-8", 1) < 0)
        die_with_error(EXIT_INTERNAL, "environment");
    /* The default program's environment (issue 15; n_prog_env is 0 for a PROGRAM given), then --env: later ones win. */
    for (size_t i = 0; i < l->n_prog_env + args->n_env; i++) {
        const char *kv = i < l->n_prog_env ? l->prog_env[i] : args->env[i - l->n_prog_env];
        char key[256];
        size_t klen = strcspn(kv, "=");
        if (klen >= sizeof key)
            die(EXIT_USAGE, "--env name too long");
        memcpy(key, kv, klen);
        key[klen] = '\0';
        if (setenv(key, kv + klen + 1, 1) < 0)
            die_with_error(EXIT_INTERNAL, "environment");
    }
    if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        die_with_error(EXIT_INTERNAL, "close_range");
    scope_abstract_sockets();
    install_seccomp();
    if (plan->admin)
        userns_seccomp();
    /* --pty: the terminal last, so every error up to the exec reaches the caller's stderr,
     * which nobody relays from the session's terminal yet. */
    int caller_err = -1;
    if (l->pty) {
        caller_err = fcntl(2, F_DUPFD_CLOEXEC, 3);
        pty_attach();
    }
    execvp(args->argv[0], args->argv);
    int saved = errno;
    if (caller_err >= 0)
        dup2(caller_err, 2);
    errno = saved;
    die_with_error(saved == ENOENT ? EXIT_NOTFOUND : EXIT_NOEXEC, "cannot run %s", args->argv[0]);
}

/* ---- PID 1 ------------------------------------------------------------------------ */

static void noop_handler(int sig) { (void)sig; }

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

void jail_init(const struct launch *l, struct jail_fds fds)
{
    report_to_supervisor(fds.status);
    die_with_supervisor(fds.result);
    cg_join();
    if (unshare(CLONE_NEWCGROUP) < 0)
        die_with_error(EXIT_INTERNAL, "cgroup namespace");
    if (setsid() < 0)
        die_with_error(EXIT_INTERNAL, "setsid");
    if (sethostname(l->plan.hostname, strlen(l->plan.hostname)) < 0)
        die_with_error(EXIT_INTERNAL, "sethostname");
    if (l->new_net)
        loopback_up();
    /* private: the namespace comes with the tree (warm) or after it on the same socket (cold). */
    int ns_sock = -1;
    if (l->plan.net == JR_NET_PRIVATE && fds.netns < 0 && (ns_sock = fcntl(fds.tree_sock, F_DUPFD_CLOEXEC, 3)) < 0)
        die_with_error(EXIT_INTERNAL, "dup");
    enter_jail_fs(fds.mntns, fds.tree, fds.tree_sock, fds.ipc, l->ipc_self_fd, l->cfg.ipc_path, l->lim[LIM_MEM]);
    if (ns_sock >= 0) {
        fds.netns = receive_fd(ns_sock);
        close(ns_sock);
    }
    if (l->plan.net == JR_NET_PRIVATE)
        join_tenant_netns(fds.netns);
    if (l->pty)
        pty_open_in_jail(l->plan.uid, l->plan.gid);

    /* A PID 1 only receives signals it has a handler for. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = noop_handler;
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
        sigaction(forwarded[i], &sa, NULL);
    add_forwarded_signals(&set);
    sigaction(SIGCHLD, &sa, NULL);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);

    pid_t child = fork();
    if (child < 0)
        die_with_error(EXIT_INTERNAL, "fork");
    if (child == 0) {
        close(fds.result);
        run_program(l);
    }
    /* Keep nothing of the host: only the result pipe stays open. */
    int keep = fds.result;
    if (keep > 3)
        close_range(3, (unsigned)keep - 1, 0);
    close_range((unsigned)keep + 1, ~0U, 0);
    /* The tenant sees PID 1 in its ps: show it no host path and no caller's command line. */
    memset(l->cmdline, 0, l->cmdline_len);
    snprintf(l->cmdline, l->cmdline_len, "jailrun-init");
    prctl(PR_SET_NAME, "jailrun-init", 0, 0, 0);
    report_to_supervisor(-1);
    drop_privileges(&l->plan, 0);
    die_with_supervisor(fds.result);  /* a change of uid clears the parent-death signal */

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
                if (write(fds.result, &st, sizeof st) < 0) { /* the supervisor sees SIGKILL then */ }
                _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
            }
        }
    }
}
