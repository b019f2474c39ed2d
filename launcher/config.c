/* Loading the config and the plan, and checking the request against them. */
#define _GNU_SOURCE
#include "config.h"

#include "audit.h"
#include "files.h"

#include <fcntl.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void load_config(struct jr_config *cfg)
{
    static char text[JR_MAX_FILE + 1];
    char dir[JR_PATH_MAX], err[JR_ERR_MAX];
    const char *path = JAILRUN_CONFIG;
    const char *slash = strrchr(path, '/');
    if (!slash || (size_t)(slash - path) >= sizeof dir)
        die(EXIT_CONFIG, "config path %s is not absolute", path);
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
    int dfd = open(dir[0] ? dir : "/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    struct stat st;
    if (dfd < 0 || fstat(dfd, &st) < 0)
        die_with_error(EXIT_CONFIG, "cannot open the config directory %s", dir);
    if (!trusted_stat(&st))
        die(EXIT_CONFIG, "config directory %s is not owned by root or is writable by others", dir);
    size_t n = read_trusted(dfd, slash + 1, text, sizeof text, EXIT_CONFIG, path);
    close(dfd);
    if (jr_parse_config(text, n, cfg, err, sizeof err) < 0)
        die(EXIT_CONFIG, "%s: %s", path, err);
}

void check_caller(const struct jr_config *cfg, uid_t caller)
{
    int allowed = 0;
    for (size_t i = 0; i < cfg->n_allowed_callers; i++)
        allowed |= cfg->allowed_callers[i] == caller;
    if (!allowed)
        die(EXIT_CALLER, "uid %u may not run jailrun", (unsigned)caller);
}

void load_plan(const struct jr_config *cfg, const char *name, struct jr_plan *plan)
{
    static char text[JR_MAX_FILE + 1];
    char err[JR_ERR_MAX], root[JR_PATH_MAX];
    int tfd = open(cfg->tenants_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (tfd < 0)
        die_with_error(EXIT_TENANT, "cannot open tenants_dir %s", cfg->tenants_dir);
    int dfd = openat(tfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        if (errno == ENOENT)
            die(EXIT_TENANT, "unknown tenant '%s'", name);
        die_with_error(EXIT_TENANT, "cannot open the directory of tenant '%s'", name);
    }
    struct stat st;
    if (fstat(dfd, &st) < 0 || !trusted_stat(&st))
        die(EXIT_TENANT, "the directory of tenant '%s' is not owned by root or is writable by others", name);
    size_t n = read_trusted(dfd, "plan", text, sizeof text, EXIT_TENANT, "the tenant's plan");
    close(dfd);
    close(tfd);
    if (jr_parse_plan(text, n, plan, err, sizeof err) < 0)
        die(EXIT_TENANT, "plan of '%s': %s", name, err);
    join(root, sizeof root, cfg->jails_dir, name);
    if (strcmp(plan->name, name) != 0 || strcmp(plan->root, root) != 0)
        die(EXIT_TENANT, "plan of '%s' names '%s' with root %s, expected root %s", name, plan->name, plan->root, root);
    if (plan->uid < cfg->uid_min || plan->uid > cfg->uid_max || plan->gid < cfg->uid_min || plan->gid > cfg->uid_max)
        die(EXIT_TENANT, "plan of '%s': uid %lu or gid %lu is outside the tenant range %lu-%lu", name, plan->uid,
            plan->gid, cfg->uid_min, cfg->uid_max);
    /* Tenant root's ids: never host root's nor a plain tenant's (the range starts above the tenant range). */
    if (plan->admin && plan->admin <= cfg->uid_max)
        die(EXIT_TENANT, "plan of '%s': admin ids from %lu overlap the tenant range %lu-%lu", name, plan->admin,
            cfg->uid_min, cfg->uid_max);
}

void resolve_limits(struct launch *l)
{
    for (int i = 0; i < LIM_COUNT; i++)
        if (jr_effective_limit(l->plan.limits[i], l->args.limits[i], &l->lim[i]) < 0)
            die(EXIT_USAGE, "--%s %llu is above the tenant's limit %llu", i == LIM_WALL ? "timeout" : jr_limit_names[i],
                l->args.limits[i], l->plan.limits[i]);
    if (l->args.net && l->plan.net != JR_NET_HOST)
        die(EXIT_USAGE, "--net: tenant '%s' has no host network", l->args.name);
    /* private (issue 17): PID 1 joins the tenant's own namespace (jail.c), made at mount. */
    l->new_net = l->plan.net == JR_NET_NONE || (l->plan.net == JR_NET_HOST && !l->args.net);
}

/* jailrun's own options, as jr_parse_args knows them (getopt_long: a unique
 * prefix names an option), plus --pty, which is taken out before it runs. */
static const struct {
    const char *name;
    int has_arg;
} known_options[] = {
    {"cwd", 1},   {"env", 1}, {"timeout", 1}, {"cpu", 1}, {"mem", 1},  {"procs", 1},
    {"fsize", 1}, {"nofile", 1}, {"meta", 1}, {"net", 0}, {"help", 0}, {"pty", 0}, {"user", 1},
};

/* The option `arg` ("--name", no "=value") names, or -1 if none or more than one. */
static int find_option(const char *arg)
{
    int found = -1;
    size_t len = strlen(arg);
    for (size_t i = 0; i < sizeof known_options / sizeof known_options[0]; i++) {
        if (strcmp(arg, known_options[i].name) == 0)
            return (int)i;
        if (strncmp(arg, known_options[i].name, len) == 0) {
            if (found >= 0)
                return -1;
            found = (int)i;
        }
    }
    return found;
}

int take_pty_option(int argc, char **argv, int *pty)
{
    *pty = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] != '-' || a[2] == '\0' || strchr(a, '='))
            break;  /* NAME, "--", a short option or --opt=value: jr_parse_args judges the rest */
        int opt = find_option(a + 2);
        if (opt < 0)
            break;  /* unknown or ambiguous: jr_parse_args says so */
        if (strcmp(known_options[opt].name, "pty") != 0) {
            i += known_options[opt].has_arg;   /* its value is not an option, whatever it looks like */
            continue;
        }
        *pty = 1;
        memmove(argv + i, argv + i + 1, (size_t)(argc - i) * sizeof *argv);    /* argv[argc] (NULL) too */
        argc--;
        i--;
    }
    return argc;
}
