/* The trusted inputs: the node config (its path fixed at build time) and the
 * tenant's plan, both root's; and what the caller asks of them. */
#ifndef JAILRUN_CONFIG_H
#define JAILRUN_CONFIG_H

#include "jailrun.h"

#include <sys/types.h>

/* JAILRUN_CONFIG into cfg, if it and its directory are root's and nobody else may write them. */
void load_config(struct jr_config *cfg);
/* Refuse a caller the config does not list (121). */
void check_caller(const struct jr_config *cfg, uid_t caller);
/* <tenants_dir>/<name>/plan into plan; it must name the tenant, its root and ids in range. */
void load_plan(const struct jr_config *cfg, const char *name, struct jr_plan *plan);
/* The session's limits and network: the plan's, only ever lowered by the options. */
void resolve_limits(struct launch *l);
/* Take --pty (or a unique prefix of it) out of the options before NAME, where
 * jr_parse_args would refuse it; *pty says whether it was there. Returns the
 * new argc (argv is shifted in place, its strings untouched). */
int take_pty_option(int argc, char **argv, int *pty);

#endif
