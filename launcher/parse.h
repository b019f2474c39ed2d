/* jailrun's parsers: the node config, a tenant's plan, the command line.
 *
 * Pure functions (no I/O, no privileges) so the C tests and the fuzz target
 * can drive them directly. Each returns 0, or -1 with one sentence in err.
 * Formats: docs/contracts.md.
 */
#ifndef JAILRUN_PARSE_H
#define JAILRUN_PARSE_H

#include <stddef.h>
#include <sys/types.h>

#define JR_PATH_MAX 1024    /* longer configured or planned paths are refused */
#define JR_NAME_MAX 32      /* ^[a-z_][a-z0-9_-]{0,31}$, the modules' pattern */
#define JR_HOST_MAX 63      /* a DNS label */
#define JR_MAX_CALLERS 64
#define JR_MAX_MOUNTS 64
#define JR_MAX_ENV 128
#define JR_MAX_FILE 65536   /* config and plan files above this size are refused */
#define JR_ERR_MAX 512
#define JR_WORD_MAX 255    /* KEY_WORD config values (issue 17) */
#define JR_MAX_PROG_ARGS 64 /* issue 15: words of a plan's default program */
#define JR_PROG_BUF 16384   /* issue 15: its words and environment, decoded, NULs included */

/* Limits, in the plan's order. 0 = unlimited. */
enum { LIM_CPU, LIM_MEM, LIM_PROCS, LIM_FSIZE, LIM_NOFILE, LIM_WALL, LIM_COUNT };
extern const char *const jr_limit_names[LIM_COUNT];
/* Resource guarantees (issue 16): optional plan lines `limit KEY N` after the six above, before
 * the mounts, in any order, each at most once; 0 or absent = not set. cpu_rate in milli-CPUs. */
enum { RES_DISK, RES_INODES, RES_CPU_WEIGHT, RES_CPU_RATE, RES_IO_WEIGHT, RES_MEMSW, RES_COUNT };
extern const char *const jr_resource_names[RES_COUNT];

struct jr_config {
    char images_dir[JR_PATH_MAX];
    char tenants_dir[JR_PATH_MAX];
    char jails_dir[JR_PATH_MAX];
    char run_dir[JR_PATH_MAX];
    char mount_helper[JR_PATH_MAX];
    char python[JR_PATH_MAX];
    char lib_dir[JR_PATH_MAX];
    uid_t allowed_callers[JR_MAX_CALLERS];
    size_t n_allowed_callers;
    unsigned long uid_min, uid_max;
    char cgroup_name[JR_NAME_MAX + 1];
    unsigned long long defaults[LIM_COUNT];
    /* issue 17: tenant networks (jailrun only accepts them; module_utils/jailyard/network.py reads them) */
    char net_bridge[JR_WORD_MAX + 1], net_pool4[JR_WORD_MAX + 1], net_pool6[JR_WORD_MAX + 1];
    char net_dns[JR_WORD_MAX + 1], net_egress[JR_WORD_MAX + 1];
    unsigned long net_host;
    /* Per-tenant disk limits: auto, quota or volume (module_utils/jailyard/volume.py; jailrun only accepts it) */
    char disk_backend[JR_WORD_MAX + 1];
    char ipc_path[JR_PATH_MAX];  /* issue 15: where <run_dir>/ipc is in every jail */
};

struct jr_mount {
    char target[JR_PATH_MAX];   /* absolute, inside the jail root */
    char type[16];              /* bind | overlay */
    unsigned flags;             /* JR_MNT_* from the options field */
};
#define JR_MNT_RO 1u
#define JR_MNT_NOSUID 2u
#define JR_MNT_NODEV 4u
#define JR_MNT_NOEXEC 8u

struct jr_plan {
    char name[JR_NAME_MAX + 1];
    unsigned long uid, gid;
    char hostname[JR_HOST_MAX + 1];
    char home[JR_PATH_MAX];
    char root[JR_PATH_MAX];
    char image[65];
    int net;    /* JR_NET_*: the plan's "net" line */
    unsigned long long limits[LIM_COUNT];
    unsigned long long res[RES_COUNT];   /* resource guarantees; 0 = not set */
    size_t n_mounts;
    struct jr_mount mounts[JR_MAX_MOUNTS];
    /* Tenant root (optional "admin BASE" line between the limits and the mounts): the first host id
     * of the tenant's JR_ADMIN_COUNT ids, which uid/gid 0.. of its user namespace map to; 0 = plain. */
    unsigned long admin;
    /* A volume-backed tenant (optional "volume IMAGE MOUNTPOINT" line after admin, before the mounts):
     * 1 if the plan has one. Only the mount step acts on it. */
    int volume;
    /* The default program (issue 15, optional "exec ARG" and "env NAME=VALUE" lines after the limits and
     * the admin line, before the mounts, values percent-encoded): what `jailrun NAME` with no PROGRAM
     * runs, and the environment it runs with: offsets of NUL-terminated strings in prog_buf (so a copy
     * of the plan stays whole); n_prog 0 = no default program. */
    size_t n_prog, n_prog_env, prog_used;
    size_t prog[JR_MAX_PROG_ARGS];
    size_t prog_env[JR_MAX_ENV];
    char prog_buf[JR_PROG_BUF];
};
#define JR_ADMIN_COUNT 65536UL
#define JR_ADMIN_ID_MAX 4294967294UL  /* (uid_t)-1 is no id */

/* The plan's network modes (issue 17). */
enum { JR_NET_NONE = 0, JR_NET_HOST = 1, JR_NET_PRIVATE = 2 };

#define JR_UNSET (~0ULL)    /* an option that was not given */

struct jr_args {
    const char *cwd;
    const char *env[JR_MAX_ENV];    /* K=V, in order; later ones win */
    size_t n_env;
    unsigned long long limits[LIM_COUNT];   /* JR_UNSET or the asked value; LIM_WALL is --timeout */
    const char *meta;
    int net;
    const char *user;   /* --user NAME|UID (admin tenants), NULL if not given */
    int help;
    const char *name;
    char **argv;    /* PROGRAM ARGS..., NULL-terminated (points into the caller's argv); NULL: none given,
                     * run the plan's default program (issue 15) */
};

void jr_config_defaults(struct jr_config *cfg);
int jr_parse_config(const char *text, size_t len, struct jr_config *cfg, char *err, size_t errlen);
/* The config as the text Config.render() writes (every key, in table order);
 * returns the length it needed, writing at most len bytes (NUL included). */
size_t jr_config_render(const struct jr_config *cfg, char *buf, size_t len);
int jr_parse_plan(const char *text, size_t len, struct jr_plan *plan, char *err, size_t errlen);
int jr_parse_args(int argc, char **argv, struct jr_args *args, char *err, size_t errlen);

int jr_valid_name(const char *name);
int jr_valid_hostname(const char *name);
int jr_valid_env(const char *kv);
/* Decimal digits only (no sign, no space), value <= max; with units, one of
 * K M G T (powers of 1024) may follow. */
int jr_parse_number(const char *s, unsigned long long max, int units, unsigned long long *out);

/* The limit the session runs with: the plan's, lowered by the option; 0 = unlimited.
 * Returns -1 if the option asks for more than the plan allows. */
int jr_effective_limit(unsigned long long plan, unsigned long long asked, unsigned long long *out);

#endif
