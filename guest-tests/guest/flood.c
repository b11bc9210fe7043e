/* flood: a hostile guest's floods, sent as raw frames on a packet socket (AF_PACKET), as fast as
 * the guest can, to the gateway at GWMAC. The guest is 10.0.2.15 (its DHCP lease) and uses its
 * own MAC; every frame is well formed (checksums right) unless the kind says otherwise.
 *
 *   flood IFACE GWMAC KIND COUNT [PORT]
 *     syn PORT  TCP SYNs to 10.0.2.2:PORT from COUNT source ports (connection table)
 *     udp       UDP datagrams to 10.0.2.2 on COUNT ports (flow table)
 *     frag      first fragments of COUNT UDP datagrams that never complete (reassembly)
 *     nd        Neighbor Solicitations (DAD) for COUNT addresses of fd00::/64 (claims, NDP)
 *     dhcp      DHCPDISCOVERs from COUNT client hardware addresses (the lease pool)
 *     dhcp6     DHCPv6 Solicits from COUNT DUIDs (the stateful pool, bindings)
 *     junk      COUNT frames of every EtherType the stack parses, with random bytes behind
 *               valid-looking headers (every parser's error paths)
 * Prints "sent N" and exits 0.
 */
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static uint8_t me[6], gw[6];
static const uint8_t guest_ip[4] = { 10, 0, 2, 15 }, gw_ip[4] = { 10, 0, 2, 2 };
static uint32_t rng = 0x12345678;

static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	return rng;
}

static uint32_t sum(const uint8_t *p, size_t n, uint32_t s)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		s += (p[i] << 8) | p[i + 1];
	if (n & 1)
		s += p[n - 1] << 8;
	return s;
}

static uint16_t fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

static size_t eth(uint8_t *f, const uint8_t *dst, uint16_t type)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, me, 6);
	put16(f + 12, type);
	return 14;
}

/* An IPv4 header at p for `len` payload bytes of `proto`; returns 20. */
static size_t ipv4(uint8_t *p, const uint8_t *src, const uint8_t *dst, uint8_t proto, size_t len,
		   uint16_t ident, uint16_t frag)
{
	memset(p, 0, 20);
	p[0] = 0x45;
	put16(p + 2, 20 + len);
	put16(p + 4, ident);
	put16(p + 6, frag);
	p[8] = 64;
	p[9] = proto;
	memcpy(p + 12, src, 4);
	memcpy(p + 16, dst, 4);
	put16(p + 10, fold(sum(p, 20, 0)));
	return 20;
}

/* The transport checksum over the IPv4 pseudo-header of the packet at ip. */
static uint16_t l4sum4(const uint8_t *ip, const uint8_t *l4, size_t len, uint8_t proto)
{
	uint32_t s = sum(ip + 12, 8, 0) + proto + len;
	return fold(sum(l4, len, s));
}

static uint16_t l4sum6(const uint8_t *ip6, const uint8_t *l4, size_t len, uint8_t proto)
{
	uint32_t s = sum(ip6 + 8, 32, 0) + proto + len;
	return fold(sum(l4, len, s));
}

static size_t ipv6(uint8_t *p, const uint8_t *src, const uint8_t *dst, uint8_t next, size_t len,
		   uint8_t hops)
{
	memset(p, 0, 40);
	p[0] = 0x60;
	put16(p + 4, len);
	p[6] = next;
	p[7] = hops;
	memcpy(p + 8, src, 16);
	memcpy(p + 24, dst, 16);
	return 40;
}

