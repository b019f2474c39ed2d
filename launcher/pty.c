/* --pty: the session's own terminal and the supervisor's relay (pty.h). */
#define _GNU_SOURCE
#include "pty.h"

#include "audit.h"
#include "files.h"
#include "jailrun.h"
#include "tree.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static struct termios saved;        /* the caller's terminal as it was */
static volatile sig_atomic_t raw_on;
static struct winsize size;         /* the caller's terminal's size at the start, for PID 1 */
static int sock[2] = {-1, -1};      /* the master goes from PID 1 [1] to the supervisor [0] */
static int master = -1, slave = -1;

static const char *what_fd0_is(void)
{
    struct stat st;
    if (fstat(0, &st) < 0)
        return "closed";
    if (S_ISFIFO(st.st_mode))
        return "a pipe";
    if (S_ISSOCK(st.st_mode))
        return "a socket";
    if (S_ISREG(st.st_mode))
        return "a file";
    if (S_ISCHR(st.st_mode))
        return "a device that is not a terminal";
    return "not a terminal";
}

void pty_check_caller(void)
{
    if (!isatty(0))
        die(EXIT_USAGE,
            "--pty needs a terminal on descriptor 0, which is %s (a web console gives jailrun a pseudo-terminal "
            "of its own: launcher/README.md, \"Consoles\")",
            what_fd0_is());
    if (tcgetattr(0, &saved) < 0)
        die_with_error(EXIT_USAGE, "--pty: cannot read the modes of the terminal on descriptor 0");
    if (ioctl(0, TIOCGWINSZ, &size) < 0 || size.ws_row == 0 || size.ws_col == 0) {
        memset(&size, 0, sizeof size);
        size.ws_row = 24;
        size.ws_col = 80;
    }
}

void pty_prepare(void)
{
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sock) < 0)
        die_with_error(EXIT_INTERNAL, "socketpair");
}

/* In PID 1, inside the jail (its /dev/pts is the session's fresh devpts
 * instance, which only this session sees), before it drops root: the tenant
 * owns the slave, as a login would give it to a user. */
void pty_open_in_jail(unsigned long uid, unsigned long gid)
{
    int unlock = 0;
    close(sock[0]);
    master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0)
        die_with_error(EXIT_INTERNAL, "--pty: cannot open /dev/pts/ptmx");
    if (ioctl(master, TIOCSPTLCK, &unlock) < 0)
        die_with_error(EXIT_INTERNAL, "--pty: cannot unlock the pseudo-terminal");
    slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave < 0)
        die_with_error(EXIT_INTERNAL, "--pty: cannot open the pseudo-terminal's slave");
    if (fchown(slave, (uid_t)uid, (gid_t)gid) < 0 || fchmod(slave, 0620) < 0)
        die_with_error(EXIT_INTERNAL, "--pty: cannot give the terminal to uid %lu", uid);
    if (ioctl(master, TIOCSWINSZ, &size) < 0)
        die_with_error(EXIT_INTERNAL, "--pty: cannot set the terminal's size");
    if (send_fd(sock[1], master) < 0)
        die_with_error(EXIT_INTERNAL, "--pty: cannot pass the terminal to the supervisor");
    close(master);
    close(sock[1]);
    master = -1;
}

void pty_attach(void)
{
    if (ioctl(slave, TIOCSCTTY, 0) < 0)
        die_with_error(EXIT_INTERNAL, "--pty: cannot make the terminal the program's controlling terminal");
    for (int fd = 0; fd <= 2; fd++)
        if (dup2(slave, fd) != fd)
            die_with_error(EXIT_INTERNAL, "--pty: dup2");
    close(slave);
}

