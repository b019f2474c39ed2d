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
const char *const jr_resource_names[RES_COUNT] = {"disk", "inodes", "cpu_weight", "cpu_rate", "io_weight", "memsw"};

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* The config's only whitespace (docs/contracts.md): every other control byte is refused. */
static int is_space(char c) { return c == ' ' || c == '\t'; }
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

#define UID_LIMIT 4294967294ULL  /* (uid_t)-1 is "no change" to the kernel */
#define INT_LIMIT (1ULL << 62)

/* ---- the node config: one table of keys ---------------------------------------- */

enum key_type {
    KEY_PATH,   /* a normal absolute path (valid_abs_path) */
    KEY_UIDS,   /* 1 to JR_MAX_CALLERS uids separated by spaces or tabs */
    KEY_NUMBER, /* decimal digits, from min to max */
    KEY_CGROUP, /* [A-Za-z0-9_-]{1,JR_NAME_MAX} with at least one letter or digit */
    KEY_WORD,   /* issue 17: [A-Za-z0-9_.:/,-]{1,JR_WORD_MAX}; the Python side (network.py) checks its meaning */
};

struct config_key {
    const char *name;
    enum key_type type;
    size_t off, size;                /* the field in struct jr_config */
    unsigned long long min, max;     /* KEY_NUMBER bounds; KEY_UIDS: max uid */
    const char *def;                 /* the built-in default, as config text */
};

#define FIELD(f) offsetof(struct jr_config, f), sizeof(((struct jr_config *)0)->f)
#define LIMIT(i) offsetof(struct jr_config, defaults) + (i) * sizeof(unsigned long long), sizeof(unsigned long long)

/* In the order Config.render() writes them (module_utils/jailyard/conffile.py
 * holds the same table; tests/integration/test_config_corpus.py holds both to it). */
static const struct config_key config_keys[] = {
    {"images_dir", KEY_PATH, FIELD(images_dir), 0, 0, "/var/lib/jailyard/images"},
    {"tenants_dir", KEY_PATH, FIELD(tenants_dir), 0, 0, "/var/lib/jailyard/tenants"},
    {"jails_dir", KEY_PATH, FIELD(jails_dir), 0, 0, "/srv/jails"},
    {"run_dir", KEY_PATH, FIELD(run_dir), 0, 0, "/run/jailyard"},
    {"mount_helper", KEY_PATH, FIELD(mount_helper), 0, 0, "/usr/local/lib/jailyard/jailyard-mount"},
    {"python", KEY_PATH, FIELD(python), 0, 0, "/usr/bin/python3"},
    {"lib_dir", KEY_PATH, FIELD(lib_dir), 0, 0, "/usr/local/lib/jailyard"},
    {"allowed_callers", KEY_UIDS, FIELD(allowed_callers), 0, UID_LIMIT, "0 33"},
    {"uid_min", KEY_NUMBER, FIELD(uid_min), 1, UID_LIMIT, "10000"},  /* a tenant is never root */
    {"uid_max", KEY_NUMBER, FIELD(uid_max), 1, UID_LIMIT, "59999"},
    {"cgroup_name", KEY_CGROUP, FIELD(cgroup_name), 0, 0, "jailyard"},
    {"default_cpu", KEY_NUMBER, LIMIT(LIM_CPU), 0, INT_LIMIT, "60"},
    {"default_mem", KEY_NUMBER, LIMIT(LIM_MEM), 0, INT_LIMIT, "536870912"},
    {"default_procs", KEY_NUMBER, LIMIT(LIM_PROCS), 0, INT_LIMIT, "64"},
    {"default_fsize", KEY_NUMBER, LIMIT(LIM_FSIZE), 0, INT_LIMIT, "1073741824"},
    {"default_nofile", KEY_NUMBER, LIMIT(LIM_NOFILE), 0, INT_LIMIT, "256"},
    {"default_wall", KEY_NUMBER, LIMIT(LIM_WALL), 0, INT_LIMIT, "0"},
    /* issue 17, tenant networks: read by the Python side only (jailrun just accepts them). */
    {"net_bridge", KEY_WORD, FIELD(net_bridge), 0, 0, "jybr0"},
    {"net_pool4", KEY_WORD, FIELD(net_pool4), 0, 0, "10.231.0.0/24"},
    {"net_pool6", KEY_WORD, FIELD(net_pool6), 0, 0, "none"},
    {"net_dns", KEY_WORD, FIELD(net_dns), 0, 0, "none"},
    {"net_egress", KEY_WORD, FIELD(net_egress), 0, 0, "nat"},
    {"net_host", KEY_NUMBER, FIELD(net_host), 0, 1, "0"},
    /* Per-tenant disk limits: project quotas or volumes (read by the Python side only). */
    {"disk_backend", KEY_WORD, FIELD(disk_backend), 0, 0, "auto"},
    /* issue 15: the shared IPC directory's path in every jail (jailfs.c, mount_ipc). */
    {"ipc_path", KEY_PATH, FIELD(ipc_path), 0, 0, "/run/ipc"},
};
#define CGROUP_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
#define WORD_CHARS CGROUP_CHARS ".:/,"

