/* Inside: PID 1 of the jail and the program it starts. */
#ifndef JAILRUN_JAIL_H
#define JAILRUN_JAIL_H

#include "jailrun.h"

#include <signal.h>

/* The signals the supervisor and PID 1 pass on to the program. */
void add_forwarded_signals(sigset_t *set);

/* The descriptors PID 1 is born with. tree_fd is -1 when PID 1 is created
 * while the mount step runs: it then prepares everything that needs no tree
 * and waits for it on tree_sock. status_fd: where a setup failure's exit code
 * goes; result_fd: where the program's wait status goes. */
struct jail_fds {
    int mntns, tree, tree_sock, ipc, status, result;
    int netns;  /* issue 17: a private plan's network namespace, or -1 (cold: it follows the tree on tree_sock) */
};

/* PID 1: set up, start the program, forward signals, reap, report the
 * program's wait status. Exiting ends the session. */
/* A private plan's network namespace, <run_dir>/netns/NAME (issue 17): an fd, or -1 if it is not
 * there (not set up yet: the mount step makes it); anything there but a network namespace is refused. */
int open_tenant_netns(const struct launch *l);

void jail_init(const struct launch *l, struct jail_fds fds) __attribute__((noreturn));

#endif
