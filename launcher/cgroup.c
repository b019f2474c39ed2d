/* cgroup v1 (one hierarchy per controller) and v2 (one tree), driven by one
 * table of controllers. */
#define _GNU_SOURCE
#include "cgroup.h"

#include "audit.h"
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

struct knobs {
    const char *max, *unlimited;    /* the limit and how "no limit" is written */
    const char *peak;               /* peak usage */
    const char *events, *event;     /* the counter that rises when the limit strikes */
};

static const struct controller {
    const char *name;
    int limit;          /* the LIM_* slot it enforces per tenant and per session; -1: accounting only */
    int tenant_events;  /* add the tenant's counter: v2 since Linux 6.13 counts in the cgroup whose limit struck
                           (and its ancestors), v1 and older v2 in the cgroup of the process that forked */
    struct knobs v1, v2;
} controllers[CG_COUNT] = {
    [CG_MEMORY] = {"memory", LIM_MEM, 0,
                   {"memory.limit_in_bytes", "-1", "memory.max_usage_in_bytes", "memory.oom_control", "oom_kill"},
                   {"memory.max", "max", "memory.peak", "memory.events", "oom_kill"}},
    [CG_PIDS] = {"pids", LIM_PROCS, 1, {"pids.max", "max", NULL, "pids.events", "max"},
                 {"pids.max", "max", NULL, "pids.events", "max"}},
    [CG_CPU] = {"cpu", -1, 0, {NULL, NULL, NULL, NULL, NULL}, {NULL, NULL, NULL, NULL, NULL}},
};

#define MAX_CG 4
static struct {
    struct {
        int on, v2;
        char tenant[JR_PATH_MAX], leaf[JR_PATH_MAX];
        unsigned long long before;
    } ctl[CG_COUNT];
    int procs_fd[MAX_CG];   /* cgroup.procs of each leaf; PID 1 writes "0" into each */
    size_t n_procs;
    char session_dirs[MAX_CG][JR_PATH_MAX];
    size_t n_session;
} cg;

static void cg_write(const char *dir, const char *knob, const char *value)
{
    char path[JR_PATH_MAX];
    join(path, sizeof path, dir, knob);
    if (write_file(path, value) < 0)
        die_with_error(EXIT_INTERNAL, "cannot write %s to %s", value, path);
}

static void cg_mkdir(const char *path)
{
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        die_with_error(EXIT_INTERNAL, "cannot create cgroup %s", path);
}

/* Write a limit (0 = unlimited) into dir's knob for controller c. */
static void write_limit(const struct knobs *k, const char *dir, unsigned long long v)
{
    char value[32];
    if (v)
        snprintf(value, sizeof value, "%llu", v);
    else
        snprintf(value, sizeof value, "%s", k->unlimited);
    cg_write(dir, k->max, value);
}

static void add_leaf(const char *dir)
{
    char path[JR_PATH_MAX];
    join(path, sizeof path, dir, "cgroup.procs");
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        die_with_error(EXIT_INTERNAL, "cannot open %s", path);
    cg.procs_fd[cg.n_procs++] = fd;
}

static void add_session(const char *dir)
{
    cg_mkdir(dir);
    snprintf(cg.session_dirs[cg.n_session++], JR_PATH_MAX, "%s", dir);
}

/* Where the unified hierarchy is mounted, and which controllers it offers
 * (one read of its cgroup.controllers); "" if there is none. */
