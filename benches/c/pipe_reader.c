/* pipe_reader COUNT PROGRAM [ARGS...]: runs PROGRAM COUNT times, as spawn_serial does, reading
 * its stdout through a 64 KiB buffer and keeping nothing (the physical limit of capture).
 * Prints "seconds=S bytes=B rss_before_kb=K rss_after_kb=K". */
#include "common.h"

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    long count = atol(argv[1]);
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    static char buf[65536];
    long rss_before = maxrss_kb();
    long long bytes = 0;
    double t0 = now_s();
    for (long i = 0; i < count; i++) {
        int out, err;
        pid_t pid = spawn_piped(&argv[2], devnull, &out, &err);
        bytes += drain(out, buf, sizeof buf);
        bytes += drain(err, buf, sizeof buf);
        close(out);
        close(err);
        int status;
        if (waitpid(pid, &status, 0) < 0) die("waitpid");
    }
    double secs = now_s() - t0;
    printf("seconds=%.9f bytes=%lld rss_before_kb=%ld rss_after_kb=%ld\n", secs, bytes, rss_before,
           maxrss_kb());
    return 0;
}
