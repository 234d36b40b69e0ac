/* files_loop DIR FIRST COUNT SIZE: what the files processor does per execution, COUNT times:
 * open a hidden temporary file O_EXCL, fchmod 0644, write SIZE bytes, close, rename into place
 * as DIR/<i>-node.log. Prints "seconds=S" for the loop (start-up not counted). */
#include "common.h"
#include <string.h>
#include <sys/stat.h>

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    const char *dir = argv[1];
    long first = atol(argv[2]), n = atol(argv[3]), size = atol(argv[4]);
    char *buf = malloc(size ? size : 1), tmp[4096], dst[4096];
    memset(buf, 'x', size);
    double t0 = now_s();
    for (long i = first; i < first + n; i++) {
        snprintf(tmp, sizeof tmp, "%s/.%ld-node.log.tmp", dir, i);
        snprintf(dst, sizeof dst, "%s/%ld-node.log", dir, i);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 || fchmod(fd, 0644) || write(fd, buf, size) != size || close(fd) || rename(tmp, dst))
            die(tmp);
    }
    printf("seconds=%.9f\n", now_s() - t0);
    return 0;
}
