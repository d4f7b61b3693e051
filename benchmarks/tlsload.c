/*
 * The benchmark's TLS client: threads of blocking OpenSSL clients against
 * 127.0.0.1:PORT, no certificate check (the benchmark's own self-signed
 * one), no session reuse, whatever TLS version both ends prefer (1.3 here).
 *
 *   ./tlsload echo PORT CONNS SIZE SECONDS
 *       CONNS connections, a thread each, closed loop: send SIZE bytes,
 *       read all SIZE back, check every byte, repeat.
 *   ./tlsload handshakes PORT CLIENTS SECONDS
 *       CLIENTS threads, each in a loop: connect, handshake, echo 64 bytes,
 *       close; a "message" is one such connection.
 *
 * Prints loadgen.c's line: messages, bytes, p50 and p99 in microseconds
 * (a round trip, or a whole connection), errors.  Loopback only; bounded
 * in time; stops by itself.
 *
 *   cc -O2 -o tlsload tlsload.c -lssl -lcrypto -lpthread
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 1000000

static SSL_CTX *context;
static struct sockaddr_in address;
static size_t size;
static double end;
static int handshakes;

struct worker {
    pthread_t thread;
    long long messages, errors;
    size_t nsamples;
    double *samples;
    int failed;
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

static SSL *open_tls(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct timeval timeout = {.tv_sec = 10};
    if (fd < 0) return NULL;
    /* A server that stops answering fails the run instead of hanging it. */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) {
        close(fd);
        return NULL;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    SSL *ssl = SSL_new(context);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    return ssl;
}

static void close_tls(SSL *ssl) {
    int fd = SSL_get_fd(ssl);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
}

/* One round trip: 0 when all of it came back, -1 when the connection failed. */
static int round_trip(SSL *ssl, const unsigned char *message, unsigned char *buffer,
                      size_t length, long long *errors) {
    if (SSL_write(ssl, message, (int)length) != (int)length) return -1;
    size_t got = 0;
    while (got < length) {
        int r = SSL_read(ssl, buffer + got, (int)(length - got));
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    if (memcmp(buffer, message, length) != 0) (*errors)++;
    return 0;
}

static void *run(void *argument) {
    struct worker *w = argument;
    size_t length = handshakes ? 64 : size;
    unsigned char *message = malloc(length), *buffer = malloc(length);
    for (size_t i = 0; i < length; i++) message[i] = (unsigned char)(i * 31 + 7);
    SSL *ssl = handshakes ? NULL : open_tls();
    if (!handshakes && ssl == NULL) {
        w->failed = 1;
        return NULL;
    }
    while (now() < end) {
        double started = now();
        if (handshakes) {
            ssl = open_tls();
            if (ssl == NULL) { w->failed = 1; break; }
        }
        if (round_trip(ssl, message, buffer, length, &w->errors) < 0) { w->failed = 1; break; }
        if (handshakes) close_tls(ssl);
        w->messages++;
        if (w->nsamples < MAX_SAMPLES) w->samples[w->nsamples++] = now() - started;
    }
    if (!handshakes && ssl != NULL) close_tls(ssl);
    free(message);
    free(buffer);
    return NULL;
}

int main(int argc, char **argv) {
    int nworkers;
    double seconds;
    if (argc == 6 && strcmp(argv[1], "echo") == 0) {
        nworkers = atoi(argv[3]);
        size = (size_t)atol(argv[4]);
        seconds = atof(argv[5]);
    } else if (argc == 5 && strcmp(argv[1], "handshakes") == 0) {
        handshakes = 1;
        nworkers = atoi(argv[3]);
        seconds = atof(argv[4]);
    } else {
        fprintf(stderr, "usage: %s echo PORT CONNS SIZE SECONDS | %s handshakes PORT CLIENTS SECONDS\n",
                argv[0], argv[0]);
        return 2;
    }
    if (nworkers < 1 || (!handshakes && (size < 1 || size > 1 << 20))) {
        fprintf(stderr, "tlsload: CONNS >= 1 and 1 <= SIZE <= 1 MiB\n");
        return 2;
    }
    address.sin_family = AF_INET;
    address.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    context = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(context, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(context, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(context, SSL_OP_NO_TICKET);
    struct worker *workers = calloc((size_t)nworkers, sizeof *workers);
    end = now() + seconds;
    for (int i = 0; i < nworkers; i++) {
        workers[i].samples = malloc(MAX_SAMPLES * sizeof(double));
        pthread_create(&workers[i].thread, NULL, run, &workers[i]);
    }
    long long messages = 0, errors = 0;
    size_t nsamples = 0;
    double *samples = malloc((size_t)nworkers * MAX_SAMPLES * sizeof(double));
    int failed = 0;
    for (int i = 0; i < nworkers; i++) {
        pthread_join(workers[i].thread, NULL);
        messages += workers[i].messages;
        errors += workers[i].errors;
        failed |= workers[i].failed;
        memcpy(samples + nsamples, workers[i].samples, workers[i].nsamples * sizeof(double));
        nsamples += workers[i].nsamples;
    }
    if (failed) {
        fprintf(stderr, "tlsload: a connection failed\n");
        ERR_print_errors_fp(stderr);
        return 1;
    }
    qsort(samples, nsamples, sizeof(double), cmp);
    double p50 = nsamples ? samples[nsamples / 2] : 0, p99 = nsamples ? samples[(size_t)(nsamples * 0.99)] : 0;
    printf("messages=%lld bytes=%lld p50_us=%.1f p99_us=%.1f errors=%lld seconds=%.3f\n",
           messages, messages * (long long)(handshakes ? 64 : size), p50 * 1e6, p99 * 1e6, errors, seconds);
    return errors ? 1 : 0;
}
