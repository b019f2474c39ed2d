/* Tenant root (docs/design.md, "Tenant root"): an admin tenant's program runs as uid 0 of a user
 * namespace whose ids 0..65535 are the tenant's own range of host ids (plan->admin..). Every
 * other namespace of the session (mount, PID, IPC, UTS, network, cgroup) was made by host root
 * before and is owned by the host's user namespace: tenant root's capabilities reach only what
 * its ids own (its overlay upper layer, its processes), never a mount, the hostname, the
 * network or the clock. Its bounding set is a container runtime's default minus what needs a
 * namespace it does not own; an extra seccomp filter refuses what runtimes refuse by default. */
#define _GNU_SOURCE
#include "userns.h"

#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* uid_map or gid_map text: 0..65535 -> base.., with `own` (the tenant's plain uid or gid)
 * mapped to itself, so its home (owned by that id on the host) stays its own inside. */
static void map_text(char *buf, size_t len, unsigned long base, unsigned long own)
{
    if (own < JR_ADMIN_COUNT) {
        int n = snprintf(buf, len, "0 %lu %lu\n%lu %lu 1\n", base, own, own, own);
        if (own + 1 < JR_ADMIN_COUNT)
            snprintf(buf + n, len - (size_t)n, "%lu %lu %lu\n", own + 1, base + own + 1, JR_ADMIN_COUNT - own - 1);
    } else {
        snprintf(buf, len, "0 %lu %lu\n%lu %lu 1\n", base, JR_ADMIN_COUNT, own, own);
    }
}

static int write_map(pid_t pid, const char *file, const char *text)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    int ok = fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text);
    int saved = errno;
    if (fd >= 0)
        close(fd);
    errno = saved;
    return ok ? 0 : -1;
}

/* The namespace's first member: born in it, it only waits to be killed (it shares our memory,
 * CLONE_VM, so making it copies no page tables: this is on every admin launch). */
