/* sendto_loop SOCKET COUNT MESSAGE: COUNT datagrams on one connected unix datagram socket, as a
 * syslog client writes them. Prints "seconds=S" for the loop (start-up not counted). */
#include "common.h"
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    long count = atol(argv[2]);
    const char *msg = argv[3];
    size_t len = strlen(msg);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr)) die("connect");
    double t0 = now_s();
    for (long i = 0; i < count; i++)
        if (send(fd, msg, len, 0) != (ssize_t)len) die("send");
    printf("seconds=%.9f\n", now_s() - t0);
    return 0;
}
