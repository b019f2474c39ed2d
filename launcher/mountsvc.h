/* The mount service (docs/design.md, "A launch"): a root-owned Python process
 * that runs the same mount step, already started, asked over
 * <run_dir>/mount.sock. A cold launch asks it first and falls back to running
 * the step itself whenever the service is absent, refuses or fails. */
#ifndef JAILRUN_MOUNTSVC_H
#define JAILRUN_MOUNTSVC_H

#include "jailrun.h"

/* Ask the service to mount the jail, passing the tenant's lock (held
 * exclusively) along; the connected socket, or -1 when there is no service to
 * ask (absent, not root's, busy, refused the request): run the step then. */
int mount_service_ask(const struct launch *l, int lock);
/* Its answer: 0 when it mounted the jail, -1 when it failed or went away
 * before answering (it no longer acts: run the step). A service that takes
 * longer than MOUNT_SERVICE_TIMEOUT seconds ends the launch with 124: it may
 * still be mounting, and the step must never mount beside it. */
int mount_service_answer(int sock, const char *name);

#define MOUNT_SERVICE_SOCKET "mount.sock"
#define MOUNT_SERVICE_TIMEOUT 30

#endif
