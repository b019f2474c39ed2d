/* cmount SOURCE TARGET FLAGS [SOURCE TARGET FLAGS]...: the floor of a mount step written in C:
 * each triple is a bind mount(2) of SOURCE on TARGET, then, when FLAGS (MS_* bits, decimal) is
 * not 0, a bind remount with them. No checks, no plan parsing: what a C step reading the plan
 * would at least cost (its spawn and its mount calls). Bench only (bench/launch). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>

int main(int argc, char **argv)
{
    if (argc < 4 || (argc - 1) % 3 != 0)
        return 2;
    for (int i = 1; i < argc; i += 3) {
        unsigned long flags = strtoul(argv[i + 2], NULL, 10);
        if (mount(argv[i], argv[i + 1], NULL, MS_BIND, NULL) != 0) {
            perror(argv[i + 1]);
            return 1;
        }
        if (flags && mount(NULL, argv[i + 1], NULL, MS_REMOUNT | MS_BIND | flags, NULL) != 0) {
            perror(argv[i + 1]);
            return 1;
        }
    }
    return 0;
}
