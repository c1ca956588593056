/*
 * loadgen: a small load generator for Gearman job servers (binary protocol only).
 *
 * Used by bench/server_bench.py, which compiles it at run time:
 *     cc -O2 -o bench/.build/loadgen bench/loadgen.c
 *
 * Plain POSIX sockets + epoll, one event loop per process, no libgearman. It only ever
 * connects to 127.0.0.1. Modes (see bench/SERVER.md):
 *
 *   fg         N clients doing sequential foreground SUBMIT_JOB round trips plus M echo
 *              workers; jobs/s and round-trip latency over a fixed window after a warm-up.
 *   bg-submit  K connections pipelining SUBMIT_JOB_BG (W outstanding each), no workers;
 *              submits/s counted by JOB_CREATED replies, C submits in total.
 *   drain      W workers drain Q already-queued jobs; time until all Q are done and every
 *              worker has been answered NO_JOB.
 *
 * Unique keys: empty for fg (no coalescing); for bg-submit distinct ones, <prefix>-<conn>-<n>,
 * unless --empty-unique (server_bench.py's default, see bench/SERVER.md).
 *
 * Prints exactly one JSON line on stdout (errors: a JSON line with "error" and exit 1).
 * Everything is bounded: --duration/--warmup for fg, --count and --time-limit for the others,
 * and a hard alarm() at --time-limit + 30 s for all of them.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Packet types used here. */
enum {
    CAN_DO = 1,
    PRE_SLEEP = 4,
    NOOP = 6,
    SUBMIT_JOB = 7,
    JOB_CREATED = 8,
    GRAB_JOB = 9,
    NO_JOB = 10,
    JOB_ASSIGN = 11,
    WORK_STATUS = 12,
    WORK_COMPLETE = 13,
    WORK_FAIL = 14,
    SUBMIT_JOB_BG = 18,
    ERROR = 19,
    WORK_DATA = 28,
    WORK_WARNING = 29,
    GRAB_JOB_UNIQ = 30,
    JOB_ASSIGN_UNIQ = 31,
};

enum { ROLE_CLIENT, ROLE_WORKER, ROLE_SUBMITTER };
enum { MODE_FG, MODE_BG, MODE_DRAIN };

#define HEADER 12
#define MAX_BODY (64u * 1024u * 1024u)
#define HIST_BINS 200000 /* 1 us bins up to 200 ms; beyond that: overflow bin */

typedef struct {
    char *data;
    size_t off, len, cap; /* valid bytes: data[off .. len) */
} buf_t;

typedef struct conn {
    int fd;
    int role;
    int index;
    int epollout; /* EPOLLOUT currently requested */
    buf_t in, out;
    /* client (fg) */
    int64_t sent_ns;
    int waiting;  /* a submit is outstanding */
    char handle[128];
    size_t handle_len;
    /* worker */
    int sleeping; /* sent PRE_SLEEP, waiting for NOOP */
    int grabbing; /* a GRAB_JOB_UNIQ is outstanding */
    int done;     /* drain: got NO_JOB after the target was reached */
    uint64_t completes;
    /* submitter */
    uint64_t target, sent, acked;
} conn_t;

/* ---- options ---------------------------------------------------------------------------- */
static int opt_mode = -1;
static int opt_port = 0;
static int opt_clients = 8;
static int opt_workers = 4;
static int opt_conns = 4;
static int opt_window = 1000;
static int opt_payload = 100;
static double opt_duration = 5.0;
static double opt_warmup = 1.0;
static double opt_time_limit = 60.0;
static uint64_t opt_count = 100000;
static const char *opt_function = "bench";
static const char *opt_unique_prefix = NULL;
static int opt_fork = 0;
static int opt_empty_unique = 0;
static int opt_server_pid = 0;

