/* tcpclient: a non-blocking TCP client. It connects (non-blocking connect, completion read with
 * SO_ERROR), then runs commands from its arguments:
 *   send TEXT   ordinary data
 *   oob TEXT    TEXT with its last byte urgent (send(..., MSG_OOB): "OOB" sends "OO" inline, "B" urgent)
 *   read N      reads N bytes and prints them as "got:..."
 *   sleep MS
 *   keepalive SECS  SO_KEEPALIVE: the first probe after SECS idle, then every second, 2 unanswered
 *               probes end the connection (so a peer that does not answer them shows quickly)
 *   wait MS     waits up to MS for the connection to have something to say, and prints it:
 *               "wait: data", "wait: eof", "wait: ERROR TEXT" (e.g. a reset) or "wait: timeout"
 *   rr NxSIZE   N request/response exchanges with an echo server (TCP_NODELAY, SIZE bytes each
 *               way, N <= 100000, SIZE <= 65536), timed with CLOCK_MONOTONIC: "rr n=N p50_us=N
 *               p99_us=N min_us=N max_us=N"
 *   info -      prints what TCP_INFO says the handshake agreed and the smoothed RTT: "info
 *               options=ts,sack,wscale snd_wscale=N rcv_wscale=N snd_mss=N pmtu=N rtt_us=N"
 *
 *   tcpclient HOST PORT COMMAND ARG [COMMAND ARG ...]      (HOST: an IPv4 or IPv6 address)
 * Exit status: 0, 2 when the connection fails (the errno name is printed), 1 on other errors.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int cmp_u64(const void *a, const void *b)
{
	unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;
	return x < y ? -1 : x > y;
}

static unsigned long long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (unsigned long long)t.tv_sec * 1000000000ull + t.tv_nsec;
}

static int wait_for(int fd, short ev, int ms);

/* Sends all of buf and reads as much back, each within 10 s. */
static int exchange(int fd, char *buf, size_t size)
{
	size_t done = 0;
	while (done < size) {
		ssize_t r = send(fd, buf + done, size - done, 0);
		if (r < 0 && errno != EAGAIN)
			return -1;
		if (r < 0 && !wait_for(fd, POLLOUT, 10000))
			return -1;
		if (r > 0)
			done += r;
	}
	for (done = 0; done < size;) {
		ssize_t r;
		if (!wait_for(fd, POLLIN, 10000))
			return -1;
		r = recv(fd, buf + done, size - done, 0);
		if (r <= 0)
			return -1;
		done += r;
	}
	return 0;
}

static int wait_for(int fd, short ev, int ms)
{
	struct pollfd p = { .fd = fd, .events = ev };
	return poll(&p, 1, ms) == 1;
}

