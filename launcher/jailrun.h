/* What every part of jailrun shares: exit codes, fixed paths, and the launch
 * being made (config, plan, arguments, effective limits), which main owns. */
#ifndef JAILRUN_H
#define JAILRUN_H

#include "parse.h"

#include <stddef.h>

#ifndef JAILRUN_CONFIG
#define JAILRUN_CONFIG "/etc/jailyard/jailyard.conf"
#endif
#ifndef JAILRUN_AUDIT_LOG
#define JAILRUN_AUDIT_LOG "/var/log/jailyard/launch.log"
#endif

enum {
    EXIT_USAGE = 120,
    EXIT_CALLER = 121,
    EXIT_CONFIG = 122,
    EXIT_TENANT = 123,
    EXIT_MOUNT = 124,
    EXIT_INTERNAL = 125,
    EXIT_NOEXEC = 126,
    EXIT_NOTFOUND = 127,
};

#define JAIL_PATH "/usr/local/bin:/usr/bin:/bin"
#define JAIL_ADMIN_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define HELPER_PATH "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
#define NEWROOT "/r"    /* mount point for the jail inside the template namespace */
#define DEVTMPL "/dev"  /* the prepared read-only /dev inside the template namespace */

struct launch {
    struct jr_config cfg;
    struct jr_plan plan;
    struct jr_args args;
    unsigned long long lim[LIM_COUNT];  /* effective limits; 0 = unlimited */
    int new_net;                        /* the session gets a network namespace of its own */
    int pty;                            /* --pty: the program gets a terminal of the session's own (pty.c) */
    int userns_fd;                      /* admin tenants: the session's user namespace (userns.c), else -1 */
    char *cmdline;                      /* our argv strings, which /proc/<pid>/cmdline shows */
    size_t cmdline_len;
    /* Issue 15: `jailrun NAME` with no PROGRAM runs the plan's default program (args.argv points at
     * prog_argv) with its environment (prog_env, set before --env); a copy, so reloading the plan
     * after a cold mount step changes nothing under the session. */
    char prog_buf[JR_PROG_BUF];
    char *prog_argv[JR_MAX_PROG_ARGS + 1];
    char *prog_env[JR_MAX_ENV];
    size_t n_prog_env;
    int ipc_self_fd;    /* issue 15: <run_dir>/ipc-tenants/NAME, cloned read-only for /run/ipc-self, or -1 */
};

#endif