/* ---- state ------------------------------------------------------------------------------ */
static int epfd = -1;
static conn_t *conns = NULL;
static int nconns = 0;
static char *payload = NULL;
static int64_t t_start, t_warm, t_end; /* ns, CLOCK_MONOTONIC */
static int in_window = 0;
static uint64_t window_jobs = 0;     /* fg: client completions inside the window */
static uint64_t total_client_jobs = 0;
static uint64_t total_completes = 0; /* WORK_COMPLETE sent by our workers */
static uint64_t total_acked = 0;     /* bg: JOB_CREATED received */
static uint64_t noops = 0, no_jobs = 0;
static uint32_t *hist = NULL;
static uint64_t hist_overflow = 0;
static int64_t lat_max = 0;
static double cpu_window_start = 0, server_cpu_window_start = -1;
static double cpu_window = 0, server_cpu_window = -1;
static int drain_target_reached = 0;
static int is_child = 0;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double self_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* utime + stime of another process (all its threads), in seconds; -1 if unreadable. */
static double proc_cpu(int pid) {
    if (pid <= 0) return -1;
    char path[64], text[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) return -1;
    text[n] = 0;
    char *p = strrchr(text, ')'); /* comm may contain spaces */
    if (!p) return -1;
    p += 2;                       /* now at field 3 (state) */
    unsigned long long utime = 0, stime = 0;
    for (int field = 3; field <= 15 && *p; field++) {
        if (field == 14) utime = strtoull(p, NULL, 10);
        if (field == 15) { stime = strtoull(p, NULL, 10); break; }
        p = strchr(p, ' ');
        if (!p) return -1;
        p++;
    }
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static void json_escape_print(const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') putchar('\\');
        if ((unsigned char)*s < 0x20) { printf("\\u%04x", *s); continue; }
        putchar(*s);
    }
}

static void die(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (is_child) {
        fprintf(stderr, "loadgen worker process: %s\n", msg);
        _exit(1);
    }
    printf("{\"error\": \"");
    json_escape_print(msg);
    printf("\"}\n");
    fflush(stdout);
    exit(1);
}

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "{\"error\": \"hard time limit exceeded\"}\n";
    if (!is_child) { ssize_t r = write(1, msg, sizeof msg - 1); (void)r; }
    _exit(2);
}

/* ---- buffers ---------------------------------------------------------------------------- */
static void buf_reserve(buf_t *b, size_t extra) {
    if (b->len + extra <= b->cap) return;
    if (b->off > 0) { /* compact first */
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + extra <= b->cap) return;
    }
    size_t cap = b->cap ? b->cap : 65536;
    while (cap < b->len + extra) cap *= 2;
    b->data = realloc(b->data, cap);
    if (!b->data) die("out of memory");
    b->cap = cap;
}

/* Append one request packet; args are joined with NUL separators. */
static void put_packet(conn_t *c, uint32_t type, int nargs, const char *const *args, const size_t *lens) {
    size_t body = 0;
    for (int i = 0; i < nargs; i++) body += lens[i] + (i + 1 < nargs ? 1 : 0);
    buf_reserve(&c->out, HEADER + body);
    unsigned char *p = (unsigned char *)c->out.data + c->out.len;
    memcpy(p, "\0REQ", 4);
    uint32_t be_type = htonl(type), be_len = htonl((uint32_t)body);
    memcpy(p + 4, &be_type, 4);
    memcpy(p + 8, &be_len, 4);
    p += HEADER;
    for (int i = 0; i < nargs; i++) {
        memcpy(p, args[i], lens[i]);
        p += lens[i];
        if (i + 1 < nargs) *p++ = 0;
    }
    c->out.len += HEADER + body;
}

static void put_empty(conn_t *c, uint32_t type) { put_packet(c, type, 0, NULL, NULL); }

static void set_epollout(conn_t *c, int want) {
    if (c->epollout == want) return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    c->epollout = want;
}