int main(int argc, char **argv)
{
	struct sockaddr_storage to = { 0 };
	struct sockaddr_in *to4 = (struct sockaddr_in *)&to;
	struct sockaddr_in6 *to6 = (struct sockaddr_in6 *)&to;
	socklen_t to_len;
	int fd, err = 0, i;
	socklen_t len = sizeof(err);

	if (argc < 3 || (argc - 3) % 2) {
		fprintf(stderr, "usage: tcpclient HOST PORT [send|oob|read|sleep ARG]...\n");
		return 64;
	}
	if (strchr(argv[1], ':')) {
		to6->sin6_family = AF_INET6;
		to6->sin6_port = htons(atoi(argv[2]));
		if (inet_pton(AF_INET6, argv[1], &to6->sin6_addr) != 1)
			return 64;
		to_len = sizeof(*to6);
	} else {
		to4->sin_family = AF_INET;
		to4->sin_port = htons(atoi(argv[2]));
		if (inet_pton(AF_INET, argv[1], &to4->sin_addr) != 1)
			return 64;
		to_len = sizeof(*to4);
	}
	fd = socket(to.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (connect(fd, (struct sockaddr *)&to, to_len) < 0 && errno != EINPROGRESS) {
		printf("connect: %s\n", strerror(errno));
		return 2;
	}
	if (!wait_for(fd, POLLOUT, 10000)) {
		printf("connect: timeout\n");
		return 2;
	}
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
	if (err) {
		printf("connect: %s\n", strerror(err));
		return 2;
	}
	printf("connected\n");
	for (i = 3; i < argc; i += 2) {
		const char *cmd = argv[i], *arg = argv[i + 1];
		size_t n = strlen(arg);
		if (!strcmp(cmd, "send") || !strcmp(cmd, "oob")) {
			int oob = !strcmp(cmd, "oob");
			if (oob && n > 1 && send(fd, arg, n - 1, 0) != (ssize_t)(n - 1))
				return 1;
			if (send(fd, oob ? arg + n - 1 : arg, oob ? 1 : n, oob ? MSG_OOB : 0) < 0) {
				perror("send");
				return 1;
			}
		} else if (!strcmp(cmd, "read")) {
			size_t want = atoi(arg), got = 0;
			char buf[65536];
			while (got < want && wait_for(fd, POLLIN, 10000)) {
				ssize_t r = recv(fd, buf + got, want - got, 0);
				if (r < 0)
					printf("read: %s\n", strerror(errno));
				if (r <= 0)
					break;
				got += r;
			}
			printf("got:%.*s\n", (int)got, buf);
		} else if (!strcmp(cmd, "sleep")) {
			usleep(atoi(arg) * 1000);
		} else if (!strcmp(cmd, "wait")) {
			char c;
			ssize_t r;
			if (!wait_for(fd, POLLIN, atoi(arg))) {
				printf("wait: timeout\n");
			} else if ((r = recv(fd, &c, 1, MSG_PEEK)) > 0) {
				printf("wait: data\n");
			} else if (r == 0) {
				printf("wait: eof\n");
			} else {
				printf("wait: %s\n", strerror(errno));
			}
			fflush(stdout);
		} else if (!strcmp(cmd, "rr")) {
			unsigned long count = 0, size = 0, k;
			unsigned long long *lat;
			static char buf[65536];
			int one = 1;
			if (sscanf(arg, "%lux%lu", &count, &size) != 2 || !count || count > 100000 ||
			    !size || size > sizeof(buf)) {
				fprintf(stderr, "rr wants NxSIZE\n");
				return 64;
			}
			lat = calloc(count, sizeof(*lat));
			if (!lat)
				return 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			memset(buf, 'r', size);
			for (k = 0; k < count; k++) {
				unsigned long long t0 = now_ns();
				if (exchange(fd, buf, size)) {
					printf("rr: failed after %lu: %s\n", k, strerror(errno));
					return 1;
				}
				lat[k] = now_ns() - t0;
			}
			qsort(lat, count, sizeof(*lat), cmp_u64);
			printf("rr n=%lu p50_us=%llu p99_us=%llu min_us=%llu max_us=%llu\n", count,
			       lat[count / 2] / 1000, lat[count * 99 / 100] / 1000, lat[0] / 1000,
			       lat[count - 1] / 1000);
			fflush(stdout);
			free(lat);
		} else if (!strcmp(cmd, "info")) {
			struct tcp_info ti;
			socklen_t tl = sizeof(ti);
			if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl)) {
				perror("TCP_INFO");
				return 1;
			}
			printf("info options=%s%s%s snd_wscale=%u rcv_wscale=%u snd_mss=%u pmtu=%u "
			       "rtt_us=%u\n",
			       ti.tcpi_options & TCPI_OPT_TIMESTAMPS ? "ts," : "",
			       ti.tcpi_options & TCPI_OPT_SACK ? "sack," : "",
			       ti.tcpi_options & TCPI_OPT_WSCALE ? "wscale" : "",
			       ti.tcpi_snd_wscale, ti.tcpi_rcv_wscale, ti.tcpi_snd_mss, ti.tcpi_pmtu,
			       ti.tcpi_rtt);
			fflush(stdout);
		} else if (!strcmp(cmd, "keepalive")) {
			int on = 1, idle = atoi(arg), intvl = 1, cnt = 2;
			if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) ||
			    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) ||
			    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) ||
			    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt))) {
				perror("keepalive");
				return 1;
			}
		} else {
			fprintf(stderr, "unknown command %s\n", cmd);
			return 64;
		}
	}
	fflush(stdout);
	close(fd);
	return 0;
}