static int parse_mac(const char *s, uint8_t *mac)
{
	unsigned v[6];
	if (sscanf(s, "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6)
		return -1;
	for (int i = 0; i < 6; i++)
		mac[i] = v[i];
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_ll ll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL) };
	struct ifreq ifr = { 0 };
	static uint8_t f[2048];
	long count, sent = 0;
	int fd, port = argc > 5 ? atoi(argv[5]) : 0;

	if (argc < 5 || parse_mac(argv[2], gw) < 0) {
		fprintf(stderr, "usage: flood IFACE GWMAC KIND COUNT [PORT]\n");
		return 64;
	}
	count = atol(argv[4]);
	fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
	if (fd < 0 || ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) {
		perror("flood");
		return 1;
	}
	memcpy(me, ifr.ifr_hwaddr.sa_data, 6);
	ll.sll_ifindex = if_nametoindex(argv[1]);
	if (bind(fd, (struct sockaddr *)&ll, sizeof(ll)) < 0) {
		perror("flood: bind");
		return 1;
	}
	for (long i = 0; i < count; i++) {
		size_t n = 0;
		const char *kind = argv[3];
		memset(f, 0, sizeof(f));
		if (!strcmp(kind, "syn")) {
			uint8_t *ip = f + eth(f, gw, ETH_P_IP), *t = ip + 20;
			put16(t, 10000 + i % 50000);
			put16(t + 2, port);
			uint32_t seq = rnd();
			t[4] = seq >> 24, t[5] = seq >> 16, t[6] = seq >> 8, t[7] = seq;
			t[12] = 6 << 4;
			t[13] = 0x02;
			put16(t + 14, 64240);
			t[20] = 2, t[21] = 4, put16(t + 22, 1460);
			ipv4(ip, guest_ip, gw_ip, 6, 24, i, 0x4000);
			put16(t + 16, l4sum4(ip, t, 24, 6));
			n = 14 + 20 + 24;
		} else if (!strcmp(kind, "udp") || !strcmp(kind, "frag")) {
			int frag = !strcmp(kind, "frag");
			size_t payload = frag ? 1000 : 8;
			uint8_t *ip = f + eth(f, gw, ETH_P_IP), *u = ip + 20;
			put16(u, 40000);
			put16(u + 2, frag ? 9 : 1000 + i % 60000);
			put16(u + 4, 8 + (frag ? 2000 : payload));
			for (size_t k = 0; k < payload; k++)
				u[8 + k] = rnd();
			ipv4(ip, guest_ip, gw_ip, 17, 8 + payload, i, frag ? 0x2000 : 0);
			if (!frag)
				put16(u + 6, l4sum4(ip, u, 8 + payload, 17));
			n = 14 + 20 + 8 + payload;
		} else if (!strcmp(kind, "nd")) {
			uint8_t target[16] = { 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0 };
			uint8_t unspec[16] = { 0 }, sn[16] = { 0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff };
			uint8_t dst_mac[6] = { 0x33, 0x33, 0xff };
			target[13] = i >> 16, target[14] = i >> 8, target[15] = i;
			memcpy(sn + 13, target + 13, 3);
			memcpy(dst_mac + 3, target + 13, 3);
			uint8_t *ip = f + eth(f, dst_mac, ETH_P_IPV6), *m = ip + 40;
			m[0] = 135;
			memcpy(m + 8, target, 16);
			ipv6(ip, unspec, sn, 58, 24, 255);
			put16(m + 2, l4sum6(ip, m, 24, 58));
			n = 14 + 40 + 24;
		} else if (!strcmp(kind, "dhcp")) {
			uint8_t bcast_mac[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
			uint8_t any[4] = { 0 }, all[4] = { 255, 255, 255, 255 };
			uint8_t *ip = f + eth(f, bcast_mac, ETH_P_IP), *u = ip + 20, *d = u + 8;
			uint8_t chaddr[6] = { 0x02, 0, i >> 24, i >> 16, i >> 8, i };
			d[0] = 1, d[1] = 1, d[2] = 6;
			d[4] = i >> 24, d[5] = i >> 16, d[6] = i >> 8, d[7] = i;
			memcpy(d + 28, chaddr, 6);
			d[236] = 99, d[237] = 130, d[238] = 83, d[239] = 99;
			uint8_t *o = d + 240;
			*o++ = 53, *o++ = 1, *o++ = 1;
			*o++ = 61, *o++ = 7, *o++ = 1;
			memcpy(o, chaddr, 6), o += 6;
			*o++ = 255;
			size_t dlen = o - d;
			put16(u, 68);
			put16(u + 2, 67);
			put16(u + 4, 8 + dlen);
			ipv4(ip, any, all, 17, 8 + dlen, i, 0);
			put16(u + 6, l4sum4(ip, u, 8 + dlen, 17));
			n = 14 + 20 + 8 + dlen;
		} else if (!strcmp(kind, "dhcp6")) {
			uint8_t ll6[16] = { 0xfe, 0x80 }, servers[16] = { 0xff, 2 };
			uint8_t dst_mac[6] = { 0x33, 0x33, 0, 1, 0, 2 };
			servers[13] = 1, servers[15] = 2;
			ll6[8] = me[0] ^ 2, ll6[9] = me[1], ll6[10] = me[2], ll6[11] = 0xff;
			ll6[12] = 0xfe, ll6[13] = me[3], ll6[14] = me[4], ll6[15] = me[5];
			uint8_t *ip = f + eth(f, dst_mac, ETH_P_IPV6), *u = ip + 40, *d = u + 8, *o;
			d[0] = 1, d[1] = i >> 16, d[2] = i >> 8, d[3] = i;
			o = d + 4;
			/* CLIENTID: DUID-LL with a made-up MAC per client. */
			put16(o, 1), put16(o + 2, 10), put16(o + 4, 3), put16(o + 6, 1);
			o[8] = 0x02, o[9] = 0, o[10] = i >> 24, o[11] = i >> 16, o[12] = i >> 8, o[13] = i;
			o += 14;
			/* IA_NA, IAID 1, no address. */
			put16(o, 3), put16(o + 2, 12), o[7] = 1;
			o += 16;
			/* ELAPSED_TIME. */
			put16(o, 8), put16(o + 2, 2);
			o += 6;
			size_t dlen = o - d;
			put16(u, 546);
			put16(u + 2, 547);
			put16(u + 4, 8 + dlen);
			ipv6(ip, ll6, servers, 17, 8 + dlen, 1);
			put16(u + 6, l4sum6(ip, u, 8 + dlen, 17));
			n = 14 + 40 + 8 + dlen;
		} else if (!strcmp(kind, "junk")) {
			static const uint16_t types[] = { ETH_P_IP, ETH_P_IPV6, ETH_P_ARP, 0x8100 };
			uint16_t type = types[rnd() % 4];
			uint8_t *p = f + eth(f, (rnd() & 1) ? gw : (const uint8_t *)"\xff\xff\xff\xff\xff\xff", type);
			size_t len = rnd() % 1400;
			for (size_t k = 0; k < len; k++)
				p[k] = rnd();
			/* Enough of a valid header that the parsers behind it run. */
			if (type == ETH_P_IP && len >= 20) {
				p[0] = 0x45;
				memcpy(p + 12, guest_ip, 4);
				memcpy(p + 16, gw_ip, 4);
				p[10] = p[11] = 0;
				put16(p + 10, fold(sum(p, 20, 0)));
			} else if (type == ETH_P_IPV6 && len >= 40) {
				p[0] = 0x60;
			}
			n = 14 + len;
		} else {
			fprintf(stderr, "flood: unknown kind %s\n", kind);
			return 64;
		}
		if (send(fd, f, n < 60 ? 60 : n, 0) > 0)
			sent++;
	}
	printf("sent %ld\n", sent);
	return 0;
}