static void flush_out(conn_t *c) {
    while (c->out.off < c->out.len) {
        ssize_t n = write(c->fd, c->out.data + c->out.off, c->out.len - c->out.off);
        if (n > 0) { c->out.off += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        die("write to server: %s", n < 0 ? strerror(errno) : "short write");
    }
    if (c->out.off == c->out.len) c->out.off = c->out.len = 0;
    set_epollout(c, c->out.off < c->out.len);
}

/* ---- protocol actions ------------------------------------------------------------------- */
static void client_submit(conn_t *c) {
    const char *args[3] = {opt_function, "", payload};
    size_t lens[3] = {strlen(opt_function), 0, (size_t)opt_payload};
    put_packet(c, SUBMIT_JOB, 3, args, lens);
    c->waiting = 1;
    c->handle_len = 0;
    c->sent_ns = now_ns();
}

static void worker_grab(conn_t *c) {
    put_empty(c, GRAB_JOB_UNIQ);
    c->grabbing = 1;
    c->sleeping = 0;
}

static void submitter_fill(conn_t *c) {
    char unique[96];
    const char *args[3] = {opt_function, unique, payload};
    size_t lens[3] = {strlen(opt_function), 0, (size_t)opt_payload};
    while (c->sent < c->target && c->sent - c->acked < (uint64_t)opt_window) {
        if (opt_empty_unique) lens[1] = 0;
        else lens[1] = (size_t)snprintf(unique, sizeof unique, "%s-%d-%llu", opt_unique_prefix, c->index, (unsigned long long)c->sent);
        put_packet(c, SUBMIT_JOB_BG, 3, args, lens);
        c->sent++;
    }
}

/* Split a packet body into at most max NUL-separated args (the last takes the rest). */
static int split_args(char *body, size_t len, int max, char **args, size_t *lens) {
    int n = 0;
    size_t start = 0;
    if (max == 0) return 0;
    for (size_t i = 0; i < len && n < max - 1; i++) {
        if (body[i] == 0) {
            args[n] = body + start;
            lens[n] = i - start;
            n++;
            start = i + 1;
        }
    }
    args[n] = body + start;
    lens[n] = len - start;
    return n + 1;
}

static void hist_add(int64_t ns) {
    if (ns > lat_max) lat_max = ns;
    int64_t us = ns / 1000;
    if (us < HIST_BINS) hist[us]++;
    else hist_overflow++;
}

static void check_drain_done(void);

static void handle_packet(conn_t *c, uint32_t type, char *body, size_t len) {
    char *args[4];
    size_t lens[4];
    if (type == ERROR) {
        int n = split_args(body, len, 2, args, lens);
        die("server sent ERROR %.*s: %.*s", (int)lens[0], args[0], n > 1 ? (int)lens[1] : 0, n > 1 ? args[1] : "");
    }
    if (c->role == ROLE_CLIENT) {
        if (type == JOB_CREATED) {
            if (len >= sizeof c->handle) die("job handle too long");
            memcpy(c->handle, body, len);
            c->handle_len = len;
        } else if (type == WORK_COMPLETE) {
            if (split_args(body, len, 2, args, lens) != 2) die("malformed WORK_COMPLETE");
            if (!c->waiting || lens[0] != c->handle_len || memcmp(args[0], c->handle, lens[0]) != 0)
                die("WORK_COMPLETE for an unexpected job handle");
            if (lens[1] != (size_t)opt_payload) die("WORK_COMPLETE with %zu bytes of data, sent %d", lens[1], opt_payload);
            int64_t t = now_ns();
            c->waiting = 0;
            total_client_jobs++;
            if (t >= t_warm && t < t_end) {
                window_jobs++;
                hist_add(t - c->sent_ns);
            }
            if (t < t_end) client_submit(c);
        } else if (type == WORK_FAIL) {
            die("a foreground job failed (WORK_FAIL)");
        } else if (type == WORK_STATUS || type == WORK_DATA || type == WORK_WARNING) {
            /* not sent by our workers; ignore */
        } else {
            die("client got unexpected packet type %u", type);
        }
    } else if (c->role == ROLE_WORKER) {
        if (type == JOB_ASSIGN_UNIQ || type == JOB_ASSIGN) {
            int n = split_args(body, len, type == JOB_ASSIGN_UNIQ ? 4 : 3, args, lens);
            if (n < (type == JOB_ASSIGN_UNIQ ? 4 : 3)) die("malformed JOB_ASSIGN");
            c->grabbing = 0;
            const char *out[2] = {args[0], args[n - 1]};
            size_t outl[2] = {lens[0], lens[n - 1]};
            put_packet(c, WORK_COMPLETE, 2, out, outl);
            c->completes++;
            total_completes++;
            if (opt_mode == MODE_DRAIN && !drain_target_reached && total_completes >= opt_count) {
                drain_target_reached = 1;
                /* wake sleeping workers so that each one gets a final NO_JOB */
                for (int i = 0; i < nconns; i++)
                    if (conns[i].role == ROLE_WORKER && conns[i].sleeping) {
                        worker_grab(&conns[i]);
                        flush_out(&conns[i]);
                    }
            }
            worker_grab(c);
        } else if (type == NO_JOB) {
            no_jobs++;
            c->grabbing = 0;
            if (opt_mode == MODE_DRAIN && drain_target_reached) {
                c->done = 1;
                check_drain_done();
            } else {
                put_empty(c, PRE_SLEEP);
                c->sleeping = 1;
            }
        } else if (type == NOOP) {
            noops++;
            if (!c->grabbing && !c->done) worker_grab(c);
        } else {
            die("worker got unexpected packet type %u", type);
        }
    } else { /* submitter */
        if (type == JOB_CREATED) {
            c->acked++;
            total_acked++;
        } else {
            die("submitter got unexpected packet type %u", type);
        }
    }
}

static void read_conn(conn_t *c) {
    for (;;) {
        buf_reserve(&c->in, 65536);
        ssize_t n = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len);
        if (n > 0) {
            c->in.len += (size_t)n;
            if (c->in.len < c->in.cap) break; /* drained the socket (probably); don't spin */
            continue;
        }
        if (n == 0) die("server closed the connection");
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        die("read from server: %s", strerror(errno));
    }
    while (c->in.len - c->in.off >= HEADER) {
        unsigned char *p = (unsigned char *)c->in.data + c->in.off;
        if (memcmp(p, "\0RES", 4) != 0) die("bad magic from server");
        uint32_t type, len;
        memcpy(&type, p + 4, 4);
        memcpy(&len, p + 8, 4);
        type = ntohl(type);
        len = ntohl(len);
        if (len > MAX_BODY) die("packet body too large (%u)", len);
        if (c->in.len - c->in.off < HEADER + (size_t)len) break;
        c->in.off += HEADER + len;
        handle_packet(c, type, (char *)p + HEADER, len);
    }
    if (c->in.off == c->in.len) c->in.off = c->in.len = 0;
}

