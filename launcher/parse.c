/* jailrun's parsers; see parse.h. Strict: anything not exactly as
 * docs/contracts.md writes it is refused with one sentence naming the value. */
#define _GNU_SOURCE
#include "parse.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const jr_limit_names[LIM_COUNT] = {"cpu", "mem", "procs", "fsize", "nofile", "wall"};

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_lower(char c) { return c >= 'a' && c <= 'z'; }
static int is_alpha(char c) { return is_lower(c) || (c >= 'A' && c <= 'Z'); }
static int is_alnum(char c) { return is_alpha(c) || is_digit(c); }

int jr_parse_number(const char *s, unsigned long long max, int units, unsigned long long *out)
{
    if (!s || !is_digit(s[0]))
        return -1;  /* strtoull would accept space, '+' and '-' */
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE)
        return -1;
    if (*end && units) {
        unsigned shift = 0;
        switch (*end) {
        case 'K': shift = 10; break;
        case 'M': shift = 20; break;
        case 'G': shift = 30; break;
        case 'T': shift = 40; break;
        default: return -1;
        }
        if (v > (max >> shift))
            return -1;
        v <<= shift;
        end++;
    }
    if (*end || v > max)
        return -1;
    *out = v;
    return 0;
}

int jr_valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n < 1 || n > JR_NAME_MAX)
        return 0;
    if (!(is_lower(name[0]) || name[0] == '_'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(is_lower(name[i]) || is_digit(name[i]) || name[i] == '_' || name[i] == '-'))
            return 0;
    return 1;
}

int jr_valid_hostname(const char *name)
{
    size_t n = strlen(name);
    if (n < 1 || n > JR_HOST_MAX || !is_alnum(name[0]) || !is_alnum(name[n - 1]))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(is_alnum(name[i]) || name[i] == '-'))
            return 0;
    return 1;
}

int jr_valid_env(const char *kv)
{
    if (!(is_alpha(kv[0]) || kv[0] == '_'))
        return 0;
    const char *p = kv + 1;
    while (is_alnum(*p) || *p == '_')
        p++;
    return *p == '=';
}

/* An absolute path in normal form: no empty, "." or ".." components, no
 * trailing slash (except "/" itself), printable, no whitespace. */
static int valid_abs_path(const char *p)
{
    size_t n = strlen(p);
    if (n < 1 || n >= JR_PATH_MAX || p[0] != '/')
        return 0;
    if (n == 1)
        return 1;
    if (p[n - 1] == '/')
        return 0;
    for (const char *c = p; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return 0;
    const char *comp = p + 1;
    for (;;) {
        const char *slash = strchr(comp, '/');
        size_t len = slash ? (size_t)(slash - comp) : strlen(comp);
        if (len == 0 || (len == 1 && comp[0] == '.') || (len == 2 && comp[0] == '.' && comp[1] == '.'))
            return 0;
        if (!slash)
            return 1;
        comp = slash + 1;
    }
}

static int copy_str(char *dst, size_t dstlen, const char *src, size_t n)
{
    if (n >= dstlen)
        return -1;
    memcpy(dst, src, n);
    dst[n] = '\0';
    return 0;
}

void jr_config_defaults(struct jr_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->images_dir, "/var/lib/jailyard/images");
    strcpy(cfg->tenants_dir, "/var/lib/jailyard/tenants");
    strcpy(cfg->jails_dir, "/srv/jails");
    strcpy(cfg->run_dir, "/run/jailyard");
    strcpy(cfg->mount_helper, "/usr/local/lib/jailyard/jailyard-mount");
    strcpy(cfg->python, "/usr/bin/python3");
    strcpy(cfg->lib_dir, "/usr/local/lib/jailyard");
    cfg->allowed_callers[0] = 0;
    cfg->allowed_callers[1] = 33;
    cfg->n_allowed_callers = 2;
    cfg->uid_min = 10000;
    cfg->uid_max = 59999;
    strcpy(cfg->cgroup_name, "jailyard");
    cfg->defaults[LIM_CPU] = 60;
    cfg->defaults[LIM_MEM] = 512ULL << 20;
    cfg->defaults[LIM_PROCS] = 64;
    cfg->defaults[LIM_FSIZE] = 1ULL << 30;
    cfg->defaults[LIM_NOFILE] = 256;
    cfg->defaults[LIM_WALL] = 0;
}

