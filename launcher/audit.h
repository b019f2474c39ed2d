/* What jailrun says when it stops or launches: one line on stderr for the
 * caller, one line in the audit log (and syslog) for the operator, every
 * value from outside escaped. */
#ifndef JAILRUN_AUDIT_H
#define JAILRUN_AUDIT_H

#include <stddef.h>
#include <sys/types.h>

/* `in` with backslash, control characters and bytes outside printable ASCII as C escapes. */
const char *escape(char *out, size_t outlen, const char *in);

/* Open JAILRUN_AUDIT_LOG for appending; NULL, or why it may not be used. */
const char *audit_open(void);
/* Who and what the next lines are about (kept by pointer; escaped when written). */
void audit_subject(uid_t caller, const char *tenant, const char *program);
/* "<UTC time> jailrun[<pid>]: <first word> caller= tenant= program= <rest>" to the log and syslog. */
void audit(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* In the jail's processes: a failure writes its exit code to fd (the supervisor
 * logs it) instead of logging; -1 when that is over. */
void report_to_supervisor(int fd);
/* Run by a refusal in the supervisor before it exits (kill PID 1, remove records). */
void report_at_exit(void (*cleanup)(void));

/* One line on stderr, a `refused` line in the audit log, exit with code. */
void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
void die_with_error(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));

#endif