/* ---- setup ------------------------------------------------------------------------------ */
static void open_conn(conn_t *c, int role, int index) {
    memset(c, 0, sizeof *c);
    c->role = role;
    c->index = index;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) die("socket: %s", strerror(errno));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* only ever 127.0.0.1 */
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect 127.0.0.1:%d: %s", opt_port, strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
}

static void start_worker(conn_t *c) {
    const char *args[1] = {opt_function};
    size_t lens[1] = {strlen(opt_function)};
    put_packet(c, CAN_DO, 1, args, lens);
    worker_grab(c);
    flush_out(c);
}

static int64_t drain_done_ns = 0;
static void check_drain_done(void) {
    for (int i = 0; i < nconns; i++)
        if (conns[i].role == ROLE_WORKER && !conns[i].done) return;
    drain_done_ns = now_ns();
}

/* Run the event loop until should_stop() says so. */
static void event_loop(int (*should_stop)(int64_t)) {
    struct epoll_event events[256];
    for (;;) {
        int64_t t = now_ns();
        if (opt_mode == MODE_FG) {
            if (!in_window && t >= t_warm) {
                in_window = 1;
                cpu_window_start = self_cpu();
                server_cpu_window_start = proc_cpu(opt_server_pid);
            }
        }
        if (should_stop(t)) return;
        int n = epoll_wait(epfd, events, 256, 5);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) read_conn(c);
            if (c->role == ROLE_SUBMITTER) submitter_fill(c);
            if (c->out.len > c->out.off || (events[i].events & EPOLLOUT)) flush_out(c);
        }
    }
}