void pty_receive(void)
{
    char byte;
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    memset(&u, 0, sizeof u);
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
    close(sock[1]);
    /* The program was executed, so PID 1 sent it before: never wait here. */
    ssize_t n = recvmsg(sock[0], &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    struct cmsghdr *c = n == 1 ? CMSG_FIRSTHDR(&msg) : NULL;
    if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
        die(EXIT_INTERNAL, "--pty: the session's terminal did not arrive");
    memcpy(&master, CMSG_DATA(c), sizeof master);
    close(sock[0]);
    if (fcntl(master, F_SETFL, O_NONBLOCK) < 0)
        die_with_error(EXIT_INTERNAL, "--pty: fcntl");
}

void pty_restore(void)
{
    if (raw_on) {
        raw_on = 0;
        tcsetattr(0, TCSADRAIN, &saved);
    }
}

static void raw_mode(void)
{
    struct termios t = saved;
    cfmakeraw(&t);
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    raw_on = 1;
    tcsetattr(0, TCSADRAIN, &t);
}

/* The caller's size onto the session's terminal: the kernel sends SIGWINCH to
 * its foreground process group when the size changes. */
static void resize(void)
{
    struct winsize ws;
    if (ioctl(0, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col)
        (void)ioctl(master, TIOCSWINSZ, &ws);
}

/* A signal that would end the supervisor (the caller may send any): the terminal first. */
static void fatal_signal(int sig)
{
    pty_restore();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void catch_fatal_signals(void)
{
    static const int fatal[] = {SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGPWR, SIGSYS, SIGTRAP, SIGXCPU, SIGXFSZ,
                                SIGSTKFLT, SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fatal_signal;
    sa.sa_flags = SA_RESETHAND;
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
        sigaction(fatal[i], &sa, NULL);
    for (int sig = SIGRTMIN; sig <= SIGRTMAX; sig++)
        sigaction(sig, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);   /* stdout closed by its reader: EPIPE, then the output is dropped */
}

/* What is left in the master once PID 1 is gone (its end took every holder of the slave). */
static void drain(int out_ok)
{
    char buf[16384];
    ssize_t n;
    while ((n = read(master, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
        if (n > 0 && out_ok && write_all(1, buf, (size_t)n) < 0)
            out_ok = 0;
}

int pty_relay(pid_t init, const sigset_t *set, const struct timespec *t0, unsigned long long wall_limit,
              int *timed_out, struct rusage *ru)
{
    char in[4096], out[16384];
    size_t in_len = 0, in_off = 0;
    int in_open = 1, master_open = 1, out_ok = 1, status;
    int sfd = signalfd(-1, set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        die_with_error(EXIT_INTERNAL, "signalfd");
    catch_fatal_signals();
    raw_mode();
    resize();
    for (;;) {
        struct pollfd p[3] = {
            {.fd = sfd, .events = POLLIN},
            {.fd = master_open ? master : -1, .events = POLLIN | (in_len ? POLLOUT : 0)},
            {.fd = in_open && !in_len && master_open ? 0 : -1, .events = POLLIN},
        };
        int timeout = -1;
        if (wall_limit && !*timed_out) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long long ms = (long long)wall_limit * 1000 -
                           ((now.tv_sec - t0->tv_sec) * 1000LL + (now.tv_nsec - t0->tv_nsec) / 1000000);
            timeout = ms <= 0 ? 0 : ms > 3600000 ? 3600000 : (int)ms + 1;
        }
        int n = poll(p, 3, timeout);
        if (n < 0 && errno != EINTR)
            die_with_error(EXIT_INTERNAL, "poll");
        if (n == 0 && timeout >= 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if ((now.tv_sec - t0->tv_sec) * 1000000000LL + (now.tv_nsec - t0->tv_nsec) >=
                (long long)wall_limit * 1000000000LL) {
                *timed_out = 1;
                kill(init, SIGKILL);    /* PID 1 gone: the kernel kills the whole session */
            }
            continue;
        }
        if (n <= 0)
            continue;
        if (p[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                int sig = (int)si.ssi_signo;
                if (sig == SIGCHLD) {
                    if (wait4(init, &status, WNOHANG, ru) == init) {
                        if (master_open)
                            drain(out_ok);
                        close(sfd);
                        pty_restore();
                        return status;
                    }
                } else if (sig == SIGWINCH) {
                    if (master_open)
                        resize();
                } else {
                    if (sig == SIGCONT) {   /* stopped and continued: the caller's shell took its terminal back */
                        raw_mode();
                        if (master_open)
                            resize();
                    }
                    kill(init, sig);
                }
            }
        }
        if (p[1].revents & POLLIN) {
            ssize_t got = read(master, out, sizeof out);
            if (got > 0 && out_ok && write_all(1, out, (size_t)got) < 0)
                out_ok = 0;     /* nobody reads the output any more: drop it, keep the session going */
        } else if (p[1].revents & (POLLHUP | POLLERR)) {
            master_open = 0;    /* nothing holds the slave: wait for PID 1 */
        }
        if (in_len && (p[1].revents & POLLOUT)) {
            ssize_t put = write(master, in + in_off, in_len);
            if (put > 0) {
                in_off += (size_t)put;
                in_len -= (size_t)put;
                if (!in_len)
                    in_off = 0;
            }
        }
        if (p[2].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t got = read(0, in, sizeof in);
            if (got > 0) {
                in_len = (size_t)got;
            } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
                /* The caller's terminal hung up: so does the session's (SIGHUP to its programs). */
                in_open = 0;
                close(master);
                master_open = 0;
            }
        }
    }
}
