/* LD_PRELOAD payload: leaves a marker if any process ever loads it. */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
__attribute__((constructor)) static void pwned(void)
{
    const char *m = "/tmp/jailrun-preload-marker";
    int fd = open(m, O_WRONLY | O_CREAT | O_APPEND, 0666);
    if (fd >= 0) { (void)!write(fd, "loaded\n", 7); close(fd); }
}