static int fg_stop(int64_t t) { return t >= t_end; }

static int bg_stop(int64_t t) {
    return total_acked >= opt_count || t >= t_start + (int64_t)(opt_time_limit * 1e9);
}

static int drain_stop(int64_t t) {
    return drain_done_ns != 0 || t >= t_start + (int64_t)(opt_time_limit * 1e9);
}

static double hist_percentile(double q) {
    uint64_t total = hist_overflow;
    for (int i = 0; i < HIST_BINS; i++) total += hist[i];
    if (total == 0) return 0;
    uint64_t rank = (uint64_t)(q * (double)total);
    if (rank >= total) rank = total - 1;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_BINS; i++) {
        seen += hist[i];
        if (seen > rank) return (i + 0.5) / 1000.0; /* ms, bin centre */
    }
    return lat_max / 1e6;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen fg|bg-submit|drain --port P [options]\n"
            "  --clients N       fg: client connections (8)\n"
            "  --workers M       fg/drain: worker connections (4)\n"
            "  --fork            fg: run the workers in a second process\n"
            "  --payload B       payload bytes (100)\n"
            "  --warmup S        fg: warm-up seconds (1)\n"
            "  --duration S      fg: measured seconds (5)\n"
            "  --conns K         bg-submit: connections (4)\n"
            "  --window W        bg-submit: outstanding submits per connection (1000)\n"
            "  --count C         bg-submit: submits in total; drain: jobs expected (100000)\n"
            "  --function NAME   function name (bench)\n"
            "  --unique-prefix P bg-submit: unique keys are P-<conn>-<n> (default: pid-time)\n"
            "  --empty-unique    bg-submit: send empty unique keys instead\n"
            "  --time-limit S    bg-submit/drain: stop after S seconds, report partial (60)\n"
            "  --server-pid PID  also report the server's CPU use over the measurement\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    if (!strcmp(argv[1], "fg")) opt_mode = MODE_FG;
    else if (!strcmp(argv[1], "bg-submit")) opt_mode = MODE_BG;
    else if (!strcmp(argv[1], "drain")) opt_mode = MODE_DRAIN;
    else usage();
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(a, name) && v && ++i)
        if (ARG("--port")) opt_port = atoi(v);
        else if (ARG("--clients")) opt_clients = atoi(v);
        else if (ARG("--workers")) opt_workers = atoi(v);
        else if (ARG("--conns")) opt_conns = atoi(v);
        else if (ARG("--window")) opt_window = atoi(v);
        else if (ARG("--payload")) opt_payload = atoi(v);
        else if (ARG("--duration")) opt_duration = atof(v);
        else if (ARG("--warmup")) opt_warmup = atof(v);
        else if (ARG("--time-limit")) opt_time_limit = atof(v);
        else if (ARG("--count")) opt_count = strtoull(v, NULL, 10);
        else if (ARG("--function")) opt_function = v;
        else if (ARG("--unique-prefix")) opt_unique_prefix = v;
        else if (ARG("--server-pid")) opt_server_pid = atoi(v);
        else if (!strcmp(a, "--fork")) opt_fork = 1;
        else if (!strcmp(a, "--empty-unique")) opt_empty_unique = 1;
        else usage();
