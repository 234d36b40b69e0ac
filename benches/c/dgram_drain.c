/* dgram_drain SOCKET: binds a unix datagram socket, prints "ready", then reads and drops every
 * datagram until killed: the syslog receiver of the benchmarks. In C, with recvmmsg, so the
 * receiver is never what the senders wait on (Linux queues only max_dgram_qlen datagrams, often 10). */
#include "common.h"
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#define BATCH 64

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int rcvbuf = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
    unlink(argv[1]);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr)) die("bind");
    printf("ready\n");
    fflush(stdout);
    static char bufs[BATCH][65536];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = sizeof bufs[i];
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    for (;;)
        if (recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL) < 0 && errno != EINTR) die("recvmmsg");
}
