/* Shared by the baseline loops: a monotonic clock, peak RSS, and the spawn dkron_exec does
 * (stdin /dev/null, stdout and stderr to pipes, a process group of its own). */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Peak RSS of this address space (VmHWM). Not getrusage's ru_maxrss: Linux carries that over exec
 * from the parent's address space, so a child of a big parent would report the parent's peak. */
static inline long maxrss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld", &kb) == 1) break;
    if (f) fclose(f);
    return kb;
}

static inline void die(const char *what) {
    perror(what);
    exit(2);
}

/* Starts argv[0] with stdout/stderr on fresh pipes (read ends returned, close-on-exec). */
static inline pid_t spawn_piped(char *const argv[], int devnull, int *out_r, int *err_r) {
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) die("pipe2");
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, devnull, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&at, 0);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, &at, argv, environ);
    if (rc) {
        errno = rc;
        die("posix_spawn");
    }
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(out[1]);
    close(err[1]);
    *out_r = out[0];
    *err_r = err[0];
    return pid;
}

/* Reads a pipe to EOF into buf (discarding), returns the bytes read. */
static inline long long drain(int fd, char *buf, size_t cap) {
    long long total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, cap);
        if (n > 0) {
            total += n;
        } else if (n == 0) {
            return total;
        } else if (errno != EINTR) {
            die("read");
        }
    }
}
#endif
