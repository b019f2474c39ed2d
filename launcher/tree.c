/* Mounted? Mount on demand, clone, hand over. */
#define _GNU_SOURCE
#include "tree.h"

#include "audit.h"
#include "files.h"
#include "mountsvc.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* statx STATX_ATTR_MOUNT_ROOT on every planned target, resolving nothing the tenant could have planted. */
int open_if_mounted(const struct jr_plan *plan)
{
    int rfd = open(plan->root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rfd < 0)
        return -1;
    for (size_t i = 0; i < plan->n_mounts; i++) {
        const char *target = plan->mounts[i].target;
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

static pid_t spawn_mount_step(const struct launch *l, int lock)
{
    pid_t pid = fork();
    if (pid < 0)
        die_with_error(EXIT_INTERNAL, "fork");
    if (pid == 0) {
        char *argv[] = {"python3", "-I", "-S", (char *)l->cfg.mount_helper, "--config", JAILRUN_CONFIG, "--lock-held",
                        (char *)l->args.name, NULL};
        char *envp[] = {HELPER_PATH, NULL};
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null < 0 || dup2(null, 0) < 0 || dup2(2, 1) < 0 || fcntl(lock, F_SETFD, 0) < 0 || setgroups(0, NULL) < 0 ||
            setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
            _exit(EXIT_MOUNT);
        umask(022);
        execve(l->cfg.python, argv, envp);
        fprintf(stderr, "jailrun: cannot run %s: %s\n", l->cfg.python, strerror(errno));
        _exit(EXIT_MOUNT);
    }
    return pid;
}

/* A request to the mount service in flight (start_mount_step returned 0), and
 * what the step needs if the launch must run it after all. */
static int service_sock = -1;
static const struct launch *service_launch;
static int service_lock = -1;

pid_t start_mount_step(const struct launch *l, int lock)
{
    service_sock = mount_service_ask(l, lock);
    if (service_sock >= 0) {
        service_launch = l;
        service_lock = lock;
        return 0;
    }
    return spawn_mount_step(l, lock);
}

static void wait_mount_step(pid_t pid, const char *name)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            die_with_error(EXIT_INTERNAL, "waitpid");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        die(EXIT_MOUNT, "the mount step for '%s' failed (%s %d)", name, WIFEXITED(st) ? "exit status" : "signal",
            WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

void finish_mount_step(pid_t pid, const char *name)
{
    if (pid == 0) {
        int sock = service_sock;
        service_sock = -1;
        if (mount_service_answer(sock, name) == 0)
            return;
        /* Failed or gone: it no longer acts, so the step runs as without a service
         * (and prints why the jail cannot be mounted, if it cannot). */
        pid = spawn_mount_step(service_launch, service_lock);
    }
    wait_mount_step(pid, name);
}

int clone_tree(int rootfd)
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

int same_session(const struct jr_plan *a, const struct jr_plan *b)
{
    return a->uid == b->uid && a->gid == b->gid && a->net == b->net && a->admin == b->admin &&
           strcmp(a->hostname, b->hostname) == 0 &&
           strcmp(a->home, b->home) == 0 && memcmp(a->limits, b->limits, sizeof a->limits) == 0;
}

union fd_cmsg {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int))];
};

int send_with_fd(int sock, int fd, const void *data, size_t len)
{
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    union fd_cmsg u;
    memset(&u, 0, sizeof u);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    ssize_t n;
    while ((n = sendmsg(sock, &msg, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    return n == (ssize_t)len ? 0 : -1;
}

int send_fd(int sock, int fd)
{
    char byte = 0;
    return send_with_fd(sock, fd, &byte, 1);
}

int receive_fd(int sock)
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
