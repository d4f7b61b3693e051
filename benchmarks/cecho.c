/*
 * The C reference for the benchmark: a single-threaded, edge-free epoll
 * echo server on 127.0.0.1, the shape of the seed poll() server done with
 * epoll.  Reads up to 128 KiB, sends at once, and when the peer is not
 * reading keeps the rest and stops reading until it drains.  Prints
 * "PORT n" once it listens.  Not part of echotwist; a yardstick.
 *
 *   cc -O2 -o cecho cecho.c && ./cecho
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK (128 * 1024)

struct conn {
    int fd;
    char *pending;
    size_t length, offset;
};

static int epfd;

static void watch(struct conn *c, int op, unsigned events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(epfd, op, c->fd, &ev);
}

static void drop(struct conn *c) {
    close(c->fd);
    free(c->pending);
    free(c);
}

int main(void) {
    static char buffer[CHUNK];
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 4096)) {
        perror("cecho: listen");
        return 1;
    }
    getsockname(listener, (struct sockaddr *)&addr, &len);
    printf("PORT %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    epfd = epoll_create1(0);
    struct conn server = {.fd = listener};
    watch(&server, EPOLL_CTL_ADD, EPOLLIN);
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(epfd, events, 256, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == &server) {
                int fd;
                while ((fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *new = calloc(1, sizeof *new);
                    new->fd = fd;
                    watch(new, EPOLL_CTL_ADD, EPOLLIN);
                }
                continue;
            }
            if (c->pending) { /* writable: send what is left, then read again */
                ssize_t sent = send(c->fd, c->pending + c->offset, c->length - c->offset, MSG_NOSIGNAL);
                if (sent < 0 && errno != EAGAIN) { drop(c); continue; }
                if (sent > 0) c->offset += sent;
                if (c->offset == c->length) {
                    free(c->pending);
                    c->pending = NULL;
                    watch(c, EPOLL_CTL_MOD, EPOLLIN);
                }
                continue;
            }
            ssize_t got = recv(c->fd, buffer, CHUNK, 0);
            if (got <= 0) {
                if (got < 0 && errno == EAGAIN) continue;
                drop(c);
                continue;
            }
            ssize_t sent = send(c->fd, buffer, got, MSG_NOSIGNAL);
            if (sent < 0 && errno != EAGAIN) { drop(c); continue; }
            if (sent < 0) sent = 0;
            if (sent < got) {
                c->length = got - sent;
                c->offset = 0;
                c->pending = malloc(c->length);
                memcpy(c->pending, buffer + sent, c->length);
                watch(c, EPOLL_CTL_MOD, EPOLLOUT);
            }
        }
    }
}
