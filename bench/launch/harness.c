/* The floor of jailrun's design, in two depths.
 *
 *   harness [-f] [-c CGROUP_PROCS]... JAIL_ROOT TEMPLATE_NS UID PROGRAM [ARGS...]
 *
 * Bare (default): open_tree(OPEN_TREE_CLONE|AT_RECURSIVE) of the jail, clone
 * into new PID, IPC, UTS and net namespaces, setns into the template mount
 * namespace, unshare a copy of it, move the tree in, mount /proc and a /dev
 * tmpfs with one node, pivot_root, detach the old root, fork, drop to UID, exec.
 *
 * Full (-f): the kernel work jailrun does for a warm launch, in the same order,
 * without what is jailrun's own (config and plan files, checks, the lock,
 * session and last-use records, syslog, error reporting): nosuid,nodev on the
 * cloned tree, joining the tenant's cgroups (-c, each a cgroup.procs), a
 * cgroup namespace, a new session, /proc read-only, the template's /dev moved
 * in with a private devpts and a /dev/shm tmpfs, the hostname, lo up, a PID 1
 * that forwards signals and reaps, rlimits, no_new_privs, the capability
 * bounding set emptied, the ids changed, descriptors closed, the same seccomp
 * filter, and the supervisor's wait4 for the rusage. jailrun over this is what
 * its own bookkeeping costs. */
#define _GNU_SOURCE
#include "seccomp_filter.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(x) do { if ((x) < 0) { perror(#x); _exit(125); } } while (0)

static int fsmount_opts(const char *type, const char *const *opts, unsigned attrs)
{
    int fs = fsopen(type, FSOPEN_CLOEXEC);
    CHECK(fs);
    for (size_t i = 0; opts && opts[i]; i += 2)
        CHECK(fsconfig(fs, FSCONFIG_SET_STRING, opts[i], opts[i + 1], 0));
    CHECK(fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0));
    int m = fsmount(fs, FSMOUNT_CLOEXEC, attrs);
    CHECK(m);
    close(fs);
    return m;
}

