/* The template mount namespace: one read-only tmpfs holding the empty
 * directory NEWROOT and the /dev template, pinned by an nsfs bind mount on
 * <run_dir>/TEMPLATE_PIN. Each session unshares a copy of it (one mount)
 * instead of the host's table (launcher/README.md). */
#ifndef JAILRUN_TEMPLATE_H
#define JAILRUN_TEMPLATE_H

#include "parse.h"

/* The pinned template namespace (made under <run_dir>/locks/.mntns.lock if
 * missing or of an older version); an fd for setns(). */
int open_template_ns(const struct jr_config *cfg, int run_fd);

#endif