enum { N_CONFIG_KEYS = sizeof config_keys / sizeof config_keys[0] };

static void store_number(void *field, size_t size, unsigned long long v)
{
    if (size == sizeof(unsigned long long)) {
        unsigned long long w = v;
        memcpy(field, &w, sizeof w);
    } else {
        unsigned long w = (unsigned long)v;
        memcpy(field, &w, sizeof w);
    }
}

static unsigned long long load_number(const void *field, size_t size)
{
    if (size == sizeof(unsigned long long)) {
        unsigned long long w;
        memcpy(&w, field, sizeof w);
        return w;
    }
    unsigned long w;
    memcpy(&w, field, sizeof w);
    return w;
}

/* A value for an error message: at most 100 bytes of it, a tab (the one
 * control byte a config may hold) written as \t, so the message stays one line. */
struct shown {
    char s[2 * 100 + 4];
};
static struct shown show(const char *v, size_t n)
{
    struct shown out;
    size_t o = 0;
    for (size_t i = 0; i < n && i < 100 && v[i]; i++) {
        if (v[i] == '\t') {
            out.s[o++] = '\\';
            out.s[o++] = 't';
        } else {
            out.s[o++] = v[i];
        }
    }
    if (n > 100 && v[100])
        out.s[o++] = '.', out.s[o++] = '.', out.s[o++] = '.';
    out.s[o] = '\0';
    return out;
}

/* Set one key from its value (NUL-terminated, no surrounding space). */
static int set_key(const struct config_key *k, char *value, struct jr_config *cfg, char *err, size_t errlen)
{
    char *field = (char *)cfg + k->off;
    switch (k->type) {
    case KEY_PATH:
        if (!valid_abs_path(value))
            return fail(err, errlen, "%s must be an absolute path in normal form without spaces, got '%s'", k->name,
                        show(value, strlen(value)).s);
        strcpy(field, value);
        return 0;
    case KEY_UIDS: {
        size_t n = 0;
        for (char *tok = value, *save = NULL; (tok = strtok_r(tok, " \t", &save)); tok = NULL) {
            unsigned long long uid;
            if (jr_parse_number(tok, k->max, 0, &uid) < 0)
                return fail(err, errlen, "%s must be uids from 0 to %llu, got '%s'", k->name, k->max, show(tok, strlen(tok)).s);
            if (n == JR_MAX_CALLERS)
                return fail(err, errlen, "more than %d %s", JR_MAX_CALLERS, k->name);
            cfg->allowed_callers[n++] = (uid_t)uid;
        }
        cfg->n_allowed_callers = n;
        return 0;
    }
    case KEY_NUMBER: {
        unsigned long long v;
        if (jr_parse_number(value, k->max, 0, &v) < 0 || v < k->min)
            return fail(err, errlen, "%s must be a number from %llu to %llu, got '%s'", k->name, k->min, k->max,
                        show(value, strlen(value)).s);
        store_number(field, k->size, v);
        return 0;
    }
    case KEY_CGROUP: {
        size_t n = strlen(value), good = strspn(value, CGROUP_CHARS);
        int alnum = strspn(value, "_-") < n;  /* not only "_" and "-" */
        if (good != n || !alnum || n >= k->size)
            return fail(err, errlen, "%s must be [A-Za-z0-9_-]{1,%zu} with a letter or digit, got '%s'", k->name,
                        k->size - 1, show(value, strlen(value)).s);
        strcpy(field, value);
        return 0;
    }
    case KEY_WORD: {
        size_t n = strlen(value);
        if (strspn(value, WORD_CHARS) != n || n >= k->size)
            return fail(err, errlen, "%s must be [A-Za-z0-9_.:/,-]{1,%zu}, got '%s'", k->name, k->size - 1,
                        show(value, n).s);
        strcpy(field, value);
        return 0;
    }
    }
    return fail(err, errlen, "%s: unknown key type", k->name);
}

