/* parse_check FILE: run jailrun's config parser over FILE (no trust checks:
 * those are jailrun's load_config). Prints the config as Config.render()
 * writes it and exits 0, or prints the refusal and exits 1; 2 if FILE cannot
 * be read. The shared corpus test (tests/integration/test_config_corpus.py)
 * holds it and the Python parser to the same answers. */
#include "parse.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    static char text[JR_MAX_FILE + 2];
    static char out[64 * 1024];
    char err[JR_ERR_MAX];
    struct jr_config cfg;
    if (argc != 2) {
        fprintf(stderr, "usage: parse_check FILE\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    size_t n = fread(text, 1, sizeof text - 1, f);  /* one byte more than a config may have */
    if (ferror(f)) {
        perror(argv[1]);
        return 2;
    }
    fclose(f);
    if (jr_parse_config(text, n, &cfg, err, sizeof err) < 0) {
        fprintf(stderr, "refused: %s\n", err);
        return 1;
    }
    size_t len = jr_config_render(&cfg, out, sizeof out);
    if (len >= sizeof out)
        return 2;
    fputs(out, stdout);
    return 0;
}
