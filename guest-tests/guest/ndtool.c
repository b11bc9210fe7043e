/* ndtool: IPv6 link configuration as the guest sees it, for tests.
 *
 *   ndtool ra IFACE            sends a Router Solicitation and prints the Router Advertisement:
 *                                ra flags=M,O router_lifetime=S hop_limit=N
 *                                prefix P/L flags=L,A valid=S preferred=S
 *                                mtu N
 *                                rdnss ADDR lifetime=S      (one line per address)
 *                                dnssl NAME lifetime=S      (one line per name)
 *   ndtool ra-listen IFACE SECS  prints "listening", then the first Router Advertisement that
 *                              arrives within SECS (none solicited), as "ra" prints it
 *   ndtool proto N ADDR [HOPS] sends one IPv6 packet with next header N to ADDR (raw socket),
 *                              with hop limit HOPS if given
 *   ndtool dhcp6 IFACE MODE    runs DHCPv6: MODE "info" sends an Information-Request, "stateful"
 *                              Solicit/Advertise/Request/Reply; prints
 *                                server DUID-HEX
 *                                address ADDR preferred=S valid=S    (stateful)
 *                                dns ADDR
 *                                domain NAME
 * Exit status: 0, 2 when no answer came within 5 s, 1 on other errors.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static int wait_readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	return poll(&p, 1, ms) == 1;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v;
}

/* Prints DNS label-encoded names (RFC 1035 §3.1) from b[0..len). */
static void print_names(const char *what, const uint8_t *b, size_t len, uint32_t lifetime)
{
	size_t i = 0;
	char name[256];
	while (i < len && b[i]) {
		size_t n = 0;
		while (i < len && b[i] && n < sizeof(name) - 64) {
			size_t l = b[i++];
			if (i + l > len)
				return;
			if (n)
				name[n++] = '.';
			memcpy(name + n, b + i, l);
			n += l;
			i += l;
		}
		name[n] = 0;
		i++;
		if (lifetime == UINT32_MAX)
			printf("%s %s\n", what, name);
		else
			printf("%s %s lifetime=%u\n", what, name, lifetime);
	}
}

static int ra(const char *ifname, int listen_s)
{
	int fd = socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6);
	unsigned ifindex = if_nametoindex(ifname);
	int hops = 255;
	struct icmp6_filter filter;
	struct sockaddr_in6 to = { .sin6_family = AF_INET6, .sin6_scope_id = ifindex };
	uint8_t rs[8] = { ND_ROUTER_SOLICIT, 0 }, buf[1500];
	int attempt;

	if (fd < 0 || !ifindex) {
		perror("ra");
		return 1;
	}
	ICMP6_FILTER_SETBLOCKALL(&filter);
	ICMP6_FILTER_SETPASS(ND_ROUTER_ADVERT, &filter);
	setsockopt(fd, IPPROTO_ICMPV6, ICMP6_FILTER, &filter, sizeof(filter));
	setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof(hops));
	setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &ifindex, sizeof(ifindex));
	inet_pton(AF_INET6, "ff02::2", &to.sin6_addr);
	if (listen_s) {
		printf("listening\n");
		fflush(stdout);
	}
	for (attempt = 0; attempt < 2; attempt++) {
		ssize_t n;
		if (listen_s) {
			if (attempt > 0 || !wait_readable(fd, listen_s * 1000))
				break;
		} else {
			if (sendto(fd, rs, sizeof(rs), 0, (struct sockaddr *)&to, sizeof(to)) < 0) {
				perror("sendto");
				return 1;
			}
			/* The gateway answers at most every 3 s (RFC 4861 §6.2.6). */
			if (!wait_readable(fd, 5000))
				continue;
		}
		n = recv(fd, buf, sizeof(buf), 0);
		if (n < 16 || buf[0] != ND_ROUTER_ADVERT)
			continue;
		printf("ra flags=%s%s%s router_lifetime=%u hop_limit=%u\n", buf[5] & 0x80 ? "M" : "",
		       (buf[5] & 0xc0) == 0xc0 ? "," : "", buf[5] & 0x40 ? "O" : "", get16(buf + 6),
		       buf[4]);
		for (size_t i = 16; i + 2 <= (size_t)n && buf[i + 1];) {
			const uint8_t *o = buf + i;
			size_t len = o[1] * 8;
			char a[INET6_ADDRSTRLEN];
			if (i + len > (size_t)n)
				break;
			if (o[0] == 3 && len == 32) {
				inet_ntop(AF_INET6, o + 16, a, sizeof(a));
				printf("prefix %s/%u flags=%s%s%s valid=%u preferred=%u\n", a, o[2],
				       o[3] & 0x80 ? "L" : "", (o[3] & 0xc0) == 0xc0 ? "," : "",
				       o[3] & 0x40 ? "A" : "", get32(o + 4), get32(o + 8));
			} else if (o[0] == 5 && len == 8) {
				printf("mtu %u\n", get32(o + 4));
			} else if (o[0] == 25) {
				for (size_t j = 8; j + 16 <= len; j += 16) {
					inet_ntop(AF_INET6, o + j, a, sizeof(a));
					printf("rdnss %s lifetime=%u\n", a, get32(o + 4));
				}
			} else if (o[0] == 31) {
				print_names("dnssl", o + 8, len - 8, get32(o + 4));
			}
			i += len;
		}
		fflush(stdout);
		return 0;
	}
	printf("no router advertisement\n");
	return 2;
}

