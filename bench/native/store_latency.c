/*
 * store_latency.c - what the store costs in C, with no Python in the way.
 *
 * Uses csrc/store.h alone.  Four figures, each the median of several timed
 * batches:
 *
 *   version check   one acquire load of a key's version word and a compare
 *                   with the cached version: the hot path of every read of
 *                   an unchanged key;
 *   read            tes_store_read_begin, copy the small record out,
 *                   tes_store_read_end: a read after a change;
 *   lookup + read   the same, finding the key slot by name first;
 *   publish         tes_store_publish of a small record (superseded records
 *                   are reclaimed as it goes).
 *
 * Then propagation between two processes: the parent publishes a record
 * holding the CLOCK_MONOTONIC time of the publish; a forked child spins on
 * the key's version word, reads the record when the version changes and
 * notes how long after the publish it got there.  It answers on a second
 * key, on whose version word the parent spins, so rounds never overlap.
 *
 * Usage: store_latency [rounds]   (default 20000 propagation rounds)
 */
#define _GNU_SOURCE
#include "store.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BENCH_RECORD_BYTES 64
#define BENCH_BATCHES 15
#define BENCH_BATCH_READS 1000000
#define BENCH_BATCH_PUBLISHES 20000
/* A spinning side gives up after this long: the other side died. */
#define BENCH_SPIN_LIMIT_NS 5000000000LL

static const char bench_config_key[] = "tes-spline-config";
static const char bench_ack_key[] = "bench-ack";

/* Returns CLOCK_MONOTONIC now, in nanoseconds. */
static int64_t bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Tells the CPU we are spinning; returns nothing. */
static inline void bench_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* qsort order for doubles; returns <0, 0 or >0. */
static int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Returns the q-th quantile (0..1) of n values, sorting them in place. */
static double bench_quantile(double *values, size_t n, double q)
{
    qsort(values, n, sizeof(*values), bench_cmp_double);
    return values[(size_t)(q * (double)(n - 1) + 0.5)];
}

/* Prints err and exits; never returns. */
static void bench_die(const char *what, const tes_error *err)
{
    fprintf(stderr, "store_latency: %s: %s\n", what, err->message);
    exit(1);
}

/* Returns the slot of key, exiting if it cannot be found. */
static uint32_t bench_slot(tes_store *st, const char *key)
{
    tes_error err;
    uint32_t slot;

    if (tes_store_lookup(st, key, strlen(key), &slot, &err) != TES_OK)
        bench_die("lookup", &err);
    return slot;
}

/* Publishes a record holding stamp; returns its version. */
static uint64_t bench_publish(tes_store *st, const char *key, int64_t stamp)
{
    uint8_t payload[BENCH_RECORD_BYTES];
    tes_error err;
    uint64_t version;

    memset(payload, 0, sizeof(payload));
    memcpy(payload, &stamp, sizeof(stamp));
    if (tes_store_publish(st, key, strlen(key), payload, sizeof(payload),
                          &version, &err) != TES_OK)
        bench_die("publish", &err);
    return version;
}

/* Reads the stamp from the record of slot; returns it, or -1 on failure. */
static int64_t bench_read(tes_store *st, uint32_t slot)
{
    tes_record rec;
    tes_error err;
    int64_t stamp = -1;
    uint8_t copy[BENCH_RECORD_BYTES];

    if (tes_store_read_begin(st, slot, &rec, &err) == TES_OK &&
        rec.payload_bytes == sizeof(copy)) {
        memcpy(copy, rec.payload, sizeof(copy));
        memcpy(&stamp, copy, sizeof(stamp));
    }
    tes_store_read_end(st);
    return stamp;
}

/* Times the single-process operations and prints them; returns nothing. */
static void bench_local(tes_store *st)
{
    double ns[BENCH_BATCHES];
    uint32_t slot = bench_slot(st, bench_config_key);
    const tes_version_word *word = tes_store_version_word(st, slot);
    uint64_t cached = tes_version_load(word);
    uint64_t changed = 0;
    int64_t sum = 0;
    int b;
    long i;

    for (b = 0; b < BENCH_BATCHES; b++) {
        int64_t t0 = bench_now_ns();

        for (i = 0; i < BENCH_BATCH_READS; i++)
            changed += tes_version_load(word) != cached;
        ns[b] = (double)(bench_now_ns() - t0) / BENCH_BATCH_READS;
    }
    printf("version check      %8.2f ns   (acquire load + compare, "
           "loop throughput)\n", bench_quantile(ns, BENCH_BATCHES, 0.5));

    for (b = 0; b < BENCH_BATCHES; b++) {
        int64_t t0 = bench_now_ns();

        for (i = 0; i < BENCH_BATCH_READS / 10; i++)
            sum += bench_read(st, slot);
        ns[b] = (double)(bench_now_ns() - t0) / (BENCH_BATCH_READS / 10);
    }
    printf("read               %8.2f ns   (read_begin, copy %d B, "
           "read_end)\n", bench_quantile(ns, BENCH_BATCHES, 0.5),
           BENCH_RECORD_BYTES);

    for (b = 0; b < BENCH_BATCHES; b++) {
        int64_t t0 = bench_now_ns();

        for (i = 0; i < BENCH_BATCH_READS / 10; i++)
            sum += bench_read(st, bench_slot(st, bench_config_key));
        ns[b] = (double)(bench_now_ns() - t0) / (BENCH_BATCH_READS / 10);
    }
    printf("lookup + read      %8.2f ns   (hash the key, then read)\n",
           bench_quantile(ns, BENCH_BATCHES, 0.5));

    for (b = 0; b < BENCH_BATCHES; b++) {
        int64_t t0 = bench_now_ns();

        for (i = 0; i < BENCH_BATCH_PUBLISHES; i++)
            bench_publish(st, bench_config_key, i);
        ns[b] = (double)(bench_now_ns() - t0) / BENCH_BATCH_PUBLISHES;
    }
    printf("publish            %8.2f ns   (%d B record, one writer)\n",
           bench_quantile(ns, BENCH_BATCHES, 0.5), BENCH_RECORD_BYTES);

    /* Keeps the compiler from dropping the loops above. */
    if (changed == 1 && sum == 1)
        printf("(unlikely)\n");
}