void jr_config_defaults(struct jr_config *cfg)
{
    char value[JR_PATH_MAX], err[JR_ERR_MAX];
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < N_CONFIG_KEYS; i++) {
        snprintf(value, sizeof value, "%s", config_keys[i].def);
        if (set_key(&config_keys[i], value, cfg, err, sizeof err) < 0)
            abort();  /* a bad built-in default: test_parse fails first */
    }
}

int jr_parse_config(const char *text, size_t len, struct jr_config *cfg, char *err, size_t errlen)
{
    char value[JR_PATH_MAX];
    unsigned char seen[N_CONFIG_KEYS] = {0};
    size_t lineno = 0;

    jr_config_defaults(cfg);
    if (len > JR_MAX_FILE)
        return fail(err, errlen, "config is larger than %d bytes", JR_MAX_FILE);
    for (size_t pos = 0; pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;
        const char *s = text + pos, *e = s + n;
        pos += n + 1;
        lineno++;
        /* Printable ASCII and tab only, comments included: no byte may end,
         * hide or reveal a line for one reader and not another. */
        for (const char *c = s; c < e; c++)
            if (*c != '\t' && ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e))
                return fail(err, errlen, "line %zu: byte 0x%02x is not allowed (only printable ASCII and tab)", lineno,
                            (unsigned char)*c);
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
        if (ke == s || vs == e)
            return fail(err, errlen, "line %zu: expected 'key = value'", lineno);
        size_t klen = (size_t)(ke - s), vlen = (size_t)(e - vs);
        const struct config_key *k = NULL;
        for (size_t i = 0; i < N_CONFIG_KEYS && !k; i++)
            if (strlen(config_keys[i].name) == klen && memcmp(config_keys[i].name, s, klen) == 0)
                k = &config_keys[i];
        if (!k)
            return fail(err, errlen, "line %zu: unknown key '%s'", lineno, show(s, klen).s);
        if (seen[k - config_keys]++)
            return fail(err, errlen, "line %zu: key '%s' is given twice", lineno, k->name);
        if (copy_str(value, sizeof value, vs, vlen) < 0)
            return fail(err, errlen, "line %zu: the value of %s is longer than %d bytes", lineno, k->name,
                        JR_PATH_MAX - 1);
        char msg[JR_ERR_MAX];
        if (set_key(k, value, cfg, msg, sizeof msg) < 0)
            return fail(err, errlen, "line %zu: %s", lineno, msg);
    }
    if (cfg->uid_min > cfg->uid_max)
        return fail(err, errlen, "uid_min %lu is above uid_max %lu", cfg->uid_min, cfg->uid_max);
    return 0;
}

