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
#include <linux/quota.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
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
    [CG_IO] = {"blkio", -1, 0, {NULL, NULL, NULL, NULL, NULL}, {NULL, NULL, NULL, NULL, NULL}},
    [CG_CPUACCT] = {"cpuacct", -1, 0, {NULL, NULL, NULL, NULL, NULL}, {NULL, NULL, NULL, NULL, NULL}},
};
/* v2 names the block IO controller "io". */
static const char *v2_name(int c) { return c == CG_IO ? "io" : controllers[c].name; }

#define MAX_CG 6
static struct {
    struct {
        int on, v2;
        char tenant[JR_PATH_MAX], leaf[JR_PATH_MAX];
        unsigned long long before;
    } ctl[CG_COUNT];
    unsigned long long throttled_before, periods_before;  /* the tenant's cpu.stat at cg_setup */
    char tenant_dir[JR_PATH_MAX];   /* <tenants>/<name> when the plan has a disk or inode quota, else "" */
    unsigned long projid;
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
                    in_v2[c] |= strcmp(tok, v2_name(c)) == 0;
        return roots[r];
    }
    return "";
}

/* Resource guarantees (issue 16) on the tenant's cgroup, written at every launch like its limits
 * (an unset one is written back to the kernel's default, so removing it takes effect):
 * cpu_weight (v2 cpu.weight, v1 cpu.shares = weight * 1024 / 100), cpu_rate (v2 cpu.max, v1
 * cpu.cfs_quota_us over a 100 ms period), memsw (v1 memory.memsw.limit_in_bytes, v2
 * memory.swap.max = memsw - mem) and io_weight (BFQ's weight where the knob exists). A knob the
 * kernel does not offer (no swap accounting, no BFQ) is skipped. */
static int knob_exists(const char *dir, const char *knob)
{
    char path[JR_PATH_MAX];
    join(path, sizeof path, dir, knob);
    return access(path, F_OK) == 0;
}

