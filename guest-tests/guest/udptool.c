/* udptool: the guest's UDP client and server for virtgate's tests (busybox has no UDP tools).
 *
 *   udptool send HOST PORT MESSAGE [TIMEOUT_S]
 *       sends MESSAGE from a connected socket and prints the reply (HOST: IPv4 or IPv6).
 *       exit 0 with a reply, 2 on timeout, 3 when the remote refused (ICMP port unreachable).
 *   udptool echo PORT COUNT
 *       answers COUNT datagrams on [::]:PORT (IPv4 too, as mapped addresses) with their own
 *       bytes, printing each sender.
 *   udptool burst HOST PORT COUNT SIZE
 *       sends COUNT datagrams of SIZE bytes (1 ms apart) from a connected socket, reading
 *       replies as they come and until 2 s pass without one; prints "sent N received M". Every
 *       reply is read, so the kernel checks each one's checksum (Udp(6)InCsumErrors).
 *   udptool mtu HOST
 *       prints "mtu N": the path MTU towards HOST as a connected socket sees it (IP_MTU or
 *       IPV6_MTU: the route's MTU, lowered by Packet Too Big / Fragmentation Needed). Sends
 *       nothing.
 *   udptool gso HOST PORT SIZE SEGMENT
 *       sends SIZE bytes (byte i is i % 251) in one send with UDP_SEGMENT=SEGMENT: the kernel
 *       makes one segmentation request of it, which the NIC splits (USO) or the stack does
 *       before it (software GSO); the peer gets SIZE/SEGMENT datagrams. Prints "sent N".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int usage(void)
{
	fprintf(stderr, "usage: udptool send HOST PORT MESSAGE [TIMEOUT_S] | udptool echo PORT COUNT | "
			"udptool burst HOST PORT COUNT SIZE | "
			"udptool mtu HOST | udptool gso HOST PORT SIZE SEGMENT\n");
	return 64;
}

/* A connected UDP socket to HOST:PORT, or -1. */
static int connect_to(const char *host, int port)
{
	struct sockaddr_storage to = { 0 };
	struct sockaddr_in *to4 = (struct sockaddr_in *)&to;
	struct sockaddr_in6 *to6 = (struct sockaddr_in6 *)&to;
	socklen_t to_len;
	int fd;

	if (inet_pton(AF_INET6, host, &to6->sin6_addr) == 1) {
		to6->sin6_family = AF_INET6;
		to6->sin6_port = htons(port);
		to_len = sizeof(*to6);
	} else if (inet_pton(AF_INET, host, &to4->sin_addr) == 1) {
		to4->sin_family = AF_INET;
		to4->sin_port = htons(port);
		to_len = sizeof(*to4);
	} else {
		return -1;
	}
	fd = socket(to.ss_family, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&to, to_len) < 0) {
		perror("socket/connect");
		return -1;
	}
	return fd;
}

static int do_burst(const char *host, int port, int count, int size)
{
	static char buf[65536];
	struct pollfd p;
	int fd = connect_to(host, port), sent = 0, received = 0, wait_ms;

	if (fd < 0 || size < 1 || size > (int)sizeof(buf) || count < 0)
		return usage();
	memset(buf, 'u', size);
	p.fd = fd;
	p.events = POLLIN;
	for (;;) {
		if (sent < count) {
			if (send(fd, buf, size, 0) == size)
				sent++;
			wait_ms = 1;
		} else {
			wait_ms = 2000;
		}
		if (poll(&p, 1, wait_ms) <= 0) {
			if (sent >= count)
				break;
			continue;
		}
		while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) >= 0)
			received++;
		memset(buf, 'u', size);
	}
	printf("sent %d received %d\n", sent, received);
	close(fd);
	return 0;
}

static int do_send(const char *host, int port, const char *msg, int timeout_s)
{
	char buf[65536];
	struct pollfd p;
	ssize_t n;
	int fd = connect_to(host, port);

	if (fd < 0)
		return 1;
	if (send(fd, msg, strlen(msg), 0) < 0) {
		perror("send");
		return errno == ECONNREFUSED ? 3 : 1;
	}
	p.fd = fd;
	p.events = POLLIN;
	if (poll(&p, 1, timeout_s * 1000) <= 0) {
		fprintf(stderr, "timeout\n");
		return 2;
	}
	n = recv(fd, buf, sizeof(buf) - 1, 0);
	if (n < 0) {
		if (errno == ECONNREFUSED) {
			printf("refused\n");
			return 3;
		}
		perror("recv");
		return 1;
	}
	buf[n] = 0;
	printf("reply: %s\n", buf);
	return 0;
}

