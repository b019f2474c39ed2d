/* What tenant root (an admin tenant's uid 0 in its user namespace) tries against the host
 * (tests/launcher/test_admin_attacks.py). Exit 0 = the attack worked, 1 = it was stopped,
 * 2 = usage. One line on stdout says what happened. Static: it runs in the busybox image. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
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
    if (!strcmp(cmd, "module"))     /* load a kernel module (an empty one: the check comes first) */
        return result(syscall(SYS_init_module, "", 0UL, "") == 0 || errno == ENOEXEC || errno == EFAULT ||
                          errno == ENOENT,
                      "init_module");
    if (!strcmp(cmd, "finit_module")) {
        int fd = open("/bin/busybox", O_RDONLY);
        return result(syscall(SYS_finit_module, fd, "", 0) == 0 || errno == ENOEXEC, "finit_module");
    }
    if (!strcmp(cmd, "settime")) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return result(clock_settime(CLOCK_REALTIME, &ts) == 0, "clock_settime");
    }
    if (!strcmp(cmd, "settimeofday"))
        return result(syscall(SYS_settimeofday, NULL, NULL) == 0, "settimeofday");
    if (!strcmp(cmd, "iopl"))
        return result(iopl(3) == 0, "iopl");
    if (!strcmp(cmd, "ioperm"))
        return result(ioperm(0x80, 1, 1) == 0, "ioperm");
    if (!strcmp(cmd, "rawdisk")) {    /* raw I/O: a block device node made by tenant root */
        if (mknod("/tmp/sda", S_IFBLK | 0600, makedev(8, 0)) == 0) {
            int fd = open("/tmp/sda", O_RDONLY);
            return result(fd >= 0, "open a block device");
        }
        return result(0, "mknod a block device");
    }
    if (!strcmp(cmd, "mknod"))
        return result(mknod(arg, S_IFCHR | 0666, makedev(1, 3)) == 0, "mknod");
    if (!strcmp(cmd, "mount"))
        return result(mount("none", arg, "tmpfs", 0, NULL) == 0, "mount");
    if (!strcmp(cmd, "remount"))      /* make the jail's root (nosuid, nodev) honour setuid and devices */
        return result(mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND, NULL) == 0, "remount / without nosuid");
    if (!strcmp(cmd, "open_tree"))    /* the new mount API on a host-visible path */
        return result(syscall(SYS_open_tree, AT_FDCWD, "/", 1 /* OPEN_TREE_CLONE */) >= 0, "open_tree /");
    if (!strcmp(cmd, "fsopen"))
        return result(syscall(SYS_fsopen, "tmpfs", 0) >= 0, "fsopen tmpfs");
    if (!strcmp(cmd, "userns"))
        return result(unshare(CLONE_NEWUSER) == 0, "unshare(CLONE_NEWUSER)");
    if (!strcmp(cmd, "handle")) {     /* Docker's "shocker": a handle of / opened without a path */
        struct {
            struct file_handle h;
            unsigned char f[128];
        } fh;
        int mnt;
        fh.h.handle_bytes = 128;
        if (name_to_handle_at(AT_FDCWD, "/", &fh.h, &mnt, 0) < 0)
            return result(0, "name_to_handle_at");
        return result(open_by_handle_at(AT_FDCWD, &fh.h, O_RDONLY) >= 0, "open_by_handle_at");
    }
    if (!strcmp(cmd, "keyctl"))
        return result(syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0) >= 0, "keyctl");
    if (!strcmp(cmd, "add_key"))
        return result(syscall(SYS_add_key, "user", "k", "v", 1, -3) >= 0, "add_key");
    if (!strcmp(cmd, "bpf")) {
        union bpf_attr a;
        memset(&a, 0, sizeof a);
        a.map_type = BPF_MAP_TYPE_ARRAY;
        a.key_size = 4;
        a.value_size = 4;
        a.max_entries = 1;
        return result(syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof a) >= 0, "bpf");
    }
    if (!strcmp(cmd, "perf")) {
        struct perf_event_attr a;
        memset(&a, 0, sizeof a);
        a.size = sizeof a;
        a.type = PERF_TYPE_SOFTWARE;
        a.config = PERF_COUNT_SW_CPU_CLOCK;
        a.exclude_kernel = 1;
        return result(syscall(SYS_perf_event_open, &a, 0, -1, -1, 0) >= 0, "perf_event_open");
    }
    if (!strcmp(cmd, "userfaultfd"))
        return result(syscall(SYS_userfaultfd, 0) >= 0, "userfaultfd");
    if (!strcmp(cmd, "kexec"))
        return result(syscall(SYS_kexec_load, 0, 0, NULL, 0) == 0, "kexec_load");
    if (!strcmp(cmd, "io_uring"))
        return result(syscall(SYS_io_uring_setup, 1, calloc(1, 128)) >= 0, "io_uring_setup");
    if (!strcmp(cmd, "hostname"))
        return result(sethostname("pwned", 5) == 0, "sethostname");
    if (!strcmp(cmd, "netdown")) {    /* take the session's (or with --net the host's) lo down */
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        strcpy(ifr.ifr_name, "lo");
        return result(s >= 0 && ioctl(s, SIOCSIFFLAGS, &ifr) == 0, "SIOCSIFFLAGS lo down");
    }
    if (!strcmp(cmd, "sysrq")) {
        int fd = open("/proc/sysrq-trigger", O_WRONLY);
        return result(fd >= 0, "open /proc/sysrq-trigger for writing");
    }
    if (!strcmp(cmd, "sysctl")) {
        int fd = open("/proc/sys/kernel/hostname", O_WRONLY);
        return result(fd >= 0 && write(fd, "pwned\n", 6) == 6, "write /proc/sys/kernel/hostname");
    }
    if (!strcmp(cmd, "read"))
        return result(open(arg, O_RDONLY) >= 0, arg);
    if (!strcmp(cmd, "write")) {
        int fd = open(arg, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        return result(fd >= 0 && write(fd, "x", 1) == 1, arg);
    }
    if (!strcmp(cmd, "kill"))
        return result(kill(atoi(arg), SIGKILL) == 0, "kill");
    if (!strcmp(cmd, "fds")) {    /* any descriptor above 2 open at start: a way out */
        for (int fd = 3; fd < 1024; fd++)
            if (fcntl(fd, F_GETFD) >= 0) {
                errno = 0;
                return result(1, "a descriptor above 2 is open");
            }
        errno = EBADF;
        return result(0, "descriptors above 2");
    }
    return 2;
}
