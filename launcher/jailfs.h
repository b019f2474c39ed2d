/* Inside: the jail's filesystem, built in a copy of the template namespace. */
#ifndef JAILRUN_JAILFS_H
#define JAILRUN_JAILFS_H

/* Enter a copy of the template namespace, attach the jail's tree (tree_fd, or
 * received on tree_sock when -1), a read-only /proc, the session's /dev and
 * the optional IPC directory, and pivot into it. shm_size: /dev/shm's cap in
 * bytes, 0 for half of RAM. */
void enter_jail_fs(int mntns_fd, int tree_fd, int tree_sock, int ipc_fd, int ipc_self_fd, const char *ipc_path,
                   unsigned long long shm_size);

#endif
