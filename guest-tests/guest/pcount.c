/* pcount: a packet socket in promiscuous mode, as tcpdump opens one (busybox has no capture tool).
 *
 *   pcount IFACE SECS
 *       puts IFACE into promiscuous mode through a packet socket (PACKET_MR_PROMISC: the
 *       interface's promiscuity count goes up while the socket lives), prints "ready", and counts
 *       the frames it sees for other stations (PACKET_OTHERHOST) for SECS seconds; then prints
 *       "otherhost N" and exits 0.
 */
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct sockaddr_ll ll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL) };
	struct packet_mreq mr = { .mr_type = PACKET_MR_PROMISC };
	int fd, others = 0;
	time_t end;

	if (argc != 3) {
		fprintf(stderr, "usage: pcount IFACE SECS\n");
		return 64;
	}
	ll.sll_ifindex = if_nametoindex(argv[1]);
	mr.mr_ifindex = ll.sll_ifindex;
	fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	if (fd < 0 || !ll.sll_ifindex || bind(fd, (struct sockaddr *)&ll, sizeof(ll)) < 0 ||
	    setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) < 0) {
		perror("pcount");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	end = time(NULL) + atoi(argv[2]);
	while (time(NULL) < end) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		struct sockaddr_ll from;
		socklen_t len = sizeof(from);
		char buf[65536];

		if (poll(&p, 1, 200) != 1)
			continue;
		if (recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &len) >= 0 &&
		    from.sll_pkttype == PACKET_OTHERHOST)
			others++;
	}
	printf("otherhost %d\n", others);
	return 0;
}
