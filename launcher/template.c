/* Making and finding the template mount namespace. */
#define _GNU_SOURCE
#include "template.h"

#include "audit.h"
#include "files.h"
#include "jailrun.h"
#include "records.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

/* The template's pin; the version changes whenever the template's content does,
 * and a launcher finding an older pin detaches it and builds its own. */
#define TEMPLATE_PIN "mntns-v2"
#define TEMPLATE_PIN_OLD "mntns"

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

/* One try at the template on CPU `cpu`: a child unshares a copy of our mount
 * namespace, we pin it with an nsfs bind mount, then the child turns it into
 * the template (pinned while it still looks like ours: binding it after the
 * pivot was refused too). Returns 0, or -1 with errno EINVAL when the kernel
 * refused the pin as a namespace loop (see create_template_ns). */
static int try_template_ns(const struct jr_config *cfg, int cpu, const char *path)
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
        ok = mount("jailyard-template", cfg->run_dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                   "mode=0755,size=16k,nr_inodes=16") == 0 &&
             chdir(cfg->run_dir) == 0 && mkdir(NEWROOT + 1, 0755) == 0 && sys_pivot_root(".", ".") == 0 &&
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
static int create_template_ns(const struct jr_config *cfg, int run_fd)
{
    char path[JR_PATH_MAX];
    join(path, sizeof path, cfg->run_dir, TEMPLATE_PIN);
    int fd = openat(run_fd, TEMPLATE_PIN, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        die_with_error(EXIT_INTERNAL, "cannot create %s", path);
    close(fd);
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) < 0)
        die_with_error(EXIT_INTERNAL, "sched_getaffinity");
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, &allowed) && try_template_ns(cfg, cpu, path) == 0)
            return open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    die(EXIT_INTERNAL, "cannot pin the template namespace on %s: the kernel refused it on every CPU", path);
}

int open_template_ns(const struct jr_config *cfg, int run_fd)
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
        fd = create_template_ns(cfg, run_fd);
        /* An older launcher's pin: its sessions keep their own copies; nothing uses it again. */
        char old[JR_PATH_MAX];
        join(old, sizeof old, cfg->run_dir, TEMPLATE_PIN_OLD);
        if (umount2(old, MNT_DETACH | UMOUNT_NOFOLLOW) == 0)
            unlinkat(run_fd, TEMPLATE_PIN_OLD, 0);
    }
    close(lock);
    if (fd < 0 || ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWNS)
        die(EXIT_INTERNAL, "%s/%s is not a mount namespace", cfg->run_dir, TEMPLATE_PIN);
    return fd;
}
