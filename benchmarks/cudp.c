/*
 * The C yardstick for UDP round trips, both ends:
 *
 *   ./cudp echo                     an echo server on 127.0.0.1; prints "PORT n"
 *   ./cudp ping PORT SIZE SECONDS   a closed-loop pinger to 127.0.0.1:PORT
 *   ./cudp load PORT FLOWS SIZE SECONDS
 *                                   FLOWS closed-loop flows at once, for
 *                                   the benchmark (bench.py)
 *
 * The pinger sends one SIZE-byte datagram, waits (epoll, as the TCP load
 * generator does) for it to come back, checks every byte, and sends the
 * next, for SECONDS seconds; a datagram not back within a second is
 * counted lost.  It prints one line in loadgen.c's format: messages,
 * bytes, p50 and p99 round trip in microseconds, errors (lost or
 * different).  Loopback only; bounded in time; stops by itself.
 *
 * The load generator is the TCP one's (loadgen.c) for datagrams: FLOWS
 * sockets, each with one datagram in flight, sent again as soon as its
 * echo is back.  Each datagram carries its flow's sequence number in its
 * first 8 bytes (SIZE is at least 8), so a late echo of a datagram counted
 * lost is told from the echo awaited, and is not counted twice; the rest
 * of it is checked byte for byte.  A flow waits a second for its echo,
 * then counts the datagram lost and sends the next.  Its line has
 * lost=N besides loadgen.c's fields, and errors counts wrong bytes only.
 *
 *   cc -O2 -o cudp cudp.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdint.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int echo(void) {
    static unsigned char buffer[65536];
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr)) {
        perror("cudp: bind");
        return 1;
    }
    getsockname(fd, (struct sockaddr *)&addr, &len);
    printf("PORT %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    for (;;) {
        struct sockaddr_in peer;
        socklen_t peerLen = sizeof peer;
        ssize_t n = recvfrom(fd, buffer, sizeof buffer, 0, (struct sockaddr *)&peer, &peerLen);
        if (n >= 0) sendto(fd, buffer, (size_t)n, 0, (struct sockaddr *)&peer, peerLen);
    }
}

static int ping(int port, size_t size, double seconds) {
    unsigned char *message = malloc(size), *buffer = malloc(65536);
    for (size_t i = 0; i < size; i++) message[i] = (unsigned char)(i * 31 + 7);
    size_t maxSamples = 4000000, nsamples = 0;
    double *samples = malloc(maxSamples * sizeof(double));
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("cudp: connect");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN}, events[1];
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    long long messages = 0, errors = 0;
    double end = now() + seconds;
    while (now() < end) {
        double started = now();
        send(fd, message, size, 0);
        for (;;) {
            int n = epoll_wait(ep, events, 1, 1000);
            if (n <= 0) { errors++; break; }
            ssize_t r = recv(fd, buffer, 65536, 0);
            if (r < 0) continue;
            double t = now();
            if ((size_t)r != size || memcmp(buffer, message, size) != 0) { errors++; break; }
            messages++;
            if (nsamples < maxSamples) samples[nsamples++] = t - started;
            break;
        }
    }
    qsort(samples, nsamples, sizeof(double), cmp);
    double p50 = nsamples ? samples[nsamples / 2] : 0, p99 = nsamples ? samples[(size_t)(nsamples * 0.99)] : 0;
    printf("messages=%lld bytes=%lld p50_us=%.1f p99_us=%.1f errors=%lld seconds=%.3f\n",
           messages, messages * (long long)size, p50 * 1e6, p99 * 1e6, errors, seconds);
    return errors ? 1 : 0;
}

struct flow {
    int fd;
    uint64_t sequence;
    double started;
};

static void send_next(struct flow *f, unsigned char *message, size_t size) {
    f->sequence++;
    memcpy(message, &f->sequence, sizeof f->sequence);
    f->started = now();
    send(f->fd, message, size, 0);
}

static int load(int port, int nflows, size_t size, double seconds) {
    if (size < sizeof(uint64_t) || size > 65507 || nflows < 1) {
        fprintf(stderr, "cudp: load needs FLOWS >= 1 and 8 <= SIZE <= 65507\n");
        return 2;
    }
    unsigned char *message = malloc(size), *buffer = malloc(65536);
    for (size_t i = 0; i < size; i++) message[i] = (unsigned char)(i * 31 + 7);
    size_t maxSamples = 4000000, nsamples = 0;
    double *samples = malloc(maxSamples * sizeof(double));
    struct flow *flows = calloc((size_t)nflows, sizeof *flows);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    int ep = epoll_create1(0);
    for (int i = 0; i < nflows; i++) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
            perror("cudp: connect");
            return 1;
        }
        flows[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (unsigned)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    long long messages = 0, errors = 0, lost = 0;
    for (int i = 0; i < nflows; i++) send_next(&flows[i], message, size);
    struct epoll_event events[1024];
    double end = now() + seconds, checked = now();
    while (now() < end) {
        int n = epoll_wait(ep, events, 1024, 100);
        for (int e = 0; e < n; e++) {
            struct flow *f = &flows[events[e].data.u32];
            for (;;) {
                ssize_t r = recv(f->fd, buffer, 65536, 0);
                if (r < 0) break; /* EAGAIN: drained; ECONNREFUSED: counted lost later */
                uint64_t sequence;
                if ((size_t)r < sizeof sequence) { errors++; continue; }
                memcpy(&sequence, buffer, sizeof sequence);
                if (sequence != f->sequence) continue; /* a late echo of one counted lost */
                double t = now();
                if ((size_t)r != size || memcmp(buffer + sizeof sequence, message + sizeof sequence,
                                                size - sizeof sequence) != 0)
                    errors++;
                messages++;
                if (nsamples < maxSamples) samples[nsamples++] = t - f->started;
                send_next(f, message, size);
            }
        }
        double t = now();
        if (t - checked >= 0.1) {
            checked = t;
            for (int i = 0; i < nflows; i++)
                if (t - flows[i].started > 1.0) {
                    lost++;
                    send_next(&flows[i], message, size);
                }
        }
    }
    qsort(samples, nsamples, sizeof(double), cmp);
    double p50 = nsamples ? samples[nsamples / 2] : 0, p99 = nsamples ? samples[(size_t)(nsamples * 0.99)] : 0;
    printf("messages=%lld bytes=%lld p50_us=%.1f p99_us=%.1f errors=%lld seconds=%.3f lost=%lld\n",
           messages, messages * (long long)size, p50 * 1e6, p99 * 1e6, errors, seconds, lost);
    return errors ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "echo") == 0) return echo();
    if (argc == 5 && strcmp(argv[1], "ping") == 0)
        return ping(atoi(argv[2]), (size_t)atol(argv[3]), atof(argv[4]));
    if (argc == 6 && strcmp(argv[1], "load") == 0)
        return load(atoi(argv[2]), atoi(argv[3]), (size_t)atol(argv[4]), atof(argv[5]));
    fprintf(stderr, "usage: %s echo | %s ping PORT SIZE SECONDS | %s load PORT FLOWS SIZE SECONDS\n",
            argv[0], argv[0], argv[0]);
    return 2;
}
