/*
 * A closed-loop echo load generator: CONNS connections to 127.0.0.1:PORT,
 * each sends SIZE bytes, waits for all SIZE bytes back, checks every byte,
 * and repeats, for SECONDS seconds.  Prints one
 * line: messages, bytes, p50 and p99 round-trip latency in microseconds,
 * and errors.  Loopback only; bounded in time; stops by itself.
 *
 *   cc -O2 -o loadgen loadgen.c && ./loadgen PORT CONNS SIZE SECONDS
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    size_t sent, received;
    double started;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s PORT CONNS SIZE SECONDS\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]), nconns = atoi(argv[2]);
    size_t size = (size_t)atol(argv[3]);
    double seconds = atof(argv[4]), warmup = 0;
    unsigned char *message = malloc(size), *buffer = malloc(size > 65536 ? size : 65536);
    for (size_t i = 0; i < size; i++) message[i] = (unsigned char)(i * 31 + 7);
    struct conn *conns = calloc(nconns, sizeof *conns);
    size_t maxSamples = 4000000, nsamples = 0;
    double *samples = malloc(maxSamples * sizeof(double));
    int ep = epoll_create1(0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    for (int i = 0; i < nconns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
            perror("connect");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (unsigned)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    double start = now(), measureFrom = start + warmup, end = measureFrom + seconds;
    long long messages = 0, errors = 0;
    for (int i = 0; i < nconns; i++) {
        conns[i].started = now();
        ssize_t n = send(conns[i].fd, message, size, MSG_DONTWAIT);
        conns[i].sent = n > 0 ? (size_t)n : 0;
        if (conns[i].sent < size) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (unsigned)i};
            epoll_ctl(ep, EPOLL_CTL_MOD, conns[i].fd, &ev);
        }
    }
    struct epoll_event events[1024];
    while (now() < end) {
        int n = epoll_wait(ep, events, 1024, 100);
        for (int e = 0; e < n; e++) {
            struct conn *c = &conns[events[e].data.u32];
            if (events[e].events & EPOLLOUT && c->sent < size) {
                ssize_t w = send(c->fd, message + c->sent, size - c->sent, MSG_DONTWAIT);
                if (w > 0) c->sent += (size_t)w;
                if (c->sent == size) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = events[e].data.u32};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (events[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = recv(c->fd, buffer, size - c->received > 65536 ? 65536 : size - c->received, MSG_DONTWAIT);
                if (r <= 0) {
                    if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                    fprintf(stderr, "connection closed by the server\n");
                    return 1;
                }
                if (memcmp(buffer, message + c->received, (size_t)r) != 0) errors++;
                c->received += (size_t)r;
                if (c->received == size) {
                    double t = now();
                    if (t >= measureFrom) {
                        messages++;
                        if (nsamples < maxSamples) samples[nsamples++] = t - c->started;
                    }
                    c->received = 0;
                    c->started = t;
                    ssize_t w = send(c->fd, message, size, MSG_DONTWAIT);
                    c->sent = w > 0 ? (size_t)w : 0;
                    if (c->sent < size) {
                        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = events[e].data.u32};
                        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                    }
                }
            }
        }
    }
    qsort(samples, nsamples, sizeof(double), cmp);
    double p50 = nsamples ? samples[nsamples / 2] : 0, p99 = nsamples ? samples[(size_t)(nsamples * 0.99)] : 0;
    printf("messages=%lld bytes=%lld p50_us=%.1f p99_us=%.1f errors=%lld seconds=%.3f\n",
           messages, messages * (long long)size, p50 * 1e6, p99 * 1e6, errors, seconds);
    return errors ? 1 : 0;
}
