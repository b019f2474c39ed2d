/* Tenant root: the user namespace of an admin tenant's session and becoming its root (or --user). */
#ifndef JAILRUN_USERNS_H
#define JAILRUN_USERNS_H

#include "jailrun.h"

/* Supervisor, host root: a new user namespace mapping ids 0..65535 to the tenant's range
 * (plan->admin..), except the tenant's own uid and gid, which map to themselves; returns a
 * descriptor of it. Its own child creates it; nothing of the tenant runs in it yet. */
int userns_open(const struct jr_plan *plan);

/* Who the program runs as inside an admin jail. */
struct jail_user {
    unsigned long uid, gid;
    char name[JR_NAME_MAX + 1];
    char home[JR_PATH_MAX];
};

/* The program's process, after pivot_root and rlimits, instead of the plain tenant's drop of
 * privileges: enter the namespace, become its root, resolve --user in the jail's own
 * /etc/passwd (as tenant root, never with host privileges), then either keep tenant root's
 * capability set (root) or drop every capability (any other user). */
void userns_become(const struct launch *l, struct jail_user *who);

/* The admin tenant's extra seccomp filter, on top of the common one: the system calls container
 * runtimes refuse by default (keyctl, bpf, perf_event_open, userfaultfd, kexec, module loading,
 * clock setting, raw I/O, mounting, open_by_handle_at, io_uring...). */
void userns_seccomp(void);

#endif