#undef ARG
    }
    if (opt_port <= 0 || opt_port > 65535) usage();
    if (opt_clients < 1 || opt_workers < 1 || opt_conns < 1 || opt_window < 1 || opt_payload < 0 ||
        opt_clients > 10000 || opt_workers > 10000 || opt_conns > 10000 || opt_count < 1 ||
        opt_duration <= 0 || opt_warmup < 0 || opt_time_limit <= 0 || opt_duration + opt_warmup > 3600 || opt_time_limit > 3600)
        die("option out of range");
    signal(SIGPIPE, SIG_IGN);
    double hard = (opt_mode == MODE_FG ? opt_warmup + opt_duration : opt_time_limit) + 30;
    signal(SIGALRM, on_alarm);
    alarm((unsigned)hard);

    char default_prefix[64];
    if (!opt_unique_prefix) {
        snprintf(default_prefix, sizeof default_prefix, "%d-%lld", (int)getpid(), (long long)time(NULL));
        opt_unique_prefix = default_prefix;
    }
    payload = malloc((size_t)opt_payload + 1);
    for (int i = 0; i < opt_payload; i++) payload[i] = (char)('a' + i % 26);
    payload[opt_payload] = 0;

    epfd = epoll_create1(0);
    if (epfd < 0) die("epoll_create1: %s", strerror(errno));

    if (opt_mode == MODE_FG) {
        hist = calloc(HIST_BINS, sizeof *hist);
        if (!hist) die("out of memory");
        /* workers first, so that the first submits find them */
        int pipefd[2] = {-1, -1};
        pid_t child = -1;
        t_start = now_ns();
        t_warm = t_start + (int64_t)(opt_warmup * 1e9);
        t_end = t_warm + (int64_t)(opt_duration * 1e9);
        if (opt_fork) {
            if (pipe(pipefd) < 0) die("pipe: %s", strerror(errno));
            fflush(stdout);
            child = fork();
            if (child < 0) die("fork: %s", strerror(errno));
            if (child == 0) {
                is_child = 1;
                close(pipefd[0]);
                close(epfd);
                epfd = epoll_create1(0);
                nconns = opt_workers;
                conns = calloc((size_t)nconns, sizeof *conns);
                for (int i = 0; i < opt_workers; i++) open_conn(&conns[i], ROLE_WORKER, i);
                for (int i = 0; i < opt_workers; i++) start_worker(&conns[i]);
                /* keep serving a little past the end so the parent's last round trips finish */
                t_end += 200000000LL;
                event_loop(fg_stop);
                double cpu = self_cpu() - cpu_window_start;
                char line[128];
                int len = snprintf(line, sizeof line, "%.6f %llu\n", cpu, (unsigned long long)total_completes);
                ssize_t r = write(pipefd[1], line, (size_t)len);
                (void)r;
                _exit(0);
            }
            close(pipefd[1]);
            nconns = opt_clients;
            conns = calloc((size_t)nconns, sizeof *conns);
            usleep(50000); /* let the workers connect and register */
            for (int i = 0; i < opt_clients; i++) open_conn(&conns[i], ROLE_CLIENT, i);
        } else {
            nconns = opt_clients + opt_workers;
            conns = calloc((size_t)nconns, sizeof *conns);
            for (int i = 0; i < opt_workers; i++) open_conn(&conns[i], ROLE_WORKER, i);
            for (int i = 0; i < opt_workers; i++) start_worker(&conns[i]);
            for (int i = 0; i < opt_clients; i++) open_conn(&conns[opt_workers + i], ROLE_CLIENT, i);
        }
        for (int i = 0; i < nconns; i++)
            if (conns[i].role == ROLE_CLIENT) {
                client_submit(&conns[i]);
                flush_out(&conns[i]);
            }
        event_loop(fg_stop);
        cpu_window = self_cpu() - cpu_window_start;
        if (server_cpu_window_start >= 0) server_cpu_window = proc_cpu(opt_server_pid) - server_cpu_window_start;
        double child_cpu = 0;
        unsigned long long child_completes = 0;
        if (opt_fork) {
            char line[128] = {0};
            ssize_t r = read(pipefd[0], line, sizeof line - 1);
            int status = 0;
            waitpid(child, &status, 0);
            if (r <= 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) die("worker process failed");
            sscanf(line, "%lf %llu", &child_cpu, &child_completes);
            total_completes = child_completes;
        }
        double secs = opt_duration;
        printf("{\"mode\": \"fg\", \"clients\": %d, \"workers\": %d, \"fork\": %s, \"payload\": %d, "
               "\"warmup_s\": %.3f, \"duration_s\": %.3f, \"jobs\": %llu, \"jobs_per_s\": %.1f, "
               "\"p50_ms\": %.4f, \"p90_ms\": %.4f, \"p99_ms\": %.4f, \"max_ms\": %.3f, "
               "\"total_round_trips\": %llu, \"worker_completes\": %llu, \"noops\": %llu, \"no_jobs\": %llu, "
               "\"loadgen_cpu\": %.3f, \"loadgen_worker_process_cpu\": %.3f, \"server_cpu\": %.3f}\n",
               opt_clients, opt_workers, opt_fork ? "true" : "false", opt_payload, opt_warmup, secs,
               (unsigned long long)window_jobs, window_jobs / secs, hist_percentile(0.50), hist_percentile(0.90),
               hist_percentile(0.99), lat_max / 1e6, (unsigned long long)total_client_jobs,
               (unsigned long long)total_completes, (unsigned long long)noops, (unsigned long long)no_jobs,
               cpu_window / secs, child_cpu / secs, server_cpu_window >= 0 ? server_cpu_window / secs : -1.0);
        return 0;
    }

    if (opt_mode == MODE_BG) {
        nconns = opt_conns;
        conns = calloc((size_t)nconns, sizeof *conns);
        for (int i = 0; i < nconns; i++) {
            open_conn(&conns[i], ROLE_SUBMITTER, i);
            conns[i].target = opt_count / (uint64_t)nconns + ((uint64_t)i < opt_count % (uint64_t)nconns ? 1 : 0);
        }
        double cpu0 = self_cpu(), scpu0 = proc_cpu(opt_server_pid);
        t_start = now_ns();
        for (int i = 0; i < nconns; i++) {
            submitter_fill(&conns[i]);
            flush_out(&conns[i]);
        }
        event_loop(bg_stop);
        int64_t t = now_ns();
        double secs = (t - t_start) / 1e9;
        double cpu = self_cpu() - cpu0, scpu = scpu0 >= 0 ? proc_cpu(opt_server_pid) - scpu0 : -1;
        printf("{\"mode\": \"bg-submit\", \"conns\": %d, \"window\": %d, \"payload\": %d, \"count\": %llu, "
               "\"acked\": %llu, \"complete\": %s, \"seconds\": %.4f, \"submits_per_s\": %.1f, "
               "\"loadgen_cpu\": %.3f, \"server_cpu\": %.3f}\n",
               opt_conns, opt_window, opt_payload, (unsigned long long)opt_count, (unsigned long long)total_acked,
               total_acked >= opt_count ? "true" : "false", secs, total_acked / secs, cpu / secs,
               scpu >= 0 ? scpu / secs : -1.0);
        return 0;
    }

    /* drain */
    nconns = opt_workers;
    conns = calloc((size_t)nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) open_conn(&conns[i], ROLE_WORKER, i);
    double cpu0 = self_cpu(), scpu0 = proc_cpu(opt_server_pid);
    t_start = now_ns();
    for (int i = 0; i < nconns; i++) start_worker(&conns[i]);
    event_loop(drain_stop);
    int64_t t = drain_done_ns ? drain_done_ns : now_ns();
    double secs = (t - t_start) / 1e9;
    double cpu = self_cpu() - cpu0, scpu = scpu0 >= 0 ? proc_cpu(opt_server_pid) - scpu0 : -1;
    printf("{\"mode\": \"drain\", \"workers\": %d, \"payload\": %d, \"expected\": %llu, \"jobs\": %llu, "
           "\"complete\": %s, \"seconds\": %.4f, \"jobs_per_s\": %.1f, \"no_jobs\": %llu, \"noops\": %llu, "
           "\"loadgen_cpu\": %.3f, \"server_cpu\": %.3f}\n",
           opt_workers, opt_payload, (unsigned long long)opt_count, (unsigned long long)total_completes,
           drain_done_ns ? "true" : "false", secs, total_completes / secs, (unsigned long long)no_jobs,
           (unsigned long long)noops, cpu / secs, scpu >= 0 ? scpu / secs : -1.0);
    return 0;
}