static int hold_namespace(void *arg)
{
    /* A supervisor killed meanwhile (SIGKILL from a caller's timeout) takes it along. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != *(pid_t *)arg)
        _exit(0);
    for (;;)
        pause();
    return 0;
}

int userns_open(const struct jr_plan *plan)
{
    static char stack[16384] __attribute__((aligned(16)));
    char path[64], text[192];
    /* Every signal blocked while the child lives: sharing our memory, it must never run one of
     * our handlers (a Ctrl-C reaches the whole process group). SIGKILL ends it all the same. */
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    static pid_t parent;
    parent = getpid();
    pid_t pid = clone(hold_namespace, stack + sizeof stack, CLONE_NEWUSER | CLONE_VM | SIGCHLD, &parent);
    if (pid < 0) {
        int err = errno;
        sigprocmask(SIG_SETMASK, &old, NULL);
        errno = err;
        die_with_error(EXIT_INTERNAL, "cannot create the tenant's user namespace (is /proc/sys/user/max_user_namespaces 0?)");
    }
    const char *failed = NULL;
    int fd = -1;
    map_text(text, sizeof text, plan->admin, plan->uid);
    if (write_map(pid, "uid_map", text) < 0)
        failed = "write the uid_map of";
    map_text(text, sizeof text, plan->admin, plan->gid);
    if (!failed && write_map(pid, "gid_map", text) < 0)
        failed = "write the gid_map of";
    snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
    if (!failed && (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        failed = "open";
    int saved = errno;
    /* Killed and reaped before any error is reported: it must never outlive us. */
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    sigprocmask(SIG_SETMASK, &old, NULL);
    errno = saved;
    if (failed)
        die_with_error(EXIT_INTERNAL, "cannot %s the tenant's user namespace", failed);
    return fd;
}

/* Tenant root's bounding set: Docker's default capabilities without CAP_MKNOD and CAP_NET_RAW
 * (devices and raw sockets need namespaces tenant root does not own) and CAP_NET_BIND_SERVICE
 * (the session's network namespace is the host's). No CAP_SYS_ADMIN, CAP_DAC_READ_SEARCH
 * (open_by_handle_at: Docker's "shocker"), CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_SYS_TIME,
 * CAP_SYS_RAWIO, CAP_NET_ADMIN. */
static const int root_caps[] = {CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER,    CAP_FSETID,   CAP_KILL,
                                CAP_SETGID, CAP_SETUID,      CAP_SETPCAP,   CAP_SYS_CHROOT, CAP_AUDIT_WRITE,
                                CAP_SETFCAP};

static int kept(int cap)
{
    for (size_t i = 0; i < sizeof root_caps / sizeof root_caps[0]; i++)
        if (root_caps[i] == cap)
            return 1;
    return 0;
}

/* The jail's own /etc/passwd, read as tenant root: by name, or by uid (which may have no entry). */
static void resolve_user(const char *want, struct jail_user *who)
{
    char *end;
    int numeric = want[0] >= '0' && want[0] <= '9';
    unsigned long want_uid = numeric ? strtoul(want, &end, 10) : 0;
    snprintf(who->name, sizeof who->name, "%s", want);
    who->uid = want_uid;
    who->gid = want_uid;
    snprintf(who->home, sizeof who->home, "/");
    FILE *f = fopen("/etc/passwd", "re");
    char line[2048];
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *field[7], *p = line;
        int n = 0;
        for (; n < 7 && p; n++) {
            field[n] = p;
            p = strchr(p, ':');
            if (p)
                *p++ = '\0';
        }
        if (n < 7 || !field[2][0] || !field[3][0])
            continue;
        unsigned long uid = strtoul(field[2], &end, 10), gid;
        if (*end || uid >= JR_ADMIN_COUNT)
            continue;
        gid = strtoul(field[3], &end, 10);
        if (*end || gid >= JR_ADMIN_COUNT)
            continue;
        if (numeric ? uid != want_uid : strcmp(field[0], want) != 0)
            continue;
        found = 1;
        who->uid = uid;
        who->gid = gid;
        snprintf(who->name, sizeof who->name, "%.32s", field[0]);
        if (field[5][0] == '/' && strlen(field[5]) < sizeof who->home)
            snprintf(who->home, sizeof who->home, "%s", field[5]);
    }
    if (f)
        fclose(f);
    if (!found && !numeric)
        die(EXIT_USAGE, "--user %s: no such user in the jail's /etc/passwd", want);
}

void userns_become(const struct launch *l, struct jail_user *who)
{
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        die_with_error(EXIT_INTERNAL, "no_new_privs");
    if (setns(l->userns_fd, CLONE_NEWUSER) < 0)
        die_with_error(EXIT_INTERNAL, "cannot enter the tenant's user namespace");
    close(l->userns_fd);
    /* Host uid 0 is not mapped here but still ours until this change: nothing is read before it. */
    if (setgroups(0, NULL) < 0 || setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
        die_with_error(EXIT_INTERNAL, "cannot become the tenant's root");
    resolve_user(l->args.user ? l->args.user : "root", who);
    for (int cap = 0; cap <= 63; cap++) {
        if (who->uid == 0 && kept(cap))
            continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
            if (errno == EINVAL && cap > 0)
                break;
            die_with_error(EXIT_INTERNAL, "cannot drop capability %d from the bounding set", cap);
        }
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
        die_with_error(EXIT_INTERNAL, "cannot clear ambient capabilities");
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    gid_t gid = (gid_t)who->gid;
    uid_t uid = (uid_t)who->uid;
    /* Any other user: leaving uid 0 clears every capability (no SECURE_KEEP_CAPS). Root: only the kept ones. */
    if (setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0)
        die_with_error(EXIT_INTERNAL, "cannot change to uid %u gid %u inside the jail", (unsigned)uid, (unsigned)gid);
    if (uid == 0) {
        for (size_t i = 0; i < sizeof root_caps / sizeof root_caps[0]; i++) {
            data[root_caps[i] / 32].permitted |= 1u << (root_caps[i] % 32);
            data[root_caps[i] / 32].effective |= 1u << (root_caps[i] % 32);
        }
        if (syscall(SYS_capset, &hdr, data) < 0)
            die_with_error(EXIT_INTERNAL, "cannot set tenant root's capabilities");
    }
    uid_t r, e, s;
    if (getresuid(&r, &e, &s) < 0 || r != uid || e != uid || s != uid || getgroups(0, NULL) != 0)
        die(EXIT_INTERNAL, "the change to uid %u inside the jail did not take", (unsigned)uid);
    if (syscall(SYS_capget, &hdr, data) < 0)
        die_with_error(EXIT_INTERNAL, "capget");
    for (int cap = 0; cap <= 63; cap++) {
        int has = (data[cap / 32].permitted | data[cap / 32].effective | data[cap / 32].inheritable) & (1u << (cap % 32));
        if (has && !(who->uid == 0 && kept(cap)))
            die(EXIT_INTERNAL, "capability %d is left after the change to uid %u", cap, (unsigned)uid);
    }
}

static const int refused[] = {
    __NR_keyctl,          __NR_add_key,        __NR_request_key,     __NR_bpf,           __NR_perf_event_open,
    __NR_userfaultfd,     __NR_kexec_load,     __NR_kexec_file_load, __NR_open_by_handle_at, __NR_name_to_handle_at,
    __NR_init_module,     __NR_finit_module,   __NR_delete_module,   __NR_settimeofday,  __NR_clock_settime,
    __NR_clock_adjtime,   __NR_adjtimex,       __NR_iopl,            __NR_ioperm,        __NR_mount,
    __NR_umount2,         __NR_pivot_root,     __NR_swapon,          __NR_swapoff,       __NR_reboot,
    __NR_acct,            __NR_quotactl,       __NR_syslog,          __NR_fsopen,        __NR_fsconfig,
    __NR_fsmount,         __NR_fspick,         __NR_open_tree,       __NR_move_mount,    __NR_mount_setattr,
    __NR_io_uring_setup,  __NR_io_uring_enter, __NR_io_uring_register, __NR_lookup_dcookie, __NR_sethostname,
    __NR_setdomainname,   __NR_vhangup,
};

void userns_seccomp(void)
{
    enum { N = sizeof refused / sizeof refused[0] };
    /* The common filter (installed first) already checked the architecture. */
    struct sock_filter f[N + 3];
    f[0] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    for (size_t k = 0; k < N; k++)
        f[1 + k] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)refused[k], (unsigned char)(N - k), 0);
    f[N + 1] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    f[N + 2] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
    struct sock_fprog prog = {.len = N + 3, .filter = f};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
        die_with_error(EXIT_INTERNAL, "cannot install tenant root's seccomp filter");
}
