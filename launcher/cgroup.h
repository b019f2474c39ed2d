/* Per-tenant and per-session cgroups (launcher/README.md, "cgroups").
 *
 * Per tenant <ctrl>/<cgroup_name>/<tenant> holds the plan's limits across all
 * its sessions (v1 memory, pids, cpu here; v2 where the unified hierarchy has
 * the controller). A per-session child s<pid> carries --mem/--procs and gives
 * exact peak memory and why the session was killed; it is made only when one
 * of those or --meta is asked for (v2: always, processes live in leaves). */
#ifndef JAILRUN_CGROUP_H
#define JAILRUN_CGROUP_H

#include "jailrun.h"

/* CG_IO (v1 blkio, v2 io) and CG_CPUACCT (v1 only; v2's cpu.stat has the usage) since issue 16. */
enum cg_controller { CG_MEMORY, CG_PIDS, CG_CPU, CG_IO, CG_CPUACCT, CG_COUNT };

/* Make the tenant's (and session's) cgroups, write their limits and open each
 * leaf's cgroup.procs for PID 1; with count_events, note the event counters. */
void cg_setup(const struct launch *l, int want_session, int count_events);
/* PID 1: move ourselves into every leaf. */
void cg_join(void);
/* The supervisor: PID 1 has them; close ours. */
void cg_close_leaves(void);
/* Whether a controller limits the session (in v1 or v2). */
int cg_has(enum cg_controller c);
/* How many times the controller's limit struck (oom kills, refused forks) since cg_setup. */
unsigned long long cg_events(enum cg_controller c);
/* The session's peak memory, if it has a memory cgroup of its own (else 0 and *peak untouched). */
int cg_session_peak(unsigned long long *peak);
/* Resource guarantees (issue 16): how long and how often the tenant's cgroup was throttled by
 * its cpu_rate since cg_setup (seconds, periods); 0 when there is no cpu controller. */
double cg_cpu_throttled(unsigned long long *periods);
/* Whether the tenant's project quota or volume (disk bytes or inodes) is full now; 0 without one. */
int cg_quota_hit(void);
/* Remove the session's cgroups (empty once PID 1 is gone). */
void cg_remove_session(void);

#endif