/*
 * Waits until the version word moves past last; returns the new version,
 * or 0 if it did not within BENCH_SPIN_LIMIT_NS.
 */
static uint64_t bench_spin(const tes_version_word *word, uint64_t last)
{
    int64_t give_up = bench_now_ns() + BENCH_SPIN_LIMIT_NS;
    uint64_t v;
    unsigned spins = 0;

    while ((v = tes_version_load(word)) == last) {
        bench_pause();
        if (++spins % 4096 == 0 && bench_now_ns() > give_up)
            return 0;
    }
    return v;
}

/* The forked reader; returns the process exit code. */
static int bench_child(const char *name, int rounds, int report_fd)
{
    tes_store *st;
    tes_error err;
    uint32_t config;
    uint64_t seen;
    size_t bytes = (size_t)rounds * sizeof(int64_t);
    int64_t *latency = malloc(bytes);
    int r;

    if (latency == NULL)
        return 3;
    if (tes_store_attach(name, &st, &err) != TES_OK)
        bench_die("attach", &err);
    config = bench_slot(st, bench_config_key);
    seen = tes_version_load(tes_store_version_word(st, config));
    bench_publish(st, bench_ack_key, 0);

    for (r = 0; r < rounds; r++) {
        seen = bench_spin(tes_store_version_word(st, config), seen);
        if (seen == 0)
            return 2;
        latency[r] = bench_now_ns() - bench_read(st, config);
        bench_publish(st, bench_ack_key, r);
    }
    tes_store_close(st);

    /* Reported at the end: the pipe holds far fewer rounds than we run. */
    if (write(report_fd, latency, bytes) != (ssize_t)bytes)
        return 3;
    free(latency);
    return 0;
}

/* Runs the two-process section and prints its figures. */
static void bench_propagation(tes_store *st, const char *name, int rounds)
{
    int fds[2];
    pid_t pid;
    int r, status;
    uint64_t acked;
    const tes_version_word *ack_word;
    double *latency = calloc((size_t)rounds, sizeof(double));

    if (latency == NULL || pipe(fds) != 0) {
        perror("store_latency");
        exit(1);
    }
    fflush(stdout);
    pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        close(fds[0]);
        _exit(bench_child(name, rounds, fds[1]));
    }
    close(fds[1]);

    /* The child publishes the ack key once it is attached and ready. */
    {
        tes_error err;
        uint32_t slot;
        int64_t give_up = bench_now_ns() + BENCH_SPIN_LIMIT_NS;

        while (tes_store_lookup(st, bench_ack_key, strlen(bench_ack_key),
                                &slot, &err) != TES_OK) {
            if (bench_now_ns() > give_up) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                fprintf(stderr, "store_latency: reader never started\n");
                exit(1);
            }
            usleep(100);
        }
        ack_word = tes_store_version_word(st, slot);
        acked = tes_version_load(ack_word);
    }

    for (r = 0; r < rounds; r++) {
        bench_publish(st, bench_config_key, bench_now_ns());
        acked = bench_spin(ack_word, acked);
        if (acked == 0)
            break;
    }
    for (r = 0; r < rounds; r++) {
        int64_t ns;

        if (read(fds[0], &ns, sizeof(ns)) != sizeof(ns))
            break;
        latency[r] = (double)ns;
    }
    close(fds[0]);
    if (r < rounds)
        kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    if (r == 0) {
        fprintf(stderr, "store_latency: the reader reported nothing\n");
        exit(1);
    }
    printf("propagation        %8.0f ns median, %.0f ns p99, %.0f ns max "
           "(%d rounds, publish to\n"
           "                   the reader's copy, reader spinning on the "
           "version word)\n",
           bench_quantile(latency, (size_t)r, 0.5),
           bench_quantile(latency, (size_t)r, 0.99),
           bench_quantile(latency, (size_t)r, 1.0), r);
    free(latency);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 20000;
    char name[TES_NAME_MAX_CHARS + 1];
    tes_create_options opts;
    tes_store *st;
    tes_error err;

    if (rounds < 1) {
        fprintf(stderr, "usage: store_latency [rounds]\n");
        return 2;
    }
    snprintf(name, sizeof(name), "tesenv-native-%ld", (long)getpid());
    memset(&opts, 0, sizeof(opts));
    opts.size_bytes = 8u << 20;
    opts.max_keys = 64;
    opts.max_readers = 16;
    opts.mode = 0600;
    if (tes_store_create(name, &opts, &st, &err) != TES_OK)
        bench_die("create", &err);
    bench_publish(st, bench_config_key, 0);

    printf("store, C only (csrc/store.h), %d-byte record\n",
           BENCH_RECORD_BYTES);
    bench_local(st);
    bench_propagation(st, name, rounds);

    tes_store_close(st);
    if (tes_store_unlink(name, &err) != TES_OK)
        bench_die("unlink", &err);
    return 0;
}