#define UID_LIMIT 4294967294ULL  /* (uid_t)-1 is "no change" to the kernel */
#define INT_LIMIT (1ULL << 62)

int jr_parse_config(const char *text, size_t len, struct jr_config *cfg, char *err, size_t errlen)
{
    static const struct {
        const char *key;
        size_t off;
    } path_keys[] = {
        {"images_dir", offsetof(struct jr_config, images_dir)},
        {"tenants_dir", offsetof(struct jr_config, tenants_dir)},
        {"jails_dir", offsetof(struct jr_config, jails_dir)},
        {"run_dir", offsetof(struct jr_config, run_dir)},
        {"mount_helper", offsetof(struct jr_config, mount_helper)},
        {"python", offsetof(struct jr_config, python)},
        {"lib_dir", offsetof(struct jr_config, lib_dir)},
    };
    char line[JR_PATH_MAX + 64];
    unsigned seen = 0;  /* one bit per key, so a repeated key is refused */
    size_t lineno = 0;

    jr_config_defaults(cfg);
    if (len > JR_MAX_FILE)
        return fail(err, errlen, "config is larger than %d bytes", JR_MAX_FILE);
    if (memchr(text, '\0', len))
        return fail(err, errlen, "config contains a NUL byte");
    for (size_t pos = 0; pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;
        const char *s = text + pos, *e = s + n;
        pos += n + 1;
        lineno++;
        while (s < e && is_space(*s))
            s++;
        while (e > s && is_space(e[-1]))
            e--;
        if (s == e || *s == '#')
            continue;
        const char *eq = memchr(s, '=', (size_t)(e - s));
        if (!eq)
            return fail(err, errlen, "line %zu: expected 'key = value'", lineno);
        const char *ke = eq, *vs = eq + 1;
        while (ke > s && is_space(ke[-1]))
            ke--;
        while (vs < e && is_space(*vs))
            vs++;
        char key[32];
        if (ke == s || vs == e || copy_str(key, sizeof key, s, (size_t)(ke - s)) < 0 ||
            copy_str(line, sizeof line, vs, (size_t)(e - vs)) < 0)
            return fail(err, errlen, "line %zu: expected 'key = value' with a value of at most %d bytes", lineno,
                        JR_PATH_MAX - 1);
        const char *value = line;
        unsigned bit = 0;
        int done = 0;
        for (size_t i = 0; i < sizeof path_keys / sizeof path_keys[0]; i++) {
            if (strcmp(key, path_keys[i].key) == 0) {
                if (!valid_abs_path(value))
                    return fail(err, errlen, "line %zu: %s must be an absolute path without spaces, got '%s'", lineno,
                                key, value);
                strcpy((char *)cfg + path_keys[i].off, value);
                bit = 1u << i;
                done = 1;
            }
        }
        if (!done && strcmp(key, "allowed_callers") == 0) {
            cfg->n_allowed_callers = 0;
            for (char *tok = line, *save = NULL; (tok = strtok_r(tok, " \t", &save)); tok = NULL) {
                unsigned long long uid;
                if (jr_parse_number(tok, UID_LIMIT, 0, &uid) < 0)
                    return fail(err, errlen, "line %zu: allowed_callers must be uids, got '%s'", lineno, tok);
                if (cfg->n_allowed_callers == JR_MAX_CALLERS)
                    return fail(err, errlen, "line %zu: more than %d allowed_callers", lineno, JR_MAX_CALLERS);
                cfg->allowed_callers[cfg->n_allowed_callers++] = (uid_t)uid;
            }
            bit = 1u << 7;
            done = 1;
        } else if (!done && strcmp(key, "cgroup_name") == 0) {
            int alnum = 0;
            for (const char *c = value; *c; c++) {
                if (!(is_alnum(*c) || *c == '_' || *c == '-'))
                    return fail(err, errlen, "line %zu: cgroup_name must be [A-Za-z0-9_-]+, got '%s'", lineno, value);
                alnum |= is_alnum(*c);
            }
            if (!alnum || strlen(value) > JR_NAME_MAX)
                return fail(err, errlen, "line %zu: cgroup_name must be [A-Za-z0-9_-]{1,%d}, got '%s'", lineno,
                            JR_NAME_MAX, value);
            strcpy(cfg->cgroup_name, value);
            bit = 1u << 8;
            done = 1;
        } else if (!done) {
            static const char *const int_keys[] = {"uid_min",       "uid_max",     "default_cpu",
                                                   "default_mem",   "default_procs", "default_fsize",
                                                   "default_nofile", "default_wall"};
            for (size_t i = 0; i < sizeof int_keys / sizeof int_keys[0]; i++) {
                if (strcmp(key, int_keys[i]) != 0)
                    continue;
                unsigned long long v;
                unsigned long long max = i < 2 ? UID_LIMIT : INT_LIMIT;
                if (jr_parse_number(value, max, 0, &v) < 0)
                    return fail(err, errlen, "line %zu: %s must be a non-negative integer up to %llu, got '%s'",
                                lineno, key, max, value);
                if (i == 0)
                    cfg->uid_min = (unsigned long)v;
                else if (i == 1)
                    cfg->uid_max = (unsigned long)v;
                else
                    cfg->defaults[i - 2] = v;
                bit = 1u << (9 + i);
                done = 1;
            }
        }
        if (!done)
            return fail(err, errlen, "line %zu: unknown key '%s'", lineno, key);
        if (seen & bit)
            return fail(err, errlen, "line %zu: key '%s' is given twice", lineno, key);
        seen |= bit;
    }
    if (cfg->uid_min > cfg->uid_max)
        return fail(err, errlen, "uid_min %lu is above uid_max %lu", cfg->uid_min, cfg->uid_max);
    if (cfg->uid_min == 0)
        return fail(err, errlen, "uid_min must not be 0: a tenant can never be root");
    return 0;
}

