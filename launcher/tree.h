/* The jail's mount tree: whether it is mounted, the mount step that mounts
 * it (a Python helper, under the tenant's lock), the detached copy each
 * session gets, and handing that copy to a PID 1 made before it existed. */
#ifndef JAILRUN_TREE_H
#define JAILRUN_TREE_H

#include "jailrun.h"

#include <stddef.h>
#include <sys/types.h>

/* An O_PATH fd on the jail root when every mount of the plan is in place, else -1. */
int open_if_mounted(const struct jr_plan *plan);
/* Start the mount step: ask the mount service (mountsvc.h), returning 0, or
 * run the step (its pid). Either inherits `lock` (held exclusively), so the
 * lock lasts as long as the mount runs even if this process dies first. */
pid_t start_mount_step(const struct launch *l, int lock);
/* Wait for it (a failed service request runs the step now); 124 unless it mounted. */
void finish_mount_step(pid_t pid, const char *name);
/* A detached, recursive, nosuid+nodev copy of the tree (rootfd is consumed). */
int clone_tree(int rootfd);
/* What PID 1 took from the plan before the mount step ended is still true:
 * the step may move the jail to a newer image, never to other ids or limits. */
int same_session(const struct jr_plan *a, const struct jr_plan *b);
/* The tree over a socketpair (SCM_RIGHTS); send returns -1 if PID 1 is gone. */
int send_fd(int sock, int fd);
/* One packet of len bytes with fd attached; 0 when all of it went. */
int send_with_fd(int sock, int fd, const void *data, size_t len);
int receive_fd(int sock);

#endif
