/* C tests of jailrun's parsers (make check). Each CHECK names what it pins. */
#define _GNU_SOURCE
#include "parse.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures, checks;

#define CHECK(cond, what)                                              \
    do {                                                               \
        checks++;                                                      \
        if (!(cond)) {                                                 \
            failures++;                                                \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, what); \
        }                                                              \
    } while (0)

static const char *PLAN =
    "version 1\nname alice\nuid 10001\ngid 10001\nhostname alice\nhome /home/alice\nroot /srv/jails/alice\n"
    "image 0123456789abcdef\nnet 0\nlimit cpu 60\nlimit mem 536870912\nlimit procs 64\nlimit fsize 1073741824\n"
    "limit nofile 256\nlimit wall 0\nmount / bind /img/rootfs ro,nosuid,nodev\n"
    "mount /home bind /t/alice/home nosuid,nodev\nmount /etc/passwd bind /t/alice/etc/passwd ro,nosuid,nodev\n";

static int parse_plan_text(const char *text, struct jr_plan *plan, char *err)
{
    return jr_parse_plan(text, strlen(text), plan, err, JR_ERR_MAX);
}

static int plan_with(const char *replace, const char *with, char *err)
{
    static char buf[8192];
    struct jr_plan plan;
    const char *at = strstr(PLAN, replace);
    if (!at)
        return 99;
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - PLAN), PLAN, with, at + strlen(replace));
    return parse_plan_text(buf, &plan, err);
}

static int args(struct jr_args *a, char *err, ...)
{
    static char *argv[64];
    va_list ap;
    int argc = 0;
    argv[argc++] = "jailrun";
    va_start(ap, err);
    for (char *s; (s = va_arg(ap, char *)) != NULL && argc < 63;)
        argv[argc++] = s;
    va_end(ap);
    argv[argc] = NULL;
    return jr_parse_args(argc, argv, a, err, JR_ERR_MAX);
}

