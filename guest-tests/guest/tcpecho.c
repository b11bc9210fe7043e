/* tcpecho: a pre-forking TCP echo server on a dual-stack AF_INET6 socket (IPv4 clients arrive as
 * ::ffff:a.b.c.d). Each worker accepts, prints the client's address, and echoes what it reads;
 * urgent data (MSG_OOB) is read separately and reported as "oob:X" on stdout.
 *
 *   tcpecho PORT WORKERS
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void serve(int conn)
{
	char buf[65536];
	for (;;) {
		struct pollfd p = { .fd = conn, .events = POLLIN | POLLPRI };
		if (poll(&p, 1, -1) < 0)
			return;
		if (p.revents & POLLPRI) {
			char oob;
			if (recv(conn, &oob, 1, MSG_OOB) == 1) {
				printf("oob:%c\n", oob);
				fflush(stdout);
			}
		}
		if (p.revents & (POLLIN | POLLHUP)) {
			ssize_t n = recv(conn, buf, sizeof(buf), 0);
			if (n < 0 && errno == EINVAL)
				continue; /* at the urgent mark with nothing inline yet */
			if (n <= 0)
				return;
			if (write(conn, buf, n) != n)
				return;
		}
	}
}

static void worker(int l)
{
	for (;;) {
		struct sockaddr_in6 from;
		socklen_t len = sizeof(from);
		char addr[INET6_ADDRSTRLEN];
		int c = accept(l, (struct sockaddr *)&from, &len);
		if (c < 0)
			continue;
		inet_ntop(AF_INET6, &from.sin6_addr, addr, sizeof(addr));
		printf("[%d] client %s port %d\n", getpid(), addr, ntohs(from.sin6_port));
		fflush(stdout);
		serve(c);
		close(c);
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_in6 me = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT };
	int l, one = 1, zero = 0, i, workers;

	if (argc != 3) {
		fprintf(stderr, "usage: tcpecho PORT WORKERS\n");
		return 64;
	}
	me.sin6_port = htons(atoi(argv[1]));
	workers = atoi(argv[2]);
	l = socket(AF_INET6, SOCK_STREAM, 0);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (l < 0 || bind(l, (struct sockaddr *)&me, sizeof(me)) < 0 || listen(l, 64) < 0) {
		perror("listen");
		return 1;
	}
	printf("listening on [::]:%s with %d workers\n", argv[1], workers);
	fflush(stdout);
	for (i = 0; i < workers; i++)
		if (fork() == 0) {
			worker(l);
			_exit(0);
		}
	while (wait(NULL) > 0)
		;
	return 0;
}
