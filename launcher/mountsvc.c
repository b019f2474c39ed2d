/* Asking the mount service (mountsvc.h). What jailrun trusts: a socket in the
 * root-owned run_dir, owned by root, mode 0600, whose peer runs as root
 * (SO_PEERCRED); the service may only make the launch fail, never enter a
 * wrong tree, because the caller checks the plan's mounts itself afterwards
 * (open_if_mounted) exactly as after the step. */
#define _GNU_SOURCE
#include "mountsvc.h"

#include "audit.h"
#include "tree.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

int mount_service_ask(const struct launch *l, int lock)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int n = snprintf(addr.sun_path, sizeof addr.sun_path, "%s/%s", l->cfg.run_dir, MOUNT_SERVICE_SOCKET);
    if (n < 0 || (size_t)n >= sizeof addr.sun_path)
        return -1;
    struct stat st;
    if (lstat(addr.sun_path, &st) < 0 || !S_ISSOCK(st.st_mode) || st.st_uid != 0 || (st.st_mode & 077))
        return -1;
    /* Non-blocking connect: a full backlog means a busy service, and then the step is faster. */
    int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (sock < 0)
        return -1;
    struct ucred peer;
    socklen_t len = sizeof peer;
    if (connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &peer, &len) < 0 || peer.uid != 0 ||
        fcntl(sock, F_SETFL, 0) < 0)
        goto no_service;
    struct timeval tv = {.tv_sec = MOUNT_SERVICE_TIMEOUT};
    if (setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
        setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0)
        goto no_service;
    /* One packet: the name, and the lock as SCM_RIGHTS (the service locks it too: same open file). */
    if (send_with_fd(sock, lock, l->args.name, strlen(l->args.name)) < 0)
        goto no_service;
    return sock;
no_service:
    close(sock);
    return -1;
}

int mount_service_answer(int sock, const char *name)
{
    char answer[2];
    ssize_t n;
    while ((n = recv(sock, answer, sizeof answer, 0)) < 0 && errno == EINTR)
        ;
    int timed_out = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    close(sock);
    if (timed_out)
        die(EXIT_MOUNT, "the mount service did not answer for '%s' within %d s", name, MOUNT_SERVICE_TIMEOUT);
    return n == 1 && answer[0] == 0 ? 0 : -1;
}
