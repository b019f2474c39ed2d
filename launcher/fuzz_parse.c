/* libFuzzer target for jailrun's parsers: config, plan and command line.
 * The first byte picks the parser; the rest is its input. An accepted config
 * must read back the same from its rendering (jr_config_render). */
#include "parse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct jr_config cfg;
    static struct jr_plan plan;
    char err[JR_ERR_MAX];
    if (size < 1 || size > JR_MAX_FILE)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    switch (data[0] % 3) {
    case 0:
        /* An accepted config renders to text that parses to the same config. */
        if (jr_parse_config(text, len, &cfg, err, sizeof err) == 0) {
            static char rendered[16384];
            static struct jr_config again;
            size_t n = jr_config_render(&cfg, rendered, sizeof rendered);
            if (n >= sizeof rendered || jr_parse_config(rendered, n, &again, err, sizeof err) < 0 ||
                memcmp(&again, &cfg, sizeof cfg) != 0)
                abort();
        }
        break;
    case 1:
        jr_parse_plan(text, len, &plan, err, sizeof err);
        break;
    default: {
        /* NUL-separated words become argv. */
        char *copy = malloc(len + 1);
        char *argv[66];
        int argc = 0;
        if (!copy)
            return 0;
        memcpy(copy, text, len);
        copy[len] = '\0';
        argv[argc++] = "jailrun";
        for (size_t i = 0; i < len && argc < 65;) {
            argv[argc++] = copy + i;
            i += strlen(copy + i) + 1;
        }
        argv[argc] = NULL;
        struct jr_args a;
        jr_parse_args(argc, argv, &a, err, sizeof err);
        free(copy);
    }
    }
    return 0;
}
