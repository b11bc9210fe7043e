/* tunif: a persistent TUN interface, an inner link for the guest's forwarding paths (busybox's
 * ip cannot create links), and a host behind it.
 *
 *   tunif NAME
 *       creates NAME (IFF_TUN, no packet information) and leaves it in place after exiting; set
 *       its MTU, addresses and state with ip. Nobody reads it: what is routed into it is dropped
 *       at its queue, after the forwarding path has run.
 *   tunif NAME del
 *       removes it again.
 *   tunif NAME ping SRC DST
 *       acts as a host behind NAME: sends an echo request from SRC to DST (IPv4 or IPv6) into the
 *       guest and waits up to 5 s for the reply to come back out of NAME. Prints "reply from DST"
 *       (exit 0) or "timeout" (exit 2).
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static uint32_t sum16(uint32_t sum, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	if (n & 1)
		sum += (uint32_t)p[n - 1] << 8;
	return sum;
}

static uint16_t fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* Builds the echo request from src to dst in buf; returns its length, 0 on bad addresses. */
static size_t echo_request(uint8_t *buf, const char *src, const char *dst)
{
	uint8_t *icmp;
	uint16_t c;

	memset(buf, 0, 128);
	if (inet_pton(AF_INET, src, buf + 12) == 1 && inet_pton(AF_INET, dst, buf + 16) == 1) {
		buf[0] = 0x45;
		buf[3] = 20 + 16;
		buf[8] = 64;
		buf[9] = 1;
		c = fold(sum16(0, buf, 20));
		buf[10] = c >> 8;
		buf[11] = c & 0xff;
		icmp = buf + 20;
		icmp[0] = 8;
		icmp[4] = 0x76;
		icmp[5] = 0x67;
		memcpy(icmp + 8, "tunping!", 8);
		c = fold(sum16(0, icmp, 16));
		icmp[2] = c >> 8;
		icmp[3] = c & 0xff;
		return 36;
	}
	if (inet_pton(AF_INET6, src, buf + 8) == 1 && inet_pton(AF_INET6, dst, buf + 24) == 1) {
		uint32_t sum;

		buf[0] = 0x60;
		buf[5] = 16;
		buf[6] = 58;
		buf[7] = 64;
		icmp = buf + 40;
		icmp[0] = 128;
		icmp[4] = 0x76;
		icmp[5] = 0x67;
		memcpy(icmp + 8, "tunping!", 8);
		/* RFC 8200 §8.1: the pseudo-header of addresses, length and next header. */
		sum = sum16(0, buf + 8, 32) + 16 + 58;
		c = fold(sum16(sum, icmp, 16));
		icmp[2] = c >> 8;
		icmp[3] = c & 0xff;
		return 56;
	}
	return 0;
}

static int ping(int fd, const char *src, const char *dst)
{
	uint8_t buf[2048];
	size_t len = echo_request(buf, src, dst);
	time_t end = time(NULL) + 5;

	if (!len) {
		fprintf(stderr, "tunif: bad addresses\n");
		return 64;
	}
	if (write(fd, buf, len) != (ssize_t)len) {
		perror("write");
		return 1;
	}
	while (time(NULL) < end) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 500) != 1)
			continue;
		n = read(fd, buf, sizeof(buf));
		/* An echo reply (IPv4 type 0 after a 20-byte header, ICMPv6 129 after 40) with our
		 * identifier. */
		if (n >= 28 && buf[0] == 0x45 && buf[9] == 1 && buf[20] == 0 && buf[24] == 0x76 &&
		    buf[25] == 0x67) {
			printf("reply from %s\n", dst);
			return 0;
		}
		if (n >= 48 && (buf[0] >> 4) == 6 && buf[6] == 58 && buf[40] == 129 &&
		    buf[44] == 0x76 && buf[45] == 0x67) {
			printf("reply from %s\n", dst);
			return 0;
		}
	}
	printf("timeout\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct ifreq ifr;
	int fd, create = argc == 2, del = argc == 3 && !strcmp(argv[2], "del");
	int pinging = argc == 5 && !strcmp(argv[2], "ping");

	if (!create && !del && !pinging) {
		fprintf(stderr, "usage: tunif NAME [del | ping SRC DST]\n");
		return 64;
	}
	fd = open("/dev/net/tun", O_RDWR);
	if (fd < 0) {
		perror("/dev/net/tun");
		return 1;
	}
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
	strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		perror("TUNSETIFF");
		return 1;
	}
	if (pinging)
		return ping(fd, argv[3], argv[4]);
	if (ioctl(fd, TUNSETPERSIST, create ? 1 : 0) < 0) {
		perror("TUNSETPERSIST");
		return 1;
	}
	printf("%s %s\n", ifr.ifr_name, create ? "created" : "removed");
	return 0;
}
