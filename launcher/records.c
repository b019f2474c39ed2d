/* The records jailrun keeps in <run_dir>: locks, sessions, last use. */
#define _GNU_SOURCE
#include "records.h"

#include "audit.h"
#include "files.h"
#include "jailrun.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct jr_config *cfg;
static int run_fd = -1;
static char session_start[32];
static char session_name[32];
static int session_dir_fd = -1;
static int session_written;

void records_start(void)
{
    char buf[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read_all(fd, buf, sizeof buf - 1);
    if (fd >= 0)
        close(fd);
    if (n <= 0)
        die_with_error(EXIT_INTERNAL, "cannot read /proc/self/stat");
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    for (int field = 2; p && field < 22; field++)
        p = strchr(p + 1, ' ');
    if (!p || snprintf(session_start, sizeof session_start, "%.*s", (int)strcspn(p + 1, " "), p + 1) <= 0)
        die(EXIT_INTERNAL, "cannot parse /proc/self/stat");
}

int records_open(const struct jr_config *config)
{
    cfg = config;
    run_fd = open(cfg->run_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (run_fd < 0) {
        if (mkdir(cfg->run_dir, 0755) < 0 && errno != EEXIST)
            die_with_error(EXIT_INTERNAL, "cannot create run_dir %s", cfg->run_dir);
        run_fd = open(cfg->run_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (run_fd < 0)
            die_with_error(EXIT_INTERNAL, "cannot open run_dir %s", cfg->run_dir);
    }
    return run_fd;
}

static int open_run_subdir(const char *name)
{
    int fd = ensure_dir(run_fd, name);
    if (fd < 0)
        die_with_error(EXIT_INTERNAL, "cannot create %s/%s", cfg->run_dir, name);
    return fd;
}

/* A purge unlinks a tenant's lock file while holding it (docs/contracts.md,
 * "Locks"): a launch that opened the file before and waited in flock would
 * then hold a lock on a file nobody else can find, so after flock the locked
 * inode must still have a link (lock files are only created at their name and
 * unlinked, never renamed or linked: a link means the name points at it), else
 * the lock is taken again on the file now there (as jailyard.lock.tenant_lock). */
int lock_file(const char *lockname, int op)
{
    int locks = open_run_subdir("locks");
    for (;;) {
        int fd = openat(locks, lockname, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
            die_with_error(EXIT_INTERNAL, "cannot open lock %s/locks/%s", cfg->run_dir, lockname);
        while (flock(fd, op) < 0)
            if (errno != EINTR)
                die_with_error(EXIT_INTERNAL, "cannot lock %s", lockname);
        struct stat held;
        if (fstat(fd, &held) == 0 && held.st_nlink > 0) {
            close(locks);
            return fd;
        }
        close(fd);
    }
}

void touch_lastuse(const char *name)
{
    char rel[JR_NAME_MAX + 16];
    snprintf(rel, sizeof rel, "lastuse/%s", name);
    if (utimensat(run_fd, rel, NULL, AT_SYMLINK_NOFOLLOW) == 0)
        return;     /* the common case: one call (a symlink planted there gets its own time set, nothing else) */
    int dir = open_run_subdir("lastuse");
    int fd = openat(dir, name, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0644);
    if (fd < 0 || futimens(fd, NULL) < 0)
        die_with_error(EXIT_INTERNAL, "cannot update %s/lastuse/%s", cfg->run_dir, name);
    close(fd);
    close(dir);
}

void write_session(const char *name, const char *program, int pty)
{
    char content[1200], shown[1024];
    int sessions = open_run_subdir("sessions");
    session_dir_fd = ensure_dir(sessions, name);
    close(sessions);
    if (session_dir_fd < 0)
        die_with_error(EXIT_INTERNAL, "cannot create %s/sessions/%s", cfg->run_dir, name);
    snprintf(session_name, sizeof session_name, "%d", (int)getpid());
    /* One write: a reader waits for the final newline, never for a second write. */
    int n = snprintf(content, sizeof content, "%d %s\ncaller %u\npty %d\nprogram %s\n", (int)getpid(), session_start,
                     (unsigned)getuid(), pty ? 1 : 0, escape(shown, sizeof shown, program));
    if (n < 0 || (size_t)n >= sizeof content)
        die(EXIT_INTERNAL, "session record too long");
    int fd = openat(session_dir_fd, session_name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        die_with_error(EXIT_INTERNAL, "cannot write the session record");
    session_written = 1;
    if (write_all(fd, content, (size_t)n) < 0)
        die_with_error(EXIT_INTERNAL, "cannot write the session record");
    close(fd);
}

void remove_session(void)
{
    if (session_written && unlinkat(session_dir_fd, session_name, 0) == 0)
        session_written = 0;
}
