/* A TCP proxy that delays each direction by a fixed time, as a network between a host and its SAN
 * would: every chunk read from one side is written to the other DELAY_US microseconds after it
 * arrived, and reading goes on meanwhile, so pipelined commands stay pipelined (a window of
 * commands in flight pays the delay once, not once each). This kernel has no tc netem.
 *
 *     delayproxy LISTEN_PORT TARGET_PORT DELAY_US      (loopback on both sides)
 *
 * It prints "ready" once listening. Two threads per direction: one reads and stamps, one sleeps
 * until each chunk is due (an absolute CLOCK_MONOTONIC deadline) and writes it. Built by
 * bench/run.py with the C compiler pyfuse3 already needs; bench code, not part of iscsifs. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (256 * 1024)

static long delay_ns;
static int target_port;

struct chunk {
    struct chunk *next;
    struct timespec due;
    size_t len;
    char data[];
};

struct direction {
    int from, to;
    pthread_mutex_t lock;
    pthread_cond_t ready;
    struct chunk *head, *tail;
    int eof;
};

static void *reader(void *arg) {
    struct direction *d = arg;
    for (;;) {
        struct chunk *c = malloc(sizeof *c + CHUNK);
        if (!c) break;
        ssize_t n = read(d->from, c->data, CHUNK);
        if (n <= 0) {
            free(c);
            break;
        }
        c->len = (size_t)n;
        c->next = NULL;
        clock_gettime(CLOCK_MONOTONIC, &c->due);
        c->due.tv_nsec += delay_ns;
        while (c->due.tv_nsec >= 1000000000L) {
            c->due.tv_nsec -= 1000000000L;
            c->due.tv_sec++;
        }
        pthread_mutex_lock(&d->lock);
        if (d->tail) d->tail->next = c; else d->head = c;
        d->tail = c;
        pthread_cond_signal(&d->ready);
        pthread_mutex_unlock(&d->lock);
    }
    pthread_mutex_lock(&d->lock);
    d->eof = 1;
    pthread_cond_signal(&d->ready);
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

static void *writer(void *arg) {
    struct direction *d = arg;
    for (;;) {
        pthread_mutex_lock(&d->lock);
        while (!d->head && !d->eof) pthread_cond_wait(&d->ready, &d->lock);
        struct chunk *c = d->head;
        if (c) {
            d->head = c->next;
            if (!d->head) d->tail = NULL;
        }
        pthread_mutex_unlock(&d->lock);
        if (!c) break; /* end of stream and nothing left */
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &c->due, NULL) == EINTR) {
        }
        size_t off = 0;
        while (off < c->len) {
            ssize_t n = write(d->to, c->data + off, c->len - off);
            if (n <= 0) {
                free(c);
                shutdown(d->from, SHUT_RDWR);
                return NULL;
            }
            off += (size_t)n;
        }
        free(c);
    }
    shutdown(d->to, SHUT_WR);
    return NULL;
}

static void start(struct direction *d, int from, int to) {
    pthread_t t;
    memset(d, 0, sizeof *d);
    d->from = from;
    d->to = to;
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->ready, NULL);
    pthread_create(&t, NULL, reader, d);
    pthread_detach(t);
    pthread_create(&t, NULL, writer, d);
    pthread_detach(t);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: delayproxy LISTEN_PORT TARGET_PORT DELAY_US\n");
        return 2;
    }
    int listen_port = atoi(argv[1]);
    target_port = atoi(argv[2]);
    delay_ns = atol(argv[3]) * 1000L;
    int one = 1;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(listen_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 64)) {
        perror("delayproxy: listen");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        int client = accept(ls, NULL, NULL);
        if (client < 0) continue;
        int up = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in t = {.sin_family = AF_INET, .sin_port = htons(target_port)};
        t.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(up, (struct sockaddr *)&t, sizeof t)) {
            close(client);
            close(up);
            continue;
        }
        setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(up, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        /* Two directions per connection; their memory lives as long as the proxy (a bench run). */
        struct direction *d = calloc(2, sizeof *d);
        start(&d[0], client, up);
        start(&d[1], up, client);
    }
}