size_t jr_config_render(const struct jr_config *cfg, char *buf, size_t len)
{
    size_t used = 0;
#define PUT(...)                                                                  \
    do {                                                                          \
        int w = snprintf(buf + used, used < len ? len - used : 0, __VA_ARGS__);   \
        used += w > 0 ? (size_t)w : 0;                                            \
    } while (0)
    for (size_t i = 0; i < N_CONFIG_KEYS; i++) {
        const struct config_key *k = &config_keys[i];
        const char *field = (const char *)cfg + k->off;
        PUT("%s = ", k->name);
        switch (k->type) {
        case KEY_PATH:
        case KEY_CGROUP:
        case KEY_WORD:
            PUT("%s", field);
            break;
        case KEY_UIDS:
            for (size_t j = 0; j < cfg->n_allowed_callers; j++)
                PUT("%s%u", j ? " " : "", (unsigned)cfg->allowed_callers[j]);
            break;
        case KEY_NUMBER:
            PUT("%llu", load_number(field, k->size));
            break;
        }
        PUT("\n");
    }
#undef PUT
    return used;
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

/* The plan's first lines, in order: "KEY VALUE". */
enum plan_type {
    PLAN_VERSION, /* "1" */
    PLAN_NAME,    /* jr_valid_name */
    PLAN_ID,      /* a uid or gid, 0 to UID_LIMIT */
    PLAN_HOST,    /* jr_valid_hostname */
    PLAN_PATH,    /* valid_abs_path */
    PLAN_IMAGE,   /* 8 to 64 lower-case hex digits */
    PLAN_BOOL,    /* "0" or "1" */
    PLAN_NET,     /* "0" (none), "1" (host) or, issue 17, "private" (the tenant's own namespace) */
};

struct plan_key {
    const char *key;
    enum plan_type type;
    size_t off, size; /* the field in struct jr_plan */
};

#define PLAN_FIELD(f) offsetof(struct jr_plan, f), sizeof(((struct jr_plan *)0)->f)

static const struct plan_key plan_header[] = {
    {"version", PLAN_VERSION, 0, 0},
    {"name", PLAN_NAME, PLAN_FIELD(name)},
    {"uid", PLAN_ID, PLAN_FIELD(uid)},
    {"gid", PLAN_ID, PLAN_FIELD(gid)},
    {"hostname", PLAN_HOST, PLAN_FIELD(hostname)},
    {"home", PLAN_PATH, PLAN_FIELD(home)},
    {"root", PLAN_PATH, PLAN_FIELD(root)},
    {"image", PLAN_IMAGE, PLAN_FIELD(image)},
    {"net", PLAN_NET, PLAN_FIELD(net)},
};

static int set_plan_key(const struct plan_key *k, const char *v, struct jr_plan *plan, char *err, size_t errlen)
{
    char *field = (char *)plan + k->off;
    unsigned long long num;
    size_t n = strlen(v);
    switch (k->type) {
    case PLAN_VERSION:
        if (strcmp(v, "1") != 0)
            return fail(err, errlen, "unsupported plan version '%s'", v);
        return 0;
    case PLAN_NAME:
        if (!jr_valid_name(v) || n >= k->size)
            return fail(err, errlen, "invalid name '%s'", v);
        break;
    case PLAN_ID:
        if (jr_parse_number(v, UID_LIMIT, 0, &num) < 0)
            return fail(err, errlen, "invalid %s '%s'", k->key, v);
        store_number(field, k->size, num);
        return 0;
    case PLAN_HOST:
        if (!jr_valid_hostname(v) || n >= k->size)
            return fail(err, errlen, "invalid hostname '%s'", v);
        break;
    case PLAN_PATH:
        if (!valid_abs_path(v) || n >= k->size)
            return fail(err, errlen, "%s must be a normal absolute path, got '%s'", k->key, v);
        break;
    case PLAN_IMAGE:
        if (n < 8 || n > 64 || n >= k->size || strspn(v, "0123456789abcdef") != n)
            return fail(err, errlen, "invalid image id '%s'", v);
        break;
    case PLAN_BOOL: {
        if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
            return fail(err, errlen, "%s must be 0 or 1, got '%s'", k->key, v);
        int b = v[0] == '1';
        memcpy(field, &b, sizeof b);
        return 0;
    }
    case PLAN_NET: {
        int mode = strcmp(v, "0") == 0 ? JR_NET_NONE
                   : strcmp(v, "1") == 0 ? JR_NET_HOST
                   : strcmp(v, "private") == 0 ? JR_NET_PRIVATE : -1;
        if (mode < 0)
            return fail(err, errlen, "%s must be 0, 1 or private, got '%s'", k->key, v);
        memcpy(field, &mode, sizeof mode);
        return 0;
    }
    }
    memcpy(field, v, n + 1); /* the strings: n < k->size checked above */
    return 0;
}

/* Upper bounds of the resource lines: weights 1-10000, cpu_rate 4096 CPUs in milli-CPUs. */
static const unsigned long long resource_max[RES_COUNT] = {1ULL << 62, 1ULL << 62, 10000, 4096000, 10000, 1ULL << 62};

/* A `limit KEY N` line of a resource guarantee: 1 if it was one (and set), 0 if not, -1 on error. */
static int parse_resource(char **f, size_t nf, size_t lineno, struct jr_plan *plan, unsigned *seen, char *err,
                          size_t errlen)
{
    if (nf != 3 || strcmp(f[0], "limit") != 0)
        return 0;
    for (int r = 0; r < RES_COUNT; r++) {
        if (strcmp(f[1], jr_resource_names[r]) != 0)
            continue;
        if (*seen & (1u << r))
            return fail(err, errlen, "line %zu: limit %s given twice", lineno, f[1]);
        if (jr_parse_number(f[2], resource_max[r], 0, &plan->res[r]) < 0)
            return fail(err, errlen, "line %zu: invalid %s limit '%s'", lineno, f[1], f[2]);
        *seen |= 1u << r;
        return 1;
    }
    return fail(err, errlen, "line %zu: unknown limit '%s'", lineno, f[1]);
}

/* Issue 15, the default program: "exec ARG" (one per word, in order) and "env NAME=VALUE" (after
 * the first exec), ARG and VALUE percent-encoded (%XX, upper-case hex, for every byte that is not
 * printable ASCII other than space, and for '%'; never %00). Decoded into plan->prog_buf. */
static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static int decode_prog_word(const char *v, struct jr_plan *plan, size_t *at)
{
    size_t o = plan->prog_used;
    for (const char *p = v; *p; p++) {
        char c = *p;
        if (c == '%') {
            int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
            if (lo < 0 || (hi == 0 && lo == 0))
                return -1;
            c = (char)(hi * 16 + lo);
            p += 2;
        }
        if (o + 1 >= sizeof plan->prog_buf)
            return -2;
        plan->prog_buf[o++] = c;
    }
    plan->prog_buf[o++] = '\0';
    *at = plan->prog_used;
    plan->prog_used = o;
    return 0;
}

static int parse_prog_line(char **f, size_t nf, size_t lineno, struct jr_plan *plan, char *err, size_t errlen)
{
    int is_exec = strcmp(f[0], "exec") == 0;
    if (nf != 2)
        return fail(err, errlen, "line %zu: expected '%s %s'", lineno, f[0], is_exec ? "ARG" : "NAME=VALUE");
    if (!is_exec && (plan->n_prog == 0 || !jr_valid_env(f[1])))
        return fail(err, errlen, "line %zu: expected 'env NAME=VALUE' after an exec line, got '%.64s'", lineno, f[1]);
    if (is_exec && (plan->n_prog == JR_MAX_PROG_ARGS || plan->n_prog_env))
        return fail(err, errlen, "line %zu: more than %d exec lines, or one after an env line", lineno, JR_MAX_PROG_ARGS);
    if (!is_exec && plan->n_prog_env == JR_MAX_ENV)
        return fail(err, errlen, "line %zu: more than %d env lines", lineno, JR_MAX_ENV);
    size_t at;
    int r = decode_prog_word(f[1], plan, &at);
    if (r == -1)
        return fail(err, errlen, "line %zu: bad percent-encoding in '%.64s'", lineno, f[1]);
    if (r < 0)
        return fail(err, errlen, "line %zu: the default program is longer than %d bytes", lineno, JR_PROG_BUF);
    if (is_exec && plan->n_prog == 0 && !plan->prog_buf[at])
        return fail(err, errlen, "line %zu: empty program", lineno);
    if (is_exec)
        plan->prog[plan->n_prog++] = at;
    else
        plan->prog_env[plan->n_prog_env++] = at;
    return 0;
}

int jr_parse_plan(const char *text, size_t len, struct jr_plan *plan, char *err, size_t errlen)
{
    enum { N_HEADER = sizeof plan_header / sizeof plan_header[0] };
    char line[3 * JR_PATH_MAX];
    size_t lineno = 0;
    unsigned res_seen = 0;

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
            const struct plan_key *k = &plan_header[idx];
            if (nf != 2 || strcmp(f[0], k->key) != 0)
                return fail(err, errlen, "line %zu: expected '%s VALUE'", lineno, k->key);
            if (set_plan_key(k, f[1], plan, err, errlen) < 0)
                return -1;
        } else if (idx < N_HEADER + LIM_COUNT) {
            size_t li = idx - N_HEADER;
            if (nf != 3 || strcmp(f[0], "limit") != 0 || strcmp(f[1], jr_limit_names[li]) != 0)
                return fail(err, errlen, "line %zu: expected 'limit %s VALUE'", lineno, jr_limit_names[li]);
            if (jr_parse_number(f[2], INT_LIMIT, 0, &plan->limits[li]) < 0)
                return fail(err, errlen, "line %zu: invalid %s limit '%s'", lineno, jr_limit_names[li], f[2]);
        } else if (strcmp(f[0], "admin") == 0 && plan->n_mounts == 0 && !plan->admin) {
            /* Tenant root: after the limits, before the mounts, at most once. */
            unsigned long long base;
            if (nf != 2 || jr_parse_number(f[1], JR_ADMIN_ID_MAX + 1 - JR_ADMIN_COUNT, 0, &base) < 0 || base == 0)
                return fail(err, errlen, "line %zu: expected 'admin BASE' with BASE from 1 to %lu", lineno,
                            JR_ADMIN_ID_MAX + 1 - JR_ADMIN_COUNT);
            plan->admin = (unsigned long)base;
        } else if (strcmp(f[0], "volume") == 0 && plan->n_mounts == 0 && !plan->volume) {
            /* A volume-backed tenant: its filesystem image and where the mount step mounts it, after
             * the limits (and admin), before the mounts, at most once. jailrun needs no more than that
             * the planned mounts are in place (they bind from below the mount point). */
            if (nf != 3 || !valid_abs_path(f[1]) || !valid_abs_path(f[2]))
                return fail(err, errlen, "line %zu: expected 'volume IMAGE MOUNTPOINT' with absolute paths", lineno);
            plan->volume = 1;
        } else if (plan->n_mounts == 0 && (strcmp(f[0], "exec") == 0 || strcmp(f[0], "env") == 0)) {
            if (parse_prog_line(f, nf, lineno, plan, err, errlen) < 0)
                return -1;
        } else if (plan->n_mounts == 0 && nf == 3 && strcmp(f[0], "limit") == 0) {
            if (parse_resource(f, nf, lineno, plan, &res_seen, err, errlen) < 0)
                return -1;
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

enum { OPT_CWD = 256, OPT_ENV, OPT_TIMEOUT, OPT_CPU, OPT_MEM, OPT_PROCS, OPT_FSIZE, OPT_NOFILE, OPT_META, OPT_NET, OPT_USER };

int jr_parse_args(int argc, char **argv, struct jr_args *args, char *err, size_t errlen)
{
    static const struct option longopts[] = {
        {"cwd", required_argument, NULL, OPT_CWD},       {"env", required_argument, NULL, OPT_ENV},
        {"timeout", required_argument, NULL, OPT_TIMEOUT}, {"cpu", required_argument, NULL, OPT_CPU},
        {"mem", required_argument, NULL, OPT_MEM},       {"procs", required_argument, NULL, OPT_PROCS},
        {"fsize", required_argument, NULL, OPT_FSIZE},   {"nofile", required_argument, NULL, OPT_NOFILE},
        {"meta", required_argument, NULL, OPT_META},     {"net", no_argument, NULL, OPT_NET},
        {"user", required_argument, NULL, OPT_USER},
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
        case OPT_USER:
            if (!jr_valid_name(optarg) && jr_parse_number(optarg, JR_ADMIN_COUNT - 1, 0, &(unsigned long long){0}) < 0)
                return fail(err, errlen, "--user needs a user name or a uid from 0 to %lu, got '%s'", JR_ADMIN_COUNT - 1,
                            optarg);
            args->user = optarg;
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
    if (optind >= argc) {
        if (strcmp(argv[optind - 1], "--") == 0)
            return fail(err, errlen, "missing PROGRAM after '--' (usage: jailrun [options] NAME [[--] PROGRAM [ARGS...]])");
        return 0;   /* issue 15: no PROGRAM, the plan's default program (config.c, default_program) */
    }
    if (!*argv[optind])
        return fail(err, errlen, "empty PROGRAM");
    args->argv = argv + optind;
    return 0;
}
