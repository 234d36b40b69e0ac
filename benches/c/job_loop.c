/* job_loop COUNT DIR SOCKET PROGRAM...: the whole job, COUNT times, as the C limit: spawn PROGRAM
 * as spawn_serial does (pipes, own process group), read both pipes to EOF, waitpid; then what the
 * files processor does (temporary file O_EXCL, fchmod, write the output, close, rename) and what the
 * syslog processor does (one datagram on a connected unix socket). No store: C has no SQLite here.
 * Prints "seconds=S" for the loop (start-up not counted). */
#include "common.h"
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    long count = atol(argv[1]);
    const char *dir = argv[2];
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, argv[3], sizeof addr.sun_path - 1);
    if (connect(sock, (struct sockaddr *)&addr, sizeof addr)) die("connect");
    static char buf[65536];
    char tmp[4096], dst[4096], msg[512];
    double t0 = now_s();
    for (long i = 0; i < count; i++) {
        int out, err, status;
        pid_t pid = spawn_piped(&argv[4], devnull, &out, &err);
        long long got = drain(out, buf, sizeof buf);
        drain(err, buf, sizeof buf);
        close(out);
        close(err);
        if (waitpid(pid, &status, 0) < 0) die("waitpid");
        snprintf(tmp, sizeof tmp, "%s/.%ld-node.log.tmp", dir, i);
        snprintf(dst, sizeof dst, "%s/%ld-node.log", dir, i);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 || fchmod(fd, 0644) || write(fd, buf, got) != got || close(fd) || rename(tmp, dst))
            die(tmp);
        int len = snprintf(msg, sizeof msg, "<78>Jan  2 15:04:05 dkron[%d]: job=bench key=%ld exit=%d\n",
                           (int)getpid(), i, WEXITSTATUS(status));
        if (send(sock, msg, len, 0) != len) die("send");
    }
    printf("seconds=%.9f\n", now_s() - t0);
    return 0;
}
