/*
 * The C yardstick for UDP round trips, both ends:
 *
 *   ./cudp echo                     an echo server on 127.0.0.1; prints "PORT n"
 *   ./cudp ping PORT SIZE SECONDS   a closed-loop pinger to 127.0.0.1:PORT
 *
 * The pinger sends one SIZE-byte datagram, waits (epoll, as the TCP load
 * generator does) for it to come back, checks every byte, and sends the
 * next, for SECONDS seconds; a datagram not back within a second is
 * counted lost.  It prints one line in loadgen.c's format: messages,
 * bytes, p50 and p99 round trip in microseconds, errors (lost or
 * different).  Loopback only; bounded in time; stops by itself.
 *
 *   cc -O2 -o cudp cudp.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
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

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "echo") == 0) return echo();
    if (argc == 5 && strcmp(argv[1], "ping") == 0)
        return ping(atoi(argv[2]), (size_t)atol(argv[3]), atof(argv[4]));
    fprintf(stderr, "usage: %s echo | %s ping PORT SIZE SECONDS\n", argv[0], argv[0]);
    return 2;
}
