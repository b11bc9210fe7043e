/* tunif: creates a persistent TUN interface, an inner link for the guest's forwarding paths
 * (busybox's ip cannot create links).
 *
 *   tunif NAME
 *       creates NAME (IFF_TUN, no packet information) and leaves it in place after exiting; set
 *       its MTU, addresses and state with ip. Nobody reads it: what is routed into it is dropped
 *       at its queue, after the forwarding path has run.
 *   tunif NAME del
 *       removes it again.
 */
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct ifreq ifr;
	int fd;

	if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "del"))) {
		fprintf(stderr, "usage: tunif NAME [del]\n");
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
	if (ioctl(fd, TUNSETPERSIST, argc == 2 ? 1 : 0) < 0) {
		perror("TUNSETPERSIST");
		return 1;
	}
	printf("%s %s\n", ifr.ifr_name, argc == 2 ? "created" : "removed");
	return 0;
}