static int proto(int next, const char *addr, int hops)
{
	struct sockaddr_in6 to = { .sin6_family = AF_INET6 };
	int fd = socket(AF_INET6, SOCK_RAW, next);
	if (fd < 0 || inet_pton(AF_INET6, addr, &to.sin6_addr) != 1) {
		perror("proto");
		return 1;
	}
	if (hops > 0 && setsockopt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &hops, sizeof(hops))) {
		perror("IPV6_UNICAST_HOPS");
		return 1;
	}
	if (sendto(fd, "probe", 5, 0, (struct sockaddr *)&to, sizeof(to)) < 0) {
		perror("sendto");
		return 1;
	}
	printf("sent\n");
	return 0;
}

/* Appends option `code` with `len` bytes of `data` at b + *at. */
static void opt(uint8_t *b, size_t *at, uint16_t code, const void *data, uint16_t len)
{
	put16(b + *at, code);
	put16(b + *at + 2, len);
	memcpy(b + *at + 4, data, len);
	*at += 4 + len;
}

/* Looks for option `code` among b[0..len); returns its data and sets *olen. */
static const uint8_t *find(const uint8_t *b, size_t len, uint16_t code, size_t *olen)
{
	size_t i = 0;
	while (i + 4 <= len) {
		size_t l = get16(b + i + 2);
		if (i + 4 + l > len)
			return NULL;
		if (get16(b + i) == code) {
			*olen = l;
			return b + i + 4;
		}
		i += 4 + l;
	}
	return NULL;
}