static void attach_at(int mfd, int dirfd, const char *rel)
{
    int target = openat(dirfd, rel, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    CHECK(target);
    CHECK(move_mount(mfd, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH));
    close(target);
    close(mfd);
}

static void full_fs(int rootfd)
{
    static const char *const pts_opts[] = {"ptmxmode", "0666", "mode", "0620", NULL};
    static const char *const shm_opts[] = {"mode", "01777", "size", "536870912", NULL};
    attach_at(fsmount_opts("proc", NULL, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC),
              rootfd, "proc");
    int tmpl = open("/dev", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    CHECK(tmpl);
    attach_at(tmpl, rootfd, "dev");
    int devfd = openat(rootfd, "dev", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    CHECK(devfd);
    attach_at(fsmount_opts("devpts", pts_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC), devfd, "pts");
    attach_at(fsmount_opts("tmpfs", shm_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC), devfd, "shm");
    close(devfd);
}

static void lo_up(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(s);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    CHECK(ioctl(s, SIOCGIFFLAGS, &ifr));
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    CHECK(ioctl(s, SIOCSIFFLAGS, &ifr));
    close(s);
}

static void drop(uid_t uid, int exec_follows)
{
    CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
    if (exec_follows) {
        for (int cap = 0; cap <= 63; cap++)
            if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
                break;
        CHECK(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0));
    }
    CHECK(setgroups(0, NULL));
    CHECK(setresgid(uid, uid, uid));
    CHECK(setresuid(uid, uid, uid));
}

static void noop(int sig) { (void)sig; }

int main(int argc, char **argv)
{
    int full = 0, opt;
    int cg[4];
    size_t ncg = 0;
    while ((opt = getopt(argc, argv, "+fc:")) != -1) {
        if (opt == 'f')
            full = 1;
        else if (opt == 'c' && ncg < 4)
            CHECK(cg[ncg++] = open(optarg, O_WRONLY | O_CLOEXEC));
        else
            return 120;
    }
    argc -= optind;
    argv += optind;
    if (argc < 4)
        return 120;
    int rfd = open(argv[0], O_PATH | O_DIRECTORY | O_CLOEXEC);
    CHECK(rfd);
    int tree = open_tree(rfd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH);
    CHECK(tree);
    if (full) {
        struct mount_attr attr = {.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV};
        CHECK(mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr));
    }
    int ns = open(argv[1], O_RDONLY | O_CLOEXEC);
    CHECK(ns);
    uid_t uid = (uid_t)atoi(argv[2]);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    if (full)
        sigprocmask(SIG_BLOCK, &set, NULL);
    pid_t pid = (pid_t)syscall(SYS_clone, SIGCHLD | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET,
                               NULL, NULL, NULL, NULL);
    CHECK(pid);
    if (pid == 0) {
        for (size_t i = 0; i < ncg; i++)
            CHECK(write(cg[i], "0", 1));
        if (full) {
            CHECK(unshare(CLONE_NEWCGROUP));
            CHECK(setsid());
        }
        CHECK(setns(ns, CLONE_NEWNS));
        CHECK(unshare(CLONE_NEWNS));
        CHECK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL));
        CHECK(move_mount(tree, "", AT_FDCWD, "/r", MOVE_MOUNT_F_EMPTY_PATH));
        if (full) {
            int root = open("/r", O_PATH | O_DIRECTORY | O_CLOEXEC);
            CHECK(root);
            full_fs(root);
            CHECK(fchdir(root));
            close(root);
        } else {
            CHECK(move_mount(fsmount_opts("proc", NULL, MOUNT_ATTR_NOSUID), "", AT_FDCWD, "/r/proc",
                             MOVE_MOUNT_F_EMPTY_PATH));
            int dev = fsmount_opts("tmpfs", NULL, MOUNT_ATTR_NOSUID);
            CHECK(mknodat(dev, "null", S_IFCHR | 0666, makedev(1, 3)));
            CHECK(move_mount(dev, "", AT_FDCWD, "/r/dev", MOVE_MOUNT_F_EMPTY_PATH));
            CHECK(chdir("/r"));
        }
        CHECK(syscall(SYS_pivot_root, ".", "."));
        CHECK(umount2(".", MNT_DETACH));
        CHECK(chdir("/"));
        if (full) {
            CHECK(sethostname("bench", 5));
            lo_up();
            struct sigaction sa = {.sa_handler = noop};
            sigaction(SIGCHLD, &sa, NULL);
            sigaction(SIGTERM, &sa, NULL);
        }
        pid_t c = fork();
        CHECK(c);
        if (c == 0) {
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, NULL);
            CHECK(setsid());
            if (full) {
                static const int res[] = {RLIMIT_CPU,  RLIMIT_FSIZE,   RLIMIT_NOFILE,  RLIMIT_NPROC,
                                          RLIMIT_CORE, RLIMIT_MEMLOCK, RLIMIT_MSGQUEUE};
                for (size_t i = 0; i < sizeof res / sizeof res[0]; i++) {
                    struct rlimit rl;
                    CHECK(getrlimit(res[i], &rl));
                    CHECK(setrlimit(res[i], &rl));
                }
                drop(uid, 1);
                umask(077);
                CHECK(chdir("/"));
                clearenv();
                setenv("PATH", "/usr/local/bin:/usr/bin:/bin", 1);
                CHECK(close_range(3, ~0U, CLOSE_RANGE_CLOEXEC));
                struct sock_fprog prog = {.len = sizeof jr_seccomp_filter / sizeof jr_seccomp_filter[0],
                                          .filter = (struct sock_filter *)jr_seccomp_filter};
                CHECK(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0));
            } else {
                CHECK(setresgid(uid, uid, uid));
                CHECK(setresuid(uid, uid, uid));
            }
            execv(argv[3], argv + 3);
            _exit(127);
        }
        if (full) {
            close_range(3, ~0U, 0);
            drop(uid, 0);
        }
        int st;
        waitpid(c, &st, 0);
        _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128);
    }
    int st;
    if (full) {
        siginfo_t info;
        struct rusage ru;
        for (;;) {
            if (sigwaitinfo(&set, &info) == SIGCHLD && wait4(pid, &st, WNOHANG, &ru) == pid)
                break;
        }
    } else {
        waitpid(pid, &st, 0);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}
