/* spawn_inflight TOTAL N PROGRAM: TOTAL children, keeping N in flight: whenever one exits
 * (waitpid(-1)), its pipes are drained and closed and the next one starts.
 * Prints "seconds=S" for the whole loop. */
#include "common.h"

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    long total = atol(argv[1]);
    long width = atol(argv[2]);
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_t *pids = calloc(width, sizeof *pids);
    int *fds = calloc(2 * width, sizeof *fds);
    char buf[65536];
    long started = 0, running = 0;
    double t0 = now_s();
    for (; running < width && started < total; running++, started++)
        pids[running] = spawn_piped(&argv[3], devnull, &fds[2 * running], &fds[2 * running + 1]);
    while (running > 0) {
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0) die("waitpid");
        long slot = 0;
        while (slot < width && pids[slot] != pid) slot++;
        if (slot == width) continue;
        /* The child has exited: its pipes hold whatever it wrote, then EOF. */
        drain(fds[2 * slot], buf, sizeof buf);
        drain(fds[2 * slot + 1], buf, sizeof buf);
        close(fds[2 * slot]);
        close(fds[2 * slot + 1]);
        if (started < total) {
            pids[slot] = spawn_piped(&argv[3], devnull, &fds[2 * slot], &fds[2 * slot + 1]);
            started++;
        } else {
            pids[slot] = 0;
            running--;
        }
    }
    printf("seconds=%.9f\n", now_s() - t0);
    return 0;
}