static int dhcp6(const char *ifname, const char *mode)
{
	int stateful = !strcmp(mode, "stateful");
	int fd = socket(AF_INET6, SOCK_DGRAM, 0), on = 1;
	unsigned ifindex = if_nametoindex(ifname);
	struct sockaddr_in6 me = { .sin6_family = AF_INET6, .sin6_port = htons(546) };
	struct sockaddr_in6 to = { .sin6_family = AF_INET6, .sin6_port = htons(547),
				   .sin6_scope_id = ifindex };
	struct ifreq ifr;
	uint8_t duid[10] = { 0, 3, 0, 1 }, msg[512], reply[1500], server[130];
	uint8_t oro[4] = { 0, 23, 0, 24 }, elapsed[2] = { 0, 0 }, ia[12] = { 0, 0, 0, 1 };
	size_t server_len = 0;
	int step, steps = stateful ? 2 : 1;

	if (fd < 0 || !ifindex) {
		perror("dhcp6");
		return 1;
	}
	memset(&ifr, 0, sizeof(ifr));
	strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
	if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) {
		perror("SIOCGIFHWADDR");
		return 1;
	}
	memcpy(duid + 4, ifr.ifr_hwaddr.sa_data, 6);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, ifname, strlen(ifname));
	if (bind(fd, (struct sockaddr *)&me, sizeof(me)) < 0) {
		perror("bind");
		return 1;
	}
	inet_pton(AF_INET6, "ff02::1:2", &to.sin6_addr);
	for (step = 0; step < steps; step++) {
		size_t at = 4, n, l;
		ssize_t got;
		uint8_t type = !stateful ? 11 : step == 0 ? 1 : 3;
		uint8_t want = !stateful ? 7 : step == 0 ? 2 : 7;
		const uint8_t *o;
		msg[0] = type;
		msg[1] = 0x12;
		msg[2] = 0x34;
		msg[3] = (uint8_t)(0x56 + step);
		opt(msg, &at, 1, duid, sizeof(duid));
		if (server_len)
			opt(msg, &at, 2, server, (uint16_t)server_len);
		if (stateful)
			opt(msg, &at, 3, ia, sizeof(ia));
		opt(msg, &at, 6, oro, sizeof(oro));
		opt(msg, &at, 8, elapsed, sizeof(elapsed));
		if (sendto(fd, msg, at, 0, (struct sockaddr *)&to, sizeof(to)) < 0) {
			perror("sendto");
			return 1;
		}
		for (;;) {
			if (!wait_readable(fd, 5000)) {
				printf("no answer to message type %u\n", type);
				return 2;
			}
			got = recv(fd, reply, sizeof(reply), 0);
			if (got >= 4 && reply[0] == want && !memcmp(reply + 1, msg + 1, 3))
				break;
		}
		n = (size_t)got;
		o = find(reply + 4, n - 4, 2, &l);
		if (!o || l > sizeof(server)) {
			printf("no server identifier\n");
			return 1;
		}
		memcpy(server, o, l);
		server_len = l;
		if (step + 1 < steps)
			continue;
		printf("server ");
		for (size_t i = 0; i < l; i++)
			printf("%02x", o[i]);
		printf("\n");
		if (stateful) {
			size_t il, al;
			const uint8_t *i = find(reply + 4, n - 4, 3, &il), *a;
			char s[INET6_ADDRSTRLEN];
			if (!i || il < 12 || !(a = find(i + 12, il - 12, 5, &al)) || al < 24) {
				printf("no address\n");
				return 1;
			}
			inet_ntop(AF_INET6, a, s, sizeof(s));
			printf("address %s preferred=%u valid=%u\n", s, get32(a + 16), get32(a + 20));
		}
		if ((o = find(reply + 4, n - 4, 23, &l))) {
			char s[INET6_ADDRSTRLEN];
			for (size_t j = 0; j + 16 <= l; j += 16) {
				inet_ntop(AF_INET6, o + j, s, sizeof(s));
				printf("dns %s\n", s);
			}
		}
		if ((o = find(reply + 4, n - 4, 24, &l)))
			print_names("domain", o, l, UINT32_MAX);
	}
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "ra"))
		return ra(argv[2], 0);
	if (argc == 4 && !strcmp(argv[1], "ra-listen"))
		return ra(argv[2], atoi(argv[3]) > 0 ? atoi(argv[3]) : 1);
	if ((argc == 4 || argc == 5) && !strcmp(argv[1], "proto"))
		return proto(atoi(argv[2]), argv[3], argc == 5 ? atoi(argv[4]) : 0);
	if (argc == 4 && !strcmp(argv[1], "dhcp6"))
		return dhcp6(argv[2], argv[3]);
	fprintf(stderr, "usage: ndtool ra IFACE | ra-listen IFACE SECS | proto N ADDR [HOPS] | "
			"dhcp6 IFACE info|stateful\n");
	return 64;
}
