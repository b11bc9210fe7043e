/* mcast: joins a multicast group on eth0 and counts what arrives (busybox cannot join groups).
 *
 *   mcast listen GROUP PORT SECONDS [SOURCE]
 *       joins GROUP (IPv4 or IPv6) on eth0, for any source or, with SOURCE, for that source
 *       only (source-specific multicast, MCAST_JOIN_SOURCE_GROUP), on a socket bound to PORT;
 *       prints "ready", then one line per datagram ("from ADDR len N") until SECONDS pass,
 *       then "received N" and exits 0.
 */
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int usage(void)
{
	fprintf(stderr, "usage: mcast listen GROUP PORT SECONDS [SOURCE]\n");
	return 64;
}

/* Fills a sockaddr_storage from text; returns the family or -1. */
static int addr_of(const char *text, int port, struct sockaddr_storage *ss)
{
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, text, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons(port);
		return AF_INET;
	}
	if (inet_pton(AF_INET6, text, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons(port);
		return AF_INET6;
	}
	return -1;
}

static int do_listen(const char *group, int port, int seconds, const char *source)
{
	struct sockaddr_storage g, bind_to, src;
	int family = addr_of(group, port, &g);
	int ifindex = if_nametoindex("eth0");
	int level, fd, one = 1, received = 0;
	time_t end;

	if (family < 0 || ifindex == 0)
		return usage();
	level = family == AF_INET ? IPPROTO_IP : IPPROTO_IPV6;
	fd = socket(family, SOCK_DGRAM, 0);
	if (fd < 0) {
		perror("socket");
		return 1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* Bound to the wildcard address and the port: the group filter is the membership's. */
	memset(&bind_to, 0, sizeof(bind_to));
	bind_to.ss_family = family;
	if (family == AF_INET)
		((struct sockaddr_in *)&bind_to)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)&bind_to)->sin6_port = htons(port);
	if (bind(fd, (struct sockaddr *)&bind_to, sizeof(bind_to)) < 0) {
		perror("bind");
		return 1;
	}
	if (source) {
		struct group_source_req r = { .gsr_interface = ifindex };

		if (addr_of(source, 0, &src) != family)
			return usage();
		memcpy(&r.gsr_group, &g, sizeof(g));
		memcpy(&r.gsr_source, &src, sizeof(src));
		if (setsockopt(fd, level, MCAST_JOIN_SOURCE_GROUP, &r, sizeof(r)) < 0) {
			perror("MCAST_JOIN_SOURCE_GROUP");
			return 1;
		}
	} else {
		struct group_req r = { .gr_interface = ifindex };

		memcpy(&r.gr_group, &g, sizeof(g));
		if (setsockopt(fd, level, MCAST_JOIN_GROUP, &r, sizeof(r)) < 0) {
			perror("MCAST_JOIN_GROUP");
			return 1;
		}
	}
	printf("ready\n");
	fflush(stdout);
	end = time(NULL) + seconds;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		char buf[65536], text[INET6_ADDRSTRLEN];
		struct sockaddr_storage from;
		socklen_t len = sizeof(from);
		time_t now = time(NULL);
		ssize_t n;

		if (now >= end)
			break;
		if (poll(&p, 1, (int)(end - now) * 1000) <= 0)
			continue;
		n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &len);
		if (n < 0)
			continue;
		if (from.ss_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)&from)->sin_addr, text, sizeof(text));
		else
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&from)->sin6_addr, text, sizeof(text));
		printf("from %s len %zd\n", text, n);
		fflush(stdout);
		received++;
	}
	printf("received %d\n", received);
	return 0;
}

int main(int argc, char **argv)
{
	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "listen"))
		return do_listen(argv[2], atoi(argv[3]), atoi(argv[4]), argc == 6 ? argv[5] : NULL);
	return usage();
}
