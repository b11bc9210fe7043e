/* channels: the NIC's queue pairs as the guest driver uses them (what `ethtool -l/-L` do; busybox
 * has no ethtool).
 *
 *   channels IFACE       prints "combined N max M"
 *   channels IFACE N     asks the driver for N combined channels (virtio-net: N queue pairs,
 *                        which QEMU turns into VHOST_USER_SET_VRING_ENABLE for the backend)
 * Exit status: 0, 1 on errors (printed).
 */
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static int ethtool(int fd, const char *iface, struct ethtool_channels *ch) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, iface, IFNAMSIZ - 1);
    ifr.ifr_data = (void *)ch;
    return ioctl(fd, SIOCETHTOOL, &ifr);
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: channels IFACE [N]\n");
        return 1;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    struct ethtool_channels ch;
    memset(&ch, 0, sizeof ch);
    ch.cmd = ETHTOOL_GCHANNELS;
    if (ethtool(fd, argv[1], &ch) < 0) {
        perror("ETHTOOL_GCHANNELS");
        return 1;
    }
    if (argc == 3) {
        ch.cmd = ETHTOOL_SCHANNELS;
        ch.combined_count = (unsigned)atoi(argv[2]);
        if (ethtool(fd, argv[1], &ch) < 0) {
            perror("ETHTOOL_SCHANNELS");
            return 1;
        }
        ch.cmd = ETHTOOL_GCHANNELS;
        if (ethtool(fd, argv[1], &ch) < 0) {
            perror("ETHTOOL_GCHANNELS");
            return 1;
        }
    }
    printf("combined %u max %u\n", ch.combined_count, ch.max_combined);
    close(fd);
    return 0;
}
