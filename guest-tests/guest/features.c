/* features: one offload feature of a NIC as `ethtool -k/-K` shows and sets it (busybox has no
 * ethtool), by the kernel's own name (ETH_SS_FEATURES: "tx-udp-segmentation", "rx-gro-hw", ...).
 *
 *   features IFACE NAME           prints "NAME on|off", with " fixed" when the driver cannot
 *                                 change it (not in its hw_features)
 *   features IFACE NAME on|off    asks for it (ETHTOOL_SFEATURES), then prints the same
 * Exit status: 0, 1 on errors (printed), 2 when NAME is not a feature of this kernel.
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

static int fd;
static const char *iface;

static int ethtool(void *data) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, iface, IFNAMSIZ - 1);
    ifr.ifr_data = data;
    return ioctl(fd, SIOCETHTOOL, &ifr);
}

/* The features' state, ETHTOOL_GFEATURES over `blocks` 32-bit blocks (caller frees). */
static struct ethtool_gfeatures *get_features(unsigned blocks) {
    struct ethtool_gfeatures *g = calloc(1, sizeof(*g) + blocks * sizeof(g->features[0]));
    if (!g)
        return NULL;
    g->cmd = ETHTOOL_GFEATURES;
    g->size = blocks;
    if (ethtool(g) < 0) {
        perror("ETHTOOL_GFEATURES");
        free(g);
        return NULL;
    }
    return g;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "on") && strcmp(argv[3], "off"))) {
        fprintf(stderr, "usage: features IFACE NAME [on|off]\n");
        return 1;
    }
    iface = argv[1];
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    /* How many feature names, then the names. */
    struct {
        struct ethtool_sset_info hdr;
        __u32 count;
    } info = { .hdr = { .cmd = ETHTOOL_GSSET_INFO, .sset_mask = 1ULL << ETH_SS_FEATURES } };
    if (ethtool(&info) < 0 || !info.hdr.sset_mask) {
        perror("ETHTOOL_GSSET_INFO");
        return 1;
    }
    unsigned count = info.count;
    struct ethtool_gstrings *names = calloc(1, sizeof(*names) + count * ETH_GSTRING_LEN);
    if (!names)
        return 1;
    names->cmd = ETHTOOL_GSTRINGS;
    names->string_set = ETH_SS_FEATURES;
    names->len = count;
    if (ethtool(names) < 0) {
        perror("ETHTOOL_GSTRINGS");
        return 1;
    }
    unsigned i;
    for (i = 0; i < count; i++)
        if (!strncmp((char *)names->data + i * ETH_GSTRING_LEN, argv[2], ETH_GSTRING_LEN))
            break;
    if (i == count) {
        fprintf(stderr, "%s: no such feature\n", argv[2]);
        return 2;
    }
    unsigned blocks = (count + 31) / 32, block = i / 32;
    __u32 bit = 1U << (i % 32);
    if (argc == 4) {
        struct ethtool_sfeatures *s = calloc(1, sizeof(*s) + blocks * sizeof(s->features[0]));
        if (!s)
            return 1;
        s->cmd = ETHTOOL_SFEATURES;
        s->size = blocks;
        s->features[block].valid = bit;
        s->features[block].requested = strcmp(argv[3], "on") ? 0 : bit;
        /* A positive return flags what could not be done as asked: the state printed says it. */
        if (ethtool(s) < 0) {
            perror("ETHTOOL_SFEATURES");
            return 1;
        }
        free(s);
    }
    struct ethtool_gfeatures *g = get_features(blocks);
    if (!g)
        return 1;
    int fixed = !(g->features[block].available & bit) || (g->features[block].never_changed & bit);
    printf("%s %s%s\n", argv[2], (g->features[block].active & bit) ? "on" : "off",
           fixed ? " fixed" : "");
    close(fd);
    return 0;
}
