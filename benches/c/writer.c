/* writer SIZE: writes SIZE bytes to stdout in 64 KiB writes: the job of the capture benchmarks. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    long long left = atoll(argv[1]);
    static char buf[65536];
    memset(buf, 'x', sizeof buf);
    while (left > 0) {
        size_t n = left < (long long)sizeof buf ? (size_t)left : sizeof buf;
        ssize_t w = write(1, buf, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return 1;
        }
        left -= w;
    }
    return 0;
}