static const char *v2_root(int in_v2[CG_COUNT])
{
    static const char *const roots[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
    char path[JR_PATH_MAX], buf[512];
    for (size_t r = 0; r < sizeof roots / sizeof roots[0]; r++) {
        join(path, sizeof path, roots[r], "cgroup.controllers");
        if (access(path, F_OK) != 0)
            continue;
        if (read_small(path, buf, sizeof buf) >= 0)
            for (char *tok = buf, *save = NULL; (tok = strtok_r(tok, " \n", &save)); tok = NULL)
                for (int c = 0; c < CG_COUNT; c++)
                    in_v2[c] |= strcmp(tok, controllers[c].name) == 0;
        return roots[r];
    }
    return "";
}

/* cgroup v1: one hierarchy per controller, /sys/fs/cgroup/<ctrl>; a controller
 * not mounted there leaves the session to its rlimits. */
static void setup_v1(const struct launch *l, enum cg_controller c, int want_session, const char *sname)
{
    const struct controller *ctl = &controllers[c];
    char base[64], group[JR_PATH_MAX], tenant[JR_PATH_MAX], session[JR_PATH_MAX];
    snprintf(base, sizeof base, "/sys/fs/cgroup/%s", ctl->name);
    join(group, sizeof group, base, "cgroup.procs");
    if (access(group, F_OK) != 0)
        return;
    join(group, sizeof group, base, l->cfg.cgroup_name);
    join(tenant, sizeof tenant, group, l->args.name);
    if (access(tenant, F_OK) != 0) {    /* made by an earlier launch, as a rule */
        cg_mkdir(group);
        cg_mkdir(tenant);
    }
    const char *leaf = tenant;
    if (ctl->limit >= 0) {
        write_limit(&ctl->v1, tenant, l->plan.limits[ctl->limit]);
        if (want_session) {
            join(session, sizeof session, tenant, sname);
            add_session(session);
            if (l->args.limits[ctl->limit] != JR_UNSET)
                write_limit(&ctl->v1, session, l->lim[ctl->limit]);
            leaf = session;
        }
    }
    cg.ctl[c].on = 1;
    snprintf(cg.ctl[c].tenant, JR_PATH_MAX, "%s", tenant);
    snprintf(cg.ctl[c].leaf, JR_PATH_MAX, "%s", leaf);
    add_leaf(leaf);
}

/* cgroup v2: one tree; processes live only in leaves, so every session gets one. */
static void setup_v2(const struct launch *l, const char *root, const int in_v2[CG_COUNT], const char *sname)
{
    char enable[64] = "", group[JR_PATH_MAX], tenant[JR_PATH_MAX], session[JR_PATH_MAX];
    for (int c = 0; c < CG_COUNT; c++)
        if (in_v2[c]) {
            strcat(enable, enable[0] ? " +" : "+");
            strcat(enable, controllers[c].name);
        }
    join(group, sizeof group, root, l->cfg.cgroup_name);
    join(tenant, sizeof tenant, group, l->args.name);
    join(session, sizeof session, tenant, sname);
    cg_write(root, "cgroup.subtree_control", enable);
    cg_mkdir(group);
    cg_write(group, "cgroup.subtree_control", enable);
    cg_mkdir(tenant);
    cg_write(tenant, "cgroup.subtree_control", enable);
    for (int c = 0; c < CG_COUNT; c++)
        if (in_v2[c] && controllers[c].limit >= 0)
            write_limit(&controllers[c].v2, tenant, l->plan.limits[controllers[c].limit]);
    add_session(session);
    for (int c = 0; c < CG_COUNT; c++) {
        if (!in_v2[c])
            continue;
        int slot = controllers[c].limit;
        if (slot >= 0 && l->args.limits[slot] != JR_UNSET)
            write_limit(&controllers[c].v2, session, l->lim[slot]);
        cg.ctl[c].on = cg.ctl[c].v2 = 1;
        snprintf(cg.ctl[c].tenant, JR_PATH_MAX, "%s", tenant);
        snprintf(cg.ctl[c].leaf, JR_PATH_MAX, "%s", session);
    }
    add_leaf(session);
}

/* The counter's value now: the leaf's, plus the tenant's where that counts too. */
static unsigned long long read_events(enum cg_controller c)
{
    const struct knobs *k = cg.ctl[c].v2 ? &controllers[c].v2 : &controllers[c].v1;
    char path[JR_PATH_MAX];
    if (!cg.ctl[c].on || !k->events)
        return 0;
    join(path, sizeof path, cg.ctl[c].leaf, k->events);
    unsigned long long n = read_key(path, k->event);
    if (controllers[c].tenant_events && strcmp(cg.ctl[c].leaf, cg.ctl[c].tenant) != 0) {
        join(path, sizeof path, cg.ctl[c].tenant, k->events);
        n += read_key(path, k->event);
    }
    return n;
}

void cg_setup(const struct launch *l, int want_session, int count_events)
{
    char sname[32];
    int in_v2[CG_COUNT] = {0};
    snprintf(sname, sizeof sname, "s%d", (int)getpid());
    const char *root = v2_root(in_v2);
    for (int c = 0; c < CG_COUNT; c++)
        if (!in_v2[c])
            setup_v1(l, (enum cg_controller)c, want_session, sname);
    for (int c = 0; c < CG_COUNT; c++)
        if (in_v2[c]) {
            setup_v2(l, root, in_v2, sname);
            break;
        }
    /* Without a session cgroup the counters are the tenant's: count the difference. */
    if (count_events)
        for (int c = 0; c < CG_COUNT; c++)
            cg.ctl[c].before = read_events((enum cg_controller)c);
}

void cg_join(void)
{
    for (size_t i = 0; i < cg.n_procs; i++) {
        if (write(cg.procs_fd[i], "0", 1) != 1)
            die_with_error(EXIT_INTERNAL, "cannot join the tenant's cgroup");
        close(cg.procs_fd[i]);
    }
}

void cg_close_leaves(void)
{
    for (size_t i = 0; i < cg.n_procs; i++)
        close(cg.procs_fd[i]);
    cg.n_procs = 0;
}

int cg_has(enum cg_controller c) { return cg.ctl[c].on; }

unsigned long long cg_events(enum cg_controller c)
{
    unsigned long long now = read_events(c);
    return now > cg.ctl[c].before ? now - cg.ctl[c].before : 0;
}

int cg_session_peak(unsigned long long *peak)
{
    const struct knobs *k = cg.ctl[CG_MEMORY].v2 ? &controllers[CG_MEMORY].v2 : &controllers[CG_MEMORY].v1;
    char path[JR_PATH_MAX];
    if (!cg.ctl[CG_MEMORY].on || strcmp(cg.ctl[CG_MEMORY].leaf, cg.ctl[CG_MEMORY].tenant) == 0)
        return 0;
    join(path, sizeof path, cg.ctl[CG_MEMORY].leaf, k->peak);
    *peak = read_key(path, "");
    return 1;
}

void cg_remove_session(void)
{
    for (size_t i = cg.n_session; i-- > 0;)
        if (rmdir(cg.session_dirs[i]) < 0 && errno != ENOENT)
            audit(LOG_WARNING, "warning: cannot remove cgroup %s: %s", cg.session_dirs[i], strerror(errno));
    cg.n_session = 0;
}
