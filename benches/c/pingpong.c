/* Baselines for bench_plugin.py, over the plugin transport (a unix socketpair, frames of
 * u32 BE length + u32 BE header length + JSON header + raw body):
 *
 *   pingpong BODY_BYTES ROUNDS   fork; the parent sends a frame, the child echoes it back;
 *                                prints "seconds=S" for the loop (the physical limit).
 *   dkron-processor-cecho        a processor plugin in C (docs/PROTOCOL.md): answers each
 *                                `process` with the same body, one call at a time.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int read_full(int fd, void *buf, size_t n) {
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void put_u32(unsigned char *p, uint32_t v) {
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads one frame into *buf (grown as needed); returns its length L, or -1 at EOF. */
static long read_frame(int fd, unsigned char **buf, size_t *cap) {
    unsigned char prefix[4];
    if (read_full(fd, prefix, 4) < 0) return -1;
    uint32_t len = get_u32(prefix);
    if (len > (64u << 20) || len < 4) return -1;
    if (len > *cap) {
        *buf = realloc(*buf, len);
        *cap = len;
    }
    if (read_full(fd, *buf, len) < 0) return -1;
    return (long)len;
}

static int send_frame(int fd, const char *header, const unsigned char *body, size_t blen) {
    size_t hlen = strlen(header);
    unsigned char prefix[8];
    put_u32(prefix, (uint32_t)(4 + hlen + blen));
    put_u32(prefix + 4, (uint32_t)hlen);
    struct iovec iov[3] = {{prefix, 8}, {(void *)header, hlen}, {(void *)body, blen}};
    struct msghdr msg = {0};
    msg.msg_iov = iov;
    msg.msg_iovlen = 3;
    size_t total = 8 + hlen + blen, sent = 0;
    ssize_t w = sendmsg(fd, &msg, 0);
    if (w < 0) return -1;
    sent = (size_t)w;
    if (sent < total) { /* rare partial send: finish the rest plainly */
        unsigned char *all = malloc(total);
        memcpy(all, prefix, 8); memcpy(all + 8, header, hlen); memcpy(all + 8 + hlen, body, blen);
        int rc = write_full(fd, all + sent, total - sent);
        free(all);
        return rc;
    }
    return 0;
}

static int plugin(void) {
    const char *cookie = getenv("DKRON_PLUGIN_MAGIC_COOKIE");
    if (!cookie || strcmp(cookie, "b29a76488b6f3ca7955c5f769b50641f0fcd88748d8cedecda313d516320ca19")) {
        fprintf(stderr, "This binary is a dkron_exec plugin (the processor 'cecho'), not meant to be run directly.\n");
        return 1;
    }
    int fd = 3;
    send_frame(fd, "{\"type\":\"hello\",\"protocol\":1,\"plugin_type\":\"processor\",\"name\":\"cecho\"}", NULL, 0);
    unsigned char *buf = NULL;
    size_t cap = 0;
    char header[128];
    for (;;) {
        long len = read_frame(fd, &buf, &cap);
        if (len < 0) return 0;
        uint32_t hlen = get_u32(buf);
        char *h = (char *)buf + 4;
        char saved = h[hlen];
        h[hlen] = 0;
        int is_process = strstr(h, "\"type\":\"process\"") != NULL;
        int is_shutdown = strstr(h, "\"type\":\"shutdown\"") != NULL;
        /* The call id is the "id" key with a number: the execution's own "id" is a string. */
        unsigned long long call_id = 0;
        for (char *id = strstr(h, "\"id\":"); id; id = strstr(id + 5, "\"id\":")) {
            if (id[5] >= '0' && id[5] <= '9') call_id = strtoull(id + 5, NULL, 10);
        }
        h[hlen] = saved;
        if (is_shutdown) return 0;
        if (!is_process) continue;
        snprintf(header, sizeof header, "{\"type\":\"result\",\"id\":%llu,\"execution\":{}}", call_id);
        send_frame(fd, header, buf + 4 + hlen, (size_t)len - 4 - hlen);
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (strstr(argv[0], "dkron-processor-")) return plugin();
    if (argc < 3) {
        fprintf(stderr, "usage: %s BODY_BYTES ROUNDS\n", argv[0]);
        return 2;
    }
    size_t body = strtoul(argv[1], NULL, 10);
    long rounds = strtol(argv[2], NULL, 10);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) return 1;
    pid_t pid = fork();
    unsigned char *buf = NULL;
    size_t cap = 0;
    if (pid == 0) {
        close(sv[0]);
        long len;
        while ((len = read_frame(sv[1], &buf, &cap)) >= 0) {
            uint32_t hlen = get_u32(buf);
            char header[64];
            snprintf(header, sizeof header, "{\"type\":\"result\",\"id\":1}");
            send_frame(sv[1], header, buf + 4 + hlen, (size_t)len - 4 - hlen);
        }
        _exit(0);
    }
    close(sv[1]);
    unsigned char *payload = calloc(body ? body : 1, 1);
    double start = now();
    for (long i = 0; i < rounds; i++) {
        send_frame(sv[0], "{\"type\":\"process\",\"id\":1,\"execution\":{},\"config\":{}}", payload, body);
        if (read_frame(sv[0], &buf, &cap) < 0) return 1;
    }
    double elapsed = now() - start;
    close(sv[0]);
    waitpid(pid, NULL, 0);
    printf("seconds=%.9f\n", elapsed);
    return 0;
}