/* Split one plan line into at most max fields separated by single spaces. */
static size_t split_fields(char *line, char **fields, size_t max)
{
    size_t n = 0;
    char *p = line;
    for (;;) {
        if (n == max)
            return max + 1;
        fields[n++] = p;
        char *sp = strchr(p, ' ');
        if (!sp)
            return n;
        *sp = '\0';
        p = sp + 1;
    }
}

static int parse_options(const char *opts, unsigned *flags)
{
    static const struct {
        const char *name;
        unsigned flag;
    } known[] = {{"ro", JR_MNT_RO}, {"nosuid", JR_MNT_NOSUID}, {"nodev", JR_MNT_NODEV}, {"noexec", JR_MNT_NOEXEC}};
    *flags = 0;
    if (!*opts)
        return 0;
    for (const char *p = opts;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        int ok = 0;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            if (strlen(known[i].name) == len && memcmp(known[i].name, p, len) == 0) {
                *flags |= known[i].flag;
                ok = 1;
            }
        if (!ok)
            return -1;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

int jr_parse_plan(const char *text, size_t len, struct jr_plan *plan, char *err, size_t errlen)
{
    static const char *const header[] = {"version", "name", "uid", "gid", "hostname", "home", "root", "image", "net"};
    enum { N_HEADER = sizeof header / sizeof header[0] };
    char line[3 * JR_PATH_MAX];
    size_t lineno = 0;

    memset(plan, 0, sizeof *plan);
    if (len > JR_MAX_FILE)
        return fail(err, errlen, "plan is larger than %d bytes", JR_MAX_FILE);
    if (len == 0 || text[len - 1] != '\n')
        return fail(err, errlen, "plan does not end with a newline");
    for (size_t pos = 0; pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t n = (size_t)(nl - (text + pos));
        if (copy_str(line, sizeof line, text + pos, n) < 0)
            return fail(err, errlen, "line %zu: longer than %zu bytes", lineno + 1, sizeof line - 1);
        pos += n + 1;
        lineno++;
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)line[i] < ' ' || line[i] == 0x7f)
                return fail(err, errlen, "line %zu: control character in the plan", lineno);
        char *f[6];
        size_t nf = split_fields(line, f, 5);
        for (size_t i = 0; i < nf && i < 5; i++)
            if (!*f[i] && !(i == 4 && strcmp(f[0], "mount") == 0))
                return fail(err, errlen, "line %zu: empty field", lineno);
        size_t idx = lineno - 1;
        if (idx < N_HEADER) {
            if (nf != 2 || strcmp(f[0], header[idx]) != 0)
                return fail(err, errlen, "line %zu: expected '%s VALUE'", lineno, header[idx]);
            const char *v = f[1];
            unsigned long long num;
            switch (idx) {
            case 0:
                if (strcmp(v, "1") != 0)
                    return fail(err, errlen, "unsupported plan version '%s'", v);
                break;
            case 1:
                if (!jr_valid_name(v))
                    return fail(err, errlen, "invalid name '%s'", v);
                strcpy(plan->name, v);
                break;
            case 2:
            case 3:
                if (jr_parse_number(v, UID_LIMIT, 0, &num) < 0)
                    return fail(err, errlen, "invalid %s '%s'", header[idx], v);
                if (idx == 2)
                    plan->uid = (unsigned long)num;
                else
                    plan->gid = (unsigned long)num;
                break;
            case 4:
                if (!jr_valid_hostname(v))
                    return fail(err, errlen, "invalid hostname '%s'", v);
                strcpy(plan->hostname, v);
                break;
            case 5:
            case 6:
                if (!valid_abs_path(v))
                    return fail(err, errlen, "%s must be a normal absolute path, got '%s'", header[idx], v);
                strcpy(idx == 5 ? plan->home : plan->root, v);
                break;
            case 7: {
                size_t il = strlen(v);
                if (il < 8 || il > 64 || strspn(v, "0123456789abcdef") != il)
                    return fail(err, errlen, "invalid image id '%s'", v);
                strcpy(plan->image, v);
                break;
            }
            case 8:
                if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
                    return fail(err, errlen, "net must be 0 or 1, got '%s'", v);
                plan->net = v[0] == '1';
                break;
            }
        } else if (idx < N_HEADER + LIM_COUNT) {
            size_t li = idx - N_HEADER;
            if (nf != 3 || strcmp(f[0], "limit") != 0 || strcmp(f[1], jr_limit_names[li]) != 0)
                return fail(err, errlen, "line %zu: expected 'limit %s VALUE'", lineno, jr_limit_names[li]);
            if (jr_parse_number(f[2], INT_LIMIT, 0, &plan->limits[li]) < 0)
                return fail(err, errlen, "line %zu: invalid %s limit '%s'", lineno, jr_limit_names[li], f[2]);
        } else {
            if (nf != 5 || strcmp(f[0], "mount") != 0)
                return fail(err, errlen, "line %zu: expected 'mount TARGET TYPE SOURCE OPTIONS'", lineno);
            if (plan->n_mounts == JR_MAX_MOUNTS)
                return fail(err, errlen, "more than %d mounts", JR_MAX_MOUNTS);
            struct jr_mount *m = &plan->mounts[plan->n_mounts];
            if (!valid_abs_path(f[1]))
                return fail(err, errlen, "line %zu: mount target must be a normal absolute path, got '%s'", lineno,
                            f[1]);
            if ((plan->n_mounts == 0) != (strcmp(f[1], "/") == 0))
                return fail(err, errlen, "line %zu: the first mount, and only it, must be the root '/'", lineno);
            if (strcmp(f[2], "bind") != 0 && strcmp(f[2], "overlay") != 0)
                return fail(err, errlen, "line %zu: unknown mount type '%s'", lineno, f[2]);
            if (parse_options(f[4], &m->flags) < 0)
                return fail(err, errlen, "line %zu: unknown mount options '%s'", lineno, f[4]);
            strcpy(m->target, f[1]);
            strcpy(m->type, f[2]);
            plan->n_mounts++;
        }
    }
    if (lineno < N_HEADER + LIM_COUNT || plan->n_mounts == 0)
        return fail(err, errlen, "plan is incomplete (%zu lines, %zu mounts)", lineno, plan->n_mounts);
    return 0;
}