static void write_resources(const struct launch *l, int c, const char *dir, int v2)
{
    const unsigned long long *res = l->plan.res;
    char value[64];
    switch (c) {
    case CG_CPU: {
        unsigned long long w = res[RES_CPU_WEIGHT], quota = res[RES_CPU_RATE] * 100; /* us per 100000 us */
        const char *share = v2 ? "cpu.weight" : "cpu.shares", *cap = v2 ? "cpu.max" : "cpu.cfs_quota_us";
        if (v2)
            snprintf(value, sizeof value, "%llu", w ? w : 100);
        else
            snprintf(value, sizeof value, "%llu", w ? (w * 1024 / 100 < 2 ? 2 : w * 1024 / 100) : 1024);
        if (knob_exists(dir, share))
            cg_write(dir, share, value);
        else if (w)
            die(EXIT_INTERNAL, "the tenant asks for cpu_weight but %s has no %s", dir, share);
        /* Without CFS bandwidth control (CONFIG_CFS_BANDWIDTH) there is no cap to write or reset. */
        if (!knob_exists(dir, cap)) {
            if (quota)
                die(EXIT_INTERNAL, "the tenant asks for cpu_rate but this kernel has no CPU bandwidth control (%s)", cap);
            break;
        }
        if (quota < 1000 && quota)
            quota = 1000;   /* the kernel's smallest quota is 1 ms */
        if (v2) {
            if (quota)
                snprintf(value, sizeof value, "%llu 100000", quota);
            else
                snprintf(value, sizeof value, "max 100000");
            cg_write(dir, "cpu.max", value);
        } else {
            cg_write(dir, "cpu.cfs_period_us", "100000");
            if (quota)
                snprintf(value, sizeof value, "%llu", quota);
            else
                snprintf(value, sizeof value, "-1");
            cg_write(dir, "cpu.cfs_quota_us", value);
        }
        break;
    }
    case CG_MEMORY: {
        unsigned long long memsw = res[RES_MEMSW], mem = l->plan.limits[LIM_MEM];
        const char *knob = v2 ? "memory.swap.max" : "memory.memsw.limit_in_bytes";
        if (!knob_exists(dir, knob)) {
            if (memsw)
                die(EXIT_INTERNAL, "the tenant asks for memsw but this kernel accounts no swap (%s)", knob);
            break;
        }
        if (!memsw)
            snprintf(value, sizeof value, "%s", v2 ? "max" : "-1");
        else
            snprintf(value, sizeof value, "%llu", v2 ? (memsw > mem && mem ? memsw - mem : 0) : memsw);
        cg_write(dir, knob, value);
        break;
    }
    case CG_IO: {
        unsigned long long w = res[RES_IO_WEIGHT];
        const char *knob = v2 ? "io.bfq.weight" : "blkio.bfq.weight";
        if (v2 && knob_exists(dir, "io.weight"))
            knob = "io.weight";
        if (!knob_exists(dir, knob))
            break;
        if (strcmp(knob, "io.weight") == 0)
            snprintf(value, sizeof value, "default %llu", w ? w : 100);
        else    /* BFQ: 1-1000, default 100 */
            snprintf(value, sizeof value, "%llu", w ? (w > 1000 ? 1000 : w) : 100);
        cg_write(dir, knob, value);
        break;
    }
    default:
        break;
    }
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
    if (c != CG_MEMORY)
        write_resources(l, (int)c, tenant, 0);
    else if (knob_exists(tenant, "memory.memsw.limit_in_bytes"))
        cg_write(tenant, "memory.memsw.limit_in_bytes", "-1");   /* v1: memory <= memsw at every step */
    if (ctl->limit >= 0) {
        write_limit(&ctl->v1, tenant, l->plan.limits[ctl->limit]);
        if (c == CG_MEMORY)
            write_resources(l, (int)c, tenant, 0);  /* memsw may not be below the memory limit: after it */
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
            strcat(enable, v2_name(c));
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
    for (int c = 0; c < CG_COUNT; c++)
        if (in_v2[c])
            write_resources(l, c, tenant, 1);
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
    if (l->plan.res[RES_DISK] || l->plan.res[RES_INODES]) {
        join(cg.tenant_dir, sizeof cg.tenant_dir, l->cfg.tenants_dir, l->args.name);
        cg.projid = l->plan.uid;    /* a tenant's project id is its uid (module_utils/jailyard/quota.py) */
    }
    for (int c = 0; c < CG_COUNT; c++)
        if (!in_v2[c])
            setup_v1(l, (enum cg_controller)c, want_session, sname);
    for (int c = 0; c < CG_COUNT; c++)
        if (in_v2[c]) {
            setup_v2(l, root, in_v2, sname);
            break;
        }
    /* Without a session cgroup the counters are the tenant's: count the difference. */
    if (count_events) {
        for (int c = 0; c < CG_COUNT; c++)
            cg.ctl[c].before = read_events((enum cg_controller)c);
        cg.throttled_before = 0;
        cg.throttled_before = (unsigned long long)(cg_cpu_throttled(&cg.periods_before) * 1e9);
    }
}

#ifndef SYS_quotactl_fd
#define SYS_quotactl_fd 443
#endif

/* A volume-backed tenant (module_utils/jailyard/volume.py): its own ext4 mounted at <tenant>/vol is
 * full when less than 1 MiB is free (ext4 refuses a write while a few blocks still show free; usage.py's
 * VOLUME_FULL) or no inode is. */
static int volume_full(int tenant_fd)
{
    struct statfs vol, tenant;
    int fd = openat(tenant_fd, "vol", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return 0;
    int ok = fstatfs(fd, &vol) == 0 && fstatfs(tenant_fd, &tenant) == 0;
    close(fd);
    if (!ok || !memcmp(&vol.f_fsid, &tenant.f_fsid, sizeof vol.f_fsid))
        return 0;  /* not mounted: no volume to be full */
    return (unsigned long long)vol.f_bavail * (unsigned long long)vol.f_bsize < (1ULL << 20) ||
           (vol.f_files && vol.f_ffree == 0);
}

int cg_quota_hit(void)
{
    struct if_dqblk dq;
    if (!cg.tenant_dir[0])
        return 0;
    int fd = open(cg.tenant_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    memset(&dq, 0, sizeof dq);
    long r = syscall(SYS_quotactl_fd, fd, QCMD(Q_GETQUOTA, PRJQUOTA), (unsigned)cg.projid, &dq);
    if (r < 0) {
        r = volume_full(fd);
        close(fd);
        return (int)r;
    }
    close(fd);
    /* Within a block (4 KiB) of the byte limit counts as full: the last write that failed was smaller. */
    return (dq.dqb_bhardlimit && dq.dqb_curspace + 4096 >= dq.dqb_bhardlimit * 1024) ||
           (dq.dqb_ihardlimit && dq.dqb_curinodes >= dq.dqb_ihardlimit);
}

double cg_cpu_throttled(unsigned long long *periods)
{
    char path[JR_PATH_MAX];
    *periods = 0;
    if (!cg.ctl[CG_CPU].on)
        return 0;
    /* The tenant's: the rate cap is on it (a session cgroup's own counters miss its siblings' share). */
    join(path, sizeof path, cg.ctl[CG_CPU].tenant, "cpu.stat");
    unsigned long long n = read_key(path, "nr_throttled");
    unsigned long long ns = cg.ctl[CG_CPU].v2 ? read_key(path, "throttled_usec") * 1000 : read_key(path, "throttled_time");
    *periods = n > cg.periods_before ? n - cg.periods_before : 0;
    return ns > cg.throttled_before ? (double)(ns - cg.throttled_before) / 1e9 : 0;
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
