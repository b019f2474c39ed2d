/* The seccomp filter every jailed program runs under, shared by jailrun and the
 * launch benchmark's harness (so both load the same program).
 *
 * Deny what no tenant needs and the kernel would otherwise allow an
 * unprivileged user: new namespaces (a user namespace is the way to mount
 * and to reach much more kernel surface), setns, clone3 (its flags cannot be
 * inspected; ENOSYS makes libc fall back to clone), TIOCSTI/TIOCLINUX
 * (terminal injection: into the caller's terminal, which without --pty the
 * new session has no control of, or into the session's own under --pty),
 * foreign ABIs, and FS_IOC_SETFLAGS/FS_IOC_FSSETXATTR: in the initial user namespace a
 * file's owner may change its project id or clear a directory's project-inherit flag, which
 * would take its files out of its disk quota (issue 16; chattr is refused in jails). */
#ifndef JAILYARD_SECCOMP_FILTER_H
#define JAILYARD_SECCOMP_FILTER_H

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#define JR_NS_FLAGS                                                                                          \
    (CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP | \
     CLONE_NEWTIME)

/* linux/fs.h's values, written here because that header clashes with glibc's sys/mount.h. */
#define JR_FS_IOC_SETFLAGS 0x40086602u     /* _IOW('f', 2, long) */
#define JR_FS_IOC_FSSETXATTR 0x401c5820u   /* _IOW('X', 32, struct fsxattr) */

static const struct sock_filter jr_seccomp_filter[] = {
    /* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    /* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
    /* 2 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    /* 3 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    /* 4 */ BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000 /* x32 */, 0, 1),
    /* 5 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
    /* 6 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
    /* 7 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
    /* 8 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_setns, 0, 1),
    /* 9 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
    /* 10 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 0, 7),
    /* 11 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
    /* 12 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TIOCSTI, 4, 0),
    /* 13 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TIOCLINUX, 3, 0),
    /* 14 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, JR_FS_IOC_SETFLAGS, 2, 0),
    /* 15 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, JR_FS_IOC_FSSETXATTR, 1, 0),
    /* 16 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    /* 17 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
    /* 18 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_unshare, 1, 0),
    /* 19 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 3),
    /* 20 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
    /* 21 */ BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, JR_NS_FLAGS, 0, 1),
    /* 22 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
    /* 23 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
};

#endif