int jr_effective_limit(unsigned long long plan, unsigned long long asked, unsigned long long *out)
{
    if (asked == JR_UNSET) {
        *out = plan;
        return 0;
    }
    /* 0 asks for "unlimited": never more than a plan that sets a limit. */
    if (plan != 0 && (asked == 0 || asked > plan))
        return -1;
    *out = asked;
    return 0;
}

enum { OPT_CWD = 256, OPT_ENV, OPT_TIMEOUT, OPT_CPU, OPT_MEM, OPT_PROCS, OPT_FSIZE, OPT_NOFILE, OPT_META, OPT_NET };

int jr_parse_args(int argc, char **argv, struct jr_args *args, char *err, size_t errlen)
{
    static const struct option longopts[] = {
        {"cwd", required_argument, NULL, OPT_CWD},       {"env", required_argument, NULL, OPT_ENV},
        {"timeout", required_argument, NULL, OPT_TIMEOUT}, {"cpu", required_argument, NULL, OPT_CPU},
        {"mem", required_argument, NULL, OPT_MEM},       {"procs", required_argument, NULL, OPT_PROCS},
        {"fsize", required_argument, NULL, OPT_FSIZE},   {"nofile", required_argument, NULL, OPT_NOFILE},
        {"meta", required_argument, NULL, OPT_META},     {"net", no_argument, NULL, OPT_NET},
        {"help", no_argument, NULL, 'h'},                {NULL, 0, NULL, 0},
    };
    /* Upper bounds: what the kernel can take, well above any sane tenant. */
    static const struct {
        int opt, slot, units;
        unsigned long long max;
    } numeric[] = {
        {OPT_TIMEOUT, LIM_WALL, 0, 1000000},  {OPT_CPU, LIM_CPU, 0, 1000000},
        {OPT_MEM, LIM_MEM, 1, 1ULL << 50},    {OPT_PROCS, LIM_PROCS, 0, 4194304},
        {OPT_FSIZE, LIM_FSIZE, 1, 1ULL << 60}, {OPT_NOFILE, LIM_NOFILE, 0, 1048576},
    };

    memset(args, 0, sizeof *args);
    for (int i = 0; i < LIM_COUNT; i++)
        args->limits[i] = JR_UNSET;
    if (argc < 1)
        return fail(err, errlen, "no arguments");
    opterr = 0;
    optind = 0;  /* glibc: full re-initialisation (the fuzz target parses many times) */
    for (;;) {
        int idx = -1;
        int c = getopt_long(argc, argv, "+h", longopts, &idx);
        if (c == -1)
            break;
        switch (c) {
        case 'h':
            args->help = 1;
            return 0;
        case OPT_CWD:
            if (!valid_abs_path(optarg))
                return fail(err, errlen, "--cwd needs a normal absolute path inside the jail, got '%s'", optarg);
            args->cwd = optarg;
            break;
        case OPT_ENV:
            if (!jr_valid_env(optarg))
                return fail(err, errlen, "--env needs NAME=VALUE with NAME [A-Za-z_][A-Za-z0-9_]*, got '%s'", optarg);
            if (args->n_env == JR_MAX_ENV)
                return fail(err, errlen, "more than %d --env options", JR_MAX_ENV);
            args->env[args->n_env++] = optarg;
            break;
        case OPT_META:
            if (!*optarg || strlen(optarg) >= JR_PATH_MAX)
                return fail(err, errlen, "--meta needs a file name");
            args->meta = optarg;
            break;
        case OPT_NET:
            args->net = 1;
            break;
        case OPT_TIMEOUT:
        case OPT_CPU:
        case OPT_MEM:
        case OPT_PROCS:
        case OPT_FSIZE:
        case OPT_NOFILE:
            break;  /* numbers: parsed from the table below */
        case '?':
        case ':':
        default: {
            int bad = optind - 1;
            if (optopt && optopt < 256)
                return fail(err, errlen, "unknown option '-%c' (see --help)", optopt);
            if (bad >= 0 && bad < argc && argv[bad])
                return fail(err, errlen, "bad option '%s' (unknown, ambiguous, or missing its value; see --help)",
                            argv[bad]);
            return fail(err, errlen, "bad option (see --help)");
        }
        }
        for (size_t i = 0; i < sizeof numeric / sizeof numeric[0]; i++) {
            if (numeric[i].opt != c)
                continue;
            unsigned long long v;
            if (jr_parse_number(optarg, numeric[i].max, numeric[i].units, &v) < 0 || v == 0)
                return fail(err, errlen, "--%s needs a number from 1 to %llu%s, got '%s'", longopts[idx].name,
                            numeric[i].max, numeric[i].units ? " (K, M, G, T suffixes allowed)" : "", optarg);
            args->limits[numeric[i].slot] = v;
        }
    }
    if (optind >= argc)
        return fail(err, errlen, "missing NAME (usage: jailrun [options] NAME [--] PROGRAM [ARGS...])");
    args->name = argv[optind++];
    if (optind < argc && strcmp(argv[optind], "--") == 0)
        optind++;
    if (optind >= argc)
        return fail(err, errlen, "missing PROGRAM (usage: jailrun [options] NAME [--] PROGRAM [ARGS...])");
    if (!*argv[optind])
        return fail(err, errlen, "empty PROGRAM");
    args->argv = argv + optind;
    return 0;
}