static int do_echo(int port, int count)
{
	struct sockaddr_in6 me = { .sin6_family = AF_INET6, .sin6_port = htons(port),
				   .sin6_addr = IN6ADDR_ANY_INIT };
	struct sockaddr_in6 from;
	socklen_t len;
	char buf[65536], addr[INET6_ADDRSTRLEN];
	ssize_t n;
	int fd, i;

	fd = socket(AF_INET6, SOCK_DGRAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&me, sizeof(me)) < 0) {
		perror("socket/bind");
		return 1;
	}
	printf("listening on %d\n", port);
	fflush(stdout);
	for (i = 0; i < count; i++) {
		len = sizeof(from);
		n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &len);
		if (n < 0) {
			perror("recvfrom");
			return 1;
		}
		inet_ntop(AF_INET6, &from.sin6_addr, addr, sizeof(addr));
		/* IPv4 senders print as themselves, not as ::ffff:a.b.c.d. */
		printf("from %s:%d %zd bytes\n",
		       strncmp(addr, "::ffff:", 7) ? addr : addr + 7, ntohs(from.sin6_port), n);
		fflush(stdout);
		if (sendto(fd, buf, n, 0, (struct sockaddr *)&from, len) < 0) {
			perror("sendto");
			return 1;
		}
	}
	return 0;
}

static int do_mtu(const char *host)
{
	struct sockaddr_storage to = { 0 };
	struct sockaddr_in *to4 = (struct sockaddr_in *)&to;
	struct sockaddr_in6 *to6 = (struct sockaddr_in6 *)&to;
	int fd, mtu = 0, level, opt;
	socklen_t len = sizeof(mtu);

	if (inet_pton(AF_INET6, host, &to6->sin6_addr) == 1) {
		to6->sin6_family = AF_INET6;
		to6->sin6_port = htons(9);
		level = IPPROTO_IPV6;
		opt = IPV6_MTU;
	} else if (inet_pton(AF_INET, host, &to4->sin_addr) == 1) {
		to4->sin_family = AF_INET;
		to4->sin_port = htons(9);
		level = IPPROTO_IP;
		opt = IP_MTU;
	} else {
		return usage();
	}
	fd = socket(to.ss_family, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&to, sizeof(to)) < 0 ||
	    getsockopt(fd, level, opt, &mtu, &len) < 0) {
		perror("mtu");
		return 1;
	}
	printf("mtu %d\n", mtu);
	return 0;
}

/* One send of `size` bytes with UDP_SEGMENT (Linux 4.18): one GSO packet of `segment`-byte
 * datagrams. */
static int do_gso(const char *host, int port, int size, int segment)
{
	int fd = connect_to(host, port);
	char *buf = malloc(size > 0 ? size : 1);
	ssize_t n;

	if (fd < 0 || !buf || size <= 0 || segment <= 0)
		return 1;
	if (setsockopt(fd, SOL_UDP, UDP_SEGMENT, &segment, sizeof(segment)) < 0) {
		perror("setsockopt UDP_SEGMENT");
		return 1;
	}
	for (int i = 0; i < size; i++)
		buf[i] = (char)(i % 251);
	n = send(fd, buf, size, 0);
	if (n < 0) {
		perror("send");
		return 1;
	}
	printf("sent %zd\n", n);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "mtu"))
		return do_mtu(argv[2]);
	if (argc >= 5 && !strcmp(argv[1], "send"))
		return do_send(argv[2], atoi(argv[3]), argv[4], argc > 5 ? atoi(argv[5]) : 5);
	if (argc == 6 && !strcmp(argv[1], "burst"))
		return do_burst(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
	if (argc == 6 && !strcmp(argv[1], "gso"))
		return do_gso(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
	if (argc == 4 && !strcmp(argv[1], "echo"))
		return do_echo(atoi(argv[2]), atoi(argv[3]));
	return usage();
}
