/* <run_dir> records (docs/contracts.md, "Locks", "Sessions and last use"):
 * the tenant's lock, the session record, the last-use stamp. */
#ifndef JAILRUN_RECORDS_H
#define JAILRUN_RECORDS_H

#include "parse.h"

/* Our own start time (field 22 of /proc/self/stat), read at the very start:
 * the same read after the jail's tree is cloned costs 10x as much. */
void records_start(void);
/* Open <run_dir> (made root 0755 if missing); its O_PATH fd. */
int records_open(const struct jr_config *cfg);
/* <run_dir>/locks/<lockname>, opened and flock()ed with op. */
int lock_file(const char *lockname, int op);
/* <run_dir>/sessions/<name>/<pid>: "<pid> <starttime>", then the lines
 * "caller <uid>", "pty <0|1>", "program <escaped path>" (docs/contracts.md). */
void write_session(const char *name, const char *program, int pty);
void remove_session(void);
/* <run_dir>/lastuse/<name>'s mtime to now. */
void touch_lastuse(const char *name);

#endif
