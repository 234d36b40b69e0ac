/* spawn_serial COUNT PROGRAM: one child at a time, as dkron_exec's Executor.run does it:
 * posix_spawn with piped stdout/stderr in its own process group, read both to EOF, waitpid.
 * Prints "seconds=S" for the whole loop (this program's own start-up is not counted). */
#include "common.h"

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    long count = atol(argv[1]);
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    char buf[65536];
    double t0 = now_s();
    for (long i = 0; i < count; i++) {
        int out, err;
        pid_t pid = spawn_piped(&argv[2], devnull, &out, &err);
        drain(out, buf, sizeof buf);
        drain(err, buf, sizeof buf);
        close(out);
        close(err);
        int status;
        if (waitpid(pid, &status, 0) < 0) die("waitpid");
    }
    printf("seconds=%.9f\n", now_s() - t0);
    return 0;
}
