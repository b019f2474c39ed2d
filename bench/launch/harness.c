/* The floor of jailrun's design: the same system calls, nothing else (no
 * config, plan, lock, session record, cgroup, rlimits, seccomp, checks).
 *
 *   harness JAIL_ROOT TEMPLATE_NS UID PROGRAM [ARGS...]
 *
 * open_tree(OPEN_TREE_CLONE|AT_RECURSIVE) of the jail, clone into new PID,
 * IPC, UTS and net namespaces, setns into the template mount namespace,
 * unshare a copy of it, move the tree in, mount /proc and a /dev tmpfs with
 * one node, pivot_root, detach the old root, fork, drop to UID, exec. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(x) do { if ((x) < 0) { perror(#x); _exit(125); } } while (0)

static int fsmount_simple(const char *type)
{
    int fs = fsopen(type, FSOPEN_CLOEXEC);
    CHECK(fs);
    CHECK(fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0));
    int m = fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID);
    CHECK(m);
    close(fs);
    return m;
}

int main(int argc, char **argv)
{
    if (argc < 5)
        return 120;
    int rfd = open(argv[1], O_PATH | O_DIRECTORY | O_CLOEXEC);
    CHECK(rfd);
    int tree = open_tree(rfd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH);
    CHECK(tree);
    int ns = open(argv[2], O_RDONLY | O_CLOEXEC);
    CHECK(ns);
    uid_t uid = (uid_t)atoi(argv[3]);
    pid_t pid = (pid_t)syscall(SYS_clone, SIGCHLD | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET,
                               NULL, NULL, NULL, NULL);
    CHECK(pid);
    if (pid == 0) {
        CHECK(setns(ns, CLONE_NEWNS));
        CHECK(unshare(CLONE_NEWNS));
        CHECK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL));
        CHECK(move_mount(tree, "", AT_FDCWD, "/r", MOVE_MOUNT_F_EMPTY_PATH));
        CHECK(move_mount(fsmount_simple("proc"), "", AT_FDCWD, "/r/proc", MOVE_MOUNT_F_EMPTY_PATH));
        int dev = fsmount_simple("tmpfs");
        CHECK(mknodat(dev, "null", S_IFCHR | 0666, makedev(1, 3)));
        CHECK(move_mount(dev, "", AT_FDCWD, "/r/dev", MOVE_MOUNT_F_EMPTY_PATH));
        CHECK(chdir("/r"));
        CHECK(syscall(SYS_pivot_root, ".", "."));
        CHECK(umount2(".", MNT_DETACH));
        CHECK(chdir("/"));
        pid_t c = fork();
        CHECK(c);
        if (c == 0) {
            CHECK(setsid());
            CHECK(setresgid(uid, uid, uid));
            CHECK(setresuid(uid, uid, uid));
            execv(argv[4], argv + 4);
            _exit(127);
        }
        int st;
        waitpid(c, &st, 0);
        _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}