int main(void)
{
    char err[JR_ERR_MAX];
    struct jr_config cfg;
    struct jr_plan plan;
    struct jr_args a;
    unsigned long long v;

    /* names: the modules' one pattern */
    CHECK(jr_valid_name("alice") && jr_valid_name("_x") && jr_valid_name("a-b_9"), "valid names pass");
    CHECK(!jr_valid_name("../x") && !jr_valid_name("") && !jr_valid_name("Alice") && !jr_valid_name("1a") &&
              !jr_valid_name("a/b") && !jr_valid_name("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
          "bad names ('../x', empty, upper case, digit first, slash, 33 chars) are refused");

    /* numbers: strict, bounded, no sign or space */
    CHECK(jr_parse_number("10", 100, 0, &v) == 0 && v == 10, "a plain number");
    CHECK(jr_parse_number("64M", ~0ULL, 1, &v) == 0 && v == 64ULL << 20, "units");
    CHECK(jr_parse_number("-1", ~0ULL, 0, &v) < 0 && jr_parse_number(" 1", ~0ULL, 0, &v) < 0 &&
              jr_parse_number("1x", ~0ULL, 0, &v) < 0 && jr_parse_number("", ~0ULL, 0, &v) < 0 &&
              jr_parse_number("101", 100, 0, &v) < 0 && jr_parse_number("99999999999999999999999", ~0ULL, 0, &v) < 0 &&
              jr_parse_number("16777216T", ~0ULL, 1, &v) < 0,
          "signs, spaces, junk, empty, above max, overflow and unit overflow are refused");

    /* limits only tighten */
    CHECK(jr_effective_limit(64, JR_UNSET, &v) == 0 && v == 64, "unset option keeps the plan's limit");
    CHECK(jr_effective_limit(64, 10, &v) == 0 && v == 10, "a lower option tightens");
    CHECK(jr_effective_limit(64, 65, &v) < 0, "a higher option is refused");
    CHECK(jr_effective_limit(0, 65, &v) == 0 && v == 65, "an unlimited plan takes the option");
    CHECK(jr_effective_limit(64, 0, &v) < 0, "asking for unlimited above a plan limit is refused");
    CHECK(args(&a, err, "--mem", "0", "alice", "true", NULL) < 0, "--mem 0 (unlimited) is refused");

    /* config (the shared corpus, tests/config-corpus, holds C and Python to the same answers) */
    const char *conf = "# c\nimages_dir = /var/lib/jailyard/images\nallowed_callers = 0 33\nuid_min = 10000\n";
    CHECK(jr_parse_config(conf, strlen(conf), &cfg, err, sizeof err) == 0 && cfg.n_allowed_callers == 2 &&
              cfg.allowed_callers[1] == 33 && cfg.uid_min == 10000,
          "a config parses");
    const char *bad_conf[] = {"colour = blue\n", "images_dir = relative\n", "allowed_callers = root\n",
                              "uid_min = -5\n", "images_dir /x\n", "uid_min = 5\nuid_max = 4\n",
                              "uid_min = 0\n", "uid_min = 1\nuid_min = 1\n", "# \f\nuid_min = 20000\n",
                              "# caf\xe9\n", "uid_min = 2\r\n", "default_procs = \xc2\xb2\n",
                              "jails_dir = /srv/../etc\n", "cgroup_name = -_-\n",
                              "net_pool4 = 10.0.0.0/8 x\n", "net_host = 2\n", "net_dns = 1;2\n"};
    for (size_t i = 0; i < sizeof bad_conf / sizeof bad_conf[0]; i++) {
        int r = jr_parse_config(bad_conf[i], strlen(bad_conf[i]), &cfg, err, sizeof err);
        CHECK(r < 0 && err[0] && !strchr(err, '\n'), bad_conf[i]);
    }
    const char nul_conf[] = "uid_min = 1\0000\n";
    CHECK(jr_parse_config(nul_conf, sizeof nul_conf - 1, &cfg, err, sizeof err) < 0, "a NUL byte is refused");
    CHECK(jr_parse_config("jails_dir = /a\tb\n", 16, &cfg, err, sizeof err) < 0 && !strchr(err, '\t') &&
              strstr(err, "'/a\\tb'"),
          "a tab in a refused value is shown as \\t: the message stays one line");

    /* config defaults: the key table's, the same as an empty file's, and render() reads back */
    static char text[8192], again[8192];
    struct jr_config defaults, parsed;
    jr_config_defaults(&defaults);
    CHECK(defaults.uid_min == 10000 && defaults.uid_max == 59999 && defaults.n_allowed_callers == 2 &&
              defaults.allowed_callers[1] == 33 && defaults.defaults[LIM_MEM] == 512ULL << 20 &&
              defaults.defaults[LIM_WALL] == 0 && strcmp(defaults.cgroup_name, "jailyard") == 0 &&
              strcmp(defaults.jails_dir, "/srv/jails") == 0,
          "built-in defaults");
    CHECK(jr_parse_config("", 0, &parsed, err, sizeof err) == 0 && memcmp(&parsed, &defaults, sizeof parsed) == 0,
          "an empty config is the built-in defaults");
    const char *full = "images_dir = /i\ntenants_dir = /t\njails_dir = /j\nrun_dir = /r\nmount_helper = /m\n"
                       "python = /p\nlib_dir = /l\nallowed_callers = 0 33 1000\nuid_min = 1\nuid_max = 4294967294\n"
                       "cgroup_name = c-g_1\ndefault_cpu = 1\ndefault_mem = 2\ndefault_procs = 3\n"
                       "default_fsize = 4\ndefault_nofile = 5\ndefault_wall = 6\n"
                       "net_bridge = br1\nnet_pool4 = 10.1.0.0/16\nnet_pool6 = fd00::/64\nnet_dns = 10.1.0.1,fd00::1\n"
                       "net_egress = route\nnet_host = 1\ndisk_backend = volume\nipc_path = /run/x\n";
    size_t n = 0;
    CHECK(jr_parse_config(full, strlen(full), &parsed, err, sizeof err) == 0 &&
              (n = jr_config_render(&parsed, text, sizeof text)) == strlen(full) && strcmp(text, full) == 0,
          "every key set: render() writes the file back as it was");
    CHECK(jr_parse_config(text, n, &cfg, err, sizeof err) == 0 &&
              jr_config_render(&cfg, again, sizeof again) == n && strcmp(again, text) == 0,
          "render() output parses to the same config");
    CHECK(jr_config_render(&parsed, text, 10) == n && strlen(text) == 9, "render() into a short buffer truncates");

    /* plan */
    CHECK(parse_plan_text(PLAN, &plan, err) == 0, "the reference plan parses");
    CHECK(plan.uid == 10001 && plan.n_mounts == 3 && plan.limits[LIM_MEM] == 536870912 &&
              (plan.mounts[0].flags & JR_MNT_RO) && strcmp(plan.mounts[1].target, "/home") == 0,
          "plan fields land where they belong");
    CHECK(plan_with("uid 10001", "uid 10001x", err) < 0, "a malformed uid is refused");
    CHECK(plan_with("mount /home bind", "mount home bind", err) < 0, "a relative mount target is refused");
    CHECK(plan_with("mount /home bind", "mount /home/../etc bind", err) < 0, "'..' in a mount target is refused");
    CHECK(plan_with("version 1", "version 2", err) < 0, "an unknown plan version is refused");
    /* Resource guarantees (issue 16): optional limit lines between the six and the mounts. */
    {
        static char buf[8192];
        struct jr_plan rp;
        const char *at = strstr(PLAN, "mount / ");
        snprintf(buf, sizeof buf, "%.*slimit cpu_rate 500\nlimit cpu_weight 200\nlimit disk 1048576\n%s",
                 (int)(at - PLAN), PLAN, at);
        CHECK(parse_plan_text(buf, &rp, err) == 0 && rp.res[RES_CPU_RATE] == 500 && rp.res[RES_CPU_WEIGHT] == 200 &&
                  rp.res[RES_DISK] == 1048576 && rp.res[RES_MEMSW] == 0,
              "resource limit lines are read into res[]");
        CHECK(parse_plan_text(PLAN, &rp, err) == 0 && rp.res[RES_CPU_WEIGHT] == 0, "a plan without them still parses");
    }
    CHECK(plan_with("mount / ", "limit cpu_weight 10001\nmount / ", err) < 0, "a cpu_weight above 10000 is refused");
    CHECK(plan_with("mount / ", "limit disk 1\nlimit disk 2\nmount / ", err) < 0, "a resource limit given twice is refused");
    CHECK(plan_with("mount / ", "limit bogus 1\nmount / ", err) < 0 && strstr(err, "bogus"), "an unknown limit is refused by name");
    CHECK(plan_with("mount /home ", "limit disk 1\nmount /home ", err) < 0, "a limit line after a mount is refused");
    CHECK(plan_with("net 0", "net 0\nevil 1", err) < 0, "an unknown key is refused");
    CHECK(plan_with("hostname alice", "hostname ali ce", err) < 0, "a bad hostname is refused");
    CHECK(plan_with("name alice", "name ../x", err) < 0, "a bad name in the plan is refused");
    CHECK(plan_with("net 0", "net 2", err) < 0, "net is 0, 1 or private");
    CHECK(plan_with("net 0", "net Private", err) < 0, "net private is lower-case");
    {
        static char buf[8192];
        const char *at = strstr(PLAN, "net 0");
        snprintf(buf, sizeof buf, "%.*snet private%s", (int)(at - PLAN), PLAN, at + 5);
        CHECK(parse_plan_text(buf, &plan, err) == 0 && plan.net == JR_NET_PRIVATE, "net private (issue 17)");
        CHECK(plan_with("net 0", "net 1", err) == 0, "net 1: an old plan's host network still parses");
    }
    CHECK(plan_with("image 0123456789abcdef", "image 0123456789ABCDEF", err) < 0, "an image id is lower-case hex");
    CHECK(plan_with("home /home/alice", "home /home/alice/", err) < 0, "home in normal form");
    CHECK(plan_with("gid 10001", "gid 4294967295", err) < 0, "gid (gid_t)-1 is refused");
    CHECK(plan_with("uid 10001\ngid 10001", "gid 10001\nuid 10001", err) < 0, "header lines in their order");
    CHECK(parse_plan_text(PLAN, &plan, err) == 0 && plan.gid == 10001 && plan.net == 0 &&
              strcmp(plan.hostname, "alice") == 0 && strcmp(plan.root, "/srv/jails/alice") == 0 &&
              strcmp(plan.image, "0123456789abcdef") == 0,
          "the plan's header lands in its fields");
    /* --user (admin tenants; the launcher refuses it for a plain tenant) */
    {
        struct jr_args ua;
        CHECK(args(&ua, err, "--user", "www-data", "alice", "id", NULL) == 0 && strcmp(ua.user, "www-data") == 0,
              "--user NAME is taken");
        CHECK(args(&ua, err, "--user", "0", "alice", "id", NULL) == 0 && strcmp(ua.user, "0") == 0, "--user 0 is taken");
        CHECK(args(&ua, err, "--user", "65536", "alice", "id", NULL) < 0, "--user past the namespace's ids is refused");
        CHECK(args(&ua, err, "--user", "Bad/Name", "alice", "id", NULL) < 0, "--user with a bad name is refused");
        CHECK(args(&ua, err, "alice", "id", NULL) == 0 && ua.user == NULL, "no --user: NULL");
    }
    /* tenant root: an optional "admin BASE" line between the limits and the mounts */
    CHECK(parse_plan_text(PLAN, &plan, err) == 0 && plan.admin == 0, "a plan without an admin line is a plain tenant's");
    {
        char buf[4096];
        const char *cut = strstr(PLAN, "mount ");
        snprintf(buf, sizeof buf, "%.*sadmin 1002424320\n%s", (int)(cut - PLAN), PLAN, cut);
        CHECK(parse_plan_text(buf, &plan, err) == 0 && plan.admin == 1002424320UL, "the admin line lands in admin");
        snprintf(buf, sizeof buf, "%.*sadmin 4294901760\n%s", (int)(cut - PLAN), PLAN, cut);
        CHECK(parse_plan_text(buf, &plan, err) < 0, "an admin range past the last id is refused");
        snprintf(buf, sizeof buf, "%.*sadmin 0\n%s", (int)(cut - PLAN), PLAN, cut);
        CHECK(parse_plan_text(buf, &plan, err) < 0, "admin 0 is refused");
        snprintf(buf, sizeof buf, "%.*sadmin 1002424320\nadmin 1002424320\n%s", (int)(cut - PLAN), PLAN, cut);
        CHECK(parse_plan_text(buf, &plan, err) < 0, "a second admin line is refused");
        snprintf(buf, sizeof buf, "%sadmin 1002424320\n", PLAN);
        CHECK(parse_plan_text(buf, &plan, err) < 0, "an admin line after the mounts is refused");
    }
    /* a volume-backed tenant: an optional "volume IMAGE MOUNTPOINT" line after the limits (and admin), before the mounts */
    CHECK(parse_plan_text(PLAN, &plan, err) == 0 && plan.volume == 0, "a plan without a volume line has no volume");
    {
        char buf[4096];
        const char *cut = strstr(PLAN, "mount ");
        snprintf(buf, sizeof buf, "%.*svolume /t/alice/volume.img /t/alice/vol\n%s", (int)(cut - PLAN), PLAN, cut);
        CHECK(parse_plan_text(buf, &plan, err) == 0 && plan.volume == 1, "the volume line is accepted");
        snprintf(buf, sizeof buf, "%.*sadmin 1002424320\nvolume /t/a.img /t/vol\n%s", (int)(cut - PLAN), PLAN, cut);
        CHECK(parse_plan_text(buf, &plan, err) == 0 && plan.volume == 1 && plan.admin, "admin, then volume");
        snprintf(buf, sizeof buf, "%.*svolume t/a.img /t/vol\n%s", (int)(cut - PLAN), PLAN, cut);
        CHECK(parse_plan_text(buf, &plan, err) < 0, "a relative volume image is refused");
        snprintf(buf, sizeof buf, "%.*svolume /t/a.img /t/../vol\n%s", (int)(cut - PLAN), PLAN, cut);
        CHECK(parse_plan_text(buf, &plan, err) < 0, "a mount point with .. is refused");
        snprintf(buf, sizeof buf, "%.*svolume /t/a.img\n%s", (int)(cut - PLAN), PLAN, cut);
        CHECK(parse_plan_text(buf, &plan, err) < 0, "a volume line without its mount point is refused");
        snprintf(buf, sizeof buf, "%.*svolume /a /b\nvolume /a /b\n%s", (int)(cut - PLAN), PLAN, cut);
        CHECK(parse_plan_text(buf, &plan, err) < 0, "a second volume line is refused");
        snprintf(buf, sizeof buf, "%svolume /a /b\n", PLAN);
        CHECK(parse_plan_text(buf, &plan, err) < 0, "a volume line after the mounts is refused");
    }

    /* issue 15: the default program, "exec" and "env" lines after the limits, before the mounts */
    {
        static char buf[8192];
        const char *cut = strstr(PLAN, "mount /");
        snprintf(buf, sizeof buf, "%.*sexec /usr/bin/python3\nexec -c\nexec print(%%22a%%20b%%25%%22)\nenv GREETING=hi%%20there\n%s",
                 (int)(cut - PLAN), PLAN, cut);
        int ok = parse_plan_text(buf, &plan, err) == 0;
        CHECK(ok && plan.n_prog == 3 && plan.n_prog_env == 1 && strcmp(plan.prog_buf + plan.prog[0], "/usr/bin/python3") == 0 &&
                  strcmp(plan.prog_buf + plan.prog[2], "print(\"a b%\")") == 0 &&
                  strcmp(plan.prog_buf + plan.prog_env[0], "GREETING=hi there") == 0,
              "exec and env lines are decoded in order");
        CHECK(parse_plan_text(PLAN, &plan, err) == 0 && plan.n_prog == 0, "a plan without exec lines has no default program");
        static const char *const bad[] = {
            "env A=b\n",                 /* env before any exec */
            "exec /bin/true\nenv 1A=b\n", /* a bad variable name */
            "exec /bin/true\nenv A\n",    /* no '=' */
            "exec a%2\n",                /* a short escape */
            "exec a%zz\n",               /* not hex */
            "exec a%2f\n",               /* lower-case hex */
            "exec a%00b\n",              /* NUL */
            "exec a b\n",                /* two fields */
            "exec /bin/true\nenv A=1\nexec x\n", /* exec after env */
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            snprintf(buf, sizeof buf, "%.*s%s%s", (int)(cut - PLAN), PLAN, bad[i], cut);
            CHECK(parse_plan_text(buf, &plan, err) < 0, bad[i]);
        }
        snprintf(buf, sizeof buf, "%sexec /bin/true\n", PLAN);
        CHECK(parse_plan_text(buf, &plan, err) < 0, "an exec line after the mounts is refused");
        /* 65 words: one more than JR_MAX_PROG_ARGS */
        size_t o = (size_t)snprintf(buf, sizeof buf, "%.*s", (int)(cut - PLAN), PLAN);
        for (int i = 0; i <= JR_MAX_PROG_ARGS; i++)
            o += (size_t)snprintf(buf + o, sizeof buf - o, "exec x\n");
        snprintf(buf + o, sizeof buf - o, "%s", cut);
        CHECK(parse_plan_text(buf, &plan, err) < 0, "more than JR_MAX_PROG_ARGS words are refused");
    }

    /* command line */
    CHECK(args(&a, err, "alice", "--", "/bin/true", NULL) == 0 && strcmp(a.name, "alice") == 0 &&
              strcmp(a.argv[0], "/bin/true") == 0,
          "NAME -- PROGRAM");
    CHECK(args(&a, err, "--timeout", "5", "--mem", "64M", "--env", "TERM=xterm", "alice", "sh", "-c", "x", NULL) == 0 &&
              a.limits[LIM_WALL] == 5 && a.limits[LIM_MEM] == 64ULL << 20 && a.n_env == 1 &&
              strcmp(a.argv[2], "x") == 0,
          "options before NAME; the program's own options stay its own");
    CHECK(args(&a, err, "--timeout", "-1", "alice", "true", NULL) < 0, "a negative timeout is refused");
    CHECK(args(&a, err, "--env", "NOEQUALS", "alice", "true", NULL) < 0, "--env without '=' is refused");
    CHECK(args(&a, err, "--env", "BAD-NAME=x", "alice", "true", NULL) < 0, "--env with a bad name is refused");
    CHECK(args(&a, err, "--bogus", "alice", "true", NULL) < 0, "an unknown option is refused");
    /* issue 15: no PROGRAM is the plan's default program; "--" with nothing after it is still refused */
    CHECK(args(&a, err, "alice", NULL) == 0 && a.argv == NULL && strcmp(a.name, "alice") == 0,
          "NAME alone asks for the default program");
    CHECK(args(&a, err, "alice", "--", NULL) < 0, "'--' with no program after it is refused");
    CHECK(args(&a, err, "--help", NULL) == 0 && a.help, "--help");

    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
