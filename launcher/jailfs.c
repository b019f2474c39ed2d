/* The jail's filesystem: the tree, /proc, /dev, the IPC directory, pivot_root. */
#define _GNU_SOURCE
#include "jailfs.h"

#include "audit.h"
#include "files.h"
#include "jailrun.h"
#include "tree.h"

#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* The session's /dev: its copy of the template's, a private devpts instance and
 * a per-session tmpfs /dev/shm. */
static void build_dev(int rootfd, unsigned long long shm_bytes)
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
    if (shm_bytes)
        snprintf(shm_size, sizeof shm_size, "%llu", shm_bytes);
    else
        snprintf(shm_size, sizeof shm_size, "50%%");
    const char *shm_opts[] = {"mode", "01777", "size", shm_size, NULL};
    attach(fs_mount("tmpfs", shm_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC), devfd, "shm",
           "/dev/shm");
    close(devfd);
}

/* Issue 15, the shared IPC directory: <run_dir>/ipc (read-only, nosuid, nodev, noexec: cloned by
 * jailrun.c's clone_ipc) at /run/ipc, a slave of the host's, so a FIFO or socket the host makes later
 * appears in running sessions (the same directory) and so do mounts below it when the host's is a
 * shared mount. An image without /run/ipc gets a session /run of its own for it: a tiny read-only
 * tmpfs holding only the ipc mount point (the image's /run is hidden meanwhile; nothing writes a
 * read-only image's /run anyway). An image with no /run at all gets no IPC directory. */
static int has_dir(int rootfd, const char *rel)
{
    int fd = open_beneath(rootfd, rel, O_PATH | O_DIRECTORY);
    if (fd >= 0)
        close(fd);
    return fd >= 0;
}

static void mount_ipc(int rootfd, int ipc_fd, int ipc_self_fd, const char *ipc_path)
{
    /* ipc_path (config ipc_path, default /run/ipc) and ipc_path-self, relative to the jail root. */
    char rel[JR_PATH_MAX], self[JR_PATH_MAX + 8], self_abs[JR_PATH_MAX + 32], ipc_abs[JR_PATH_MAX + 32];
    snprintf(rel, sizeof rel, "%s", ipc_path + 1);
    snprintf(self, sizeof self, "%s-self", rel);
    snprintf(ipc_abs, sizeof ipc_abs, NEWROOT "/%s", rel);
    snprintf(self_abs, sizeof self_abs, NEWROOT "/%s", self);
    const char *base = strrchr(rel, '/');
    int under_run = base && (size_t)(base - rel) == 3 && strncmp(rel, "run", 3) == 0 && !strchr(base + 1, '/');
    if (!*rel)
        die(EXIT_CONFIG, "ipc_path may not be /");
    if (!(ipc_fd < 0 || has_dir(rootfd, rel)) || !(ipc_self_fd < 0 || has_dir(rootfd, self))) {
        if (!under_run || !has_dir(rootfd, "run")) {  /* no mount point: no IPC directory (as before) */
            if (ipc_fd >= 0)
                close(ipc_fd);
            if (ipc_self_fd >= 0)
                close(ipc_self_fd);
            return;
        }
        static const char *const run_opts[] = {"mode", "0755", "size", "16k", "nr_inodes", "16", NULL};
        int mfd = fs_mount("tmpfs", run_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
        if (mkdirat(mfd, base + 1, 0755) < 0 || mkdirat(mfd, self + 4, 0755) < 0)
            die_with_error(EXIT_INTERNAL, "cannot make the session's %s", ipc_path);
        struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY};
        if (mount_setattr(mfd, "", AT_EMPTY_PATH, &ro, sizeof ro) < 0)
            die_with_error(EXIT_INTERNAL, "cannot make the session's /run read-only");
        attach(mfd, rootfd, "run", "/run (for the IPC directory)");
    }
    if (ipc_fd >= 0) {
        attach(ipc_fd, rootfd, rel, ipc_path);
        if (mount(NULL, ipc_abs, NULL, MS_SLAVE, NULL) < 0)
            die_with_error(EXIT_INTERNAL, "cannot make %s a slave mount", ipc_path);
    }
    /* The tenant's own subdirectory, <run_dir>/ipc-tenants/NAME: no other tenant's session has it. */
    if (ipc_self_fd >= 0) {
        attach(ipc_self_fd, rootfd, self, "the tenant's IPC directory");
        if (mount(NULL, self_abs, NULL, MS_SLAVE, NULL) < 0)
            die_with_error(EXIT_INTERNAL, "cannot make %s-self a slave mount", ipc_path);
    }
}

void enter_jail_fs(int mntns_fd, int tree_fd, int tree_sock, int ipc_fd, int ipc_self_fd, const char *ipc_path,
                   unsigned long long shm_size)
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
    build_dev(rootfd, shm_size);
    if (ipc_fd >= 0 || ipc_self_fd >= 0)
        mount_ipc(rootfd, ipc_fd, ipc_self_fd, ipc_path);
    if (fchdir(rootfd) < 0 || sys_pivot_root(".", ".") < 0 || umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
        die_with_error(EXIT_INTERNAL, "cannot pivot into the jail");
    close(rootfd);
}
