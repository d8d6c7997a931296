/*
 * TUN device: open/attach (TUNSETIFF), persistence, MTU and IFF_UP by interface name, and batched
 * non-blocking read()/write() of whole IP packets between the fd and a caller-owned slab.
 *
 * IFF_NO_PI: each read()/write() is exactly one bare IP packet (no 4-byte packet-info header); the
 * kernel tells IPv4 from IPv6 by the version nibble. With offload requested, IFF_VNET_HDR puts a
 * 10-byte virtio_net_hdr in front of every packet and TUNSETOFFLOAD lets reads be TCP super-packets
 * (TSO) and writes be coalesced ones; splitting, coalescing and checksums are all done in
 * TypeScript (src/tun/offload/), so this file still only moves bytes.
 */
#include "common.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define TUN_PATH "/dev/net/tun"

/* What TUNSETOFFLOAD is asked for: checksum offload and TCP segmentation both families. */
#define TUN_OFFLOADS (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
/* The kernel's UIO_MAXIOV: the most ranges one writev() takes. */
#define GATHER_IOV_MAX 1024

/* Reads an interface name argument: throws (code EINVAL, syscall `op`) when it cannot fit IFNAMSIZ. */
static bool get_ifname(napi_env env, napi_value v, const char *op, char name[IFNAMSIZ]) {
  char buf[256];
  size_t len = 0;
  if (!wgts_get_string(env, v, "name", buf, sizeof buf, &len)) return false;
  if (len >= IFNAMSIZ || memchr(buf, '\0', len) != NULL) {
    /* The kernel would refuse it too; the fixed-size ifr_name cannot even carry it. */
    wgts_throw_errno(env, EINVAL, op, buf);
    return false;
  }
  memset(name, 0, IFNAMSIZ);
  memcpy(name, buf, len);
  return true;
}

/*
 * Opens /dev/net/tun and issues TUNSETIFF with flags; on success *fd is the descriptor and ifr
 * holds the name the kernel gave. Returns 0 or the errno of the failing step (*step names it).
 */
static int open_tun(const char name[IFNAMSIZ], short flags, int *fd, struct ifreq *ifr, const char **step) {
  /* O_NONBLOCK: reads/writes run on the JS thread driven by uv_poll and must never block it. */
  *step = "open";
  int f = open(TUN_PATH, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (f < 0) return errno;
  memset(ifr, 0, sizeof *ifr);
  ifr->ifr_flags = flags;
  memcpy(ifr->ifr_name, name, IFNAMSIZ);
  /* Creates the interface, or attaches to an existing (persistent) one of the same type. */
  *step = "TUNSETIFF";
  if (ioctl(f, TUNSETIFF, ifr) < 0) {
    int err = errno;
    close(f);
    return err;
  }
  ifr->ifr_name[IFNAMSIZ - 1] = '\0';
  *fd = f;
  return 0;
}

/*
 * Turns the virtio_net_hdr offloads on for an fd opened with IFF_VNET_HDR. The header is made
 * little-endian (TUNSETVNETLE; the legacy default is host order) so TypeScript has one layout.
 * Returns 0 or the errno of the failing step.
 */
static int enable_offloads(int fd, const char **step) {
  int le = 1;
  *step = "TUNSETVNETLE";
  if (ioctl(fd, TUNSETVNETLE, &le) < 0) return errno;
  *step = "TUNSETOFFLOAD";
  if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)TUN_OFFLOADS) < 0) return errno;
  return 0;
}

/*
 * tunOpen(name, persist, offload?) -> { fd, name, offload, offloadError }. name "" or with %d lets
 * the kernel pick the number. offload true asks for IFF_VNET_HDR + TUNSETOFFLOAD; if the kernel
 * refuses either, the TUN is opened again without them: offload is then false and offloadError
 * says which call failed and why ("TUNSETOFFLOAD: Invalid argument"); otherwise offloadError is "".
 */
static napi_value tun_open(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char name[IFNAMSIZ];
  bool persist, offload = false;
  napi_valuetype offload_type;
  if (!wgts_get_args(env, info, 3, argv) || !get_ifname(env, argv[0], "TUNSETIFF", name) ||
      !wgts_get_bool(env, argv[1], "persist", &persist))
    return NULL;
  NAPI_CHECK(env, napi_typeof(env, argv[2], &offload_type));
  if (offload_type != napi_undefined && !wgts_get_bool(env, argv[2], "offload", &offload)) return NULL;

  int fd = -1;
  struct ifreq ifr;
  const char *step = "";
  char offload_error[96] = "";
  int err = 0;
  if (offload) {
    err = open_tun(name, IFF_TUN | IFF_NO_PI | IFF_VNET_HDR, &fd, &ifr, &step);
    if (err == 0) {
      err = enable_offloads(fd, &step);
      if (err != 0) {
        /* An attached fd cannot drop IFF_VNET_HDR: start over without it. */
        close(fd);
        fd = -1;
      }
    }
    if (err != 0) {
      snprintf(offload_error, sizeof offload_error, "%s: %s", step, strerror(err));
      offload = false;
    }
  }
  if (fd < 0) {
    err = open_tun(name, IFF_TUN | IFF_NO_PI, &fd, &ifr, &step);
    if (err != 0) {
      wgts_throw_errno(env, err, step, strcmp(step, "open") == 0 ? TUN_PATH : name);
      return NULL;
    }
  }

  /* Persistent interfaces outlive the fd (so a restarted daemon can re-attach); off is left alone. */
  if (persist && ioctl(fd, TUNSETPERSIST, 1L) < 0) {
    err = errno;
    close(fd);
    wgts_throw_errno(env, err, "TUNSETPERSIST", ifr.ifr_name);
    return NULL;
  }

  napi_value result, fd_value, name_value, offload_value, error_value;
  if (napi_create_object(env, &result) != napi_ok || napi_create_int32(env, fd, &fd_value) != napi_ok ||
      napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &name_value) != napi_ok ||
      napi_get_boolean(env, offload, &offload_value) != napi_ok ||
      napi_create_string_utf8(env, offload_error, NAPI_AUTO_LENGTH, &error_value) != napi_ok ||
      napi_set_named_property(env, result, "fd", fd_value) != napi_ok ||
      napi_set_named_property(env, result, "name", name_value) != napi_ok ||
      napi_set_named_property(env, result, "offload", offload_value) != napi_ok ||
      napi_set_named_property(env, result, "offloadError", error_value) != napi_ok) {
    close(fd);
    wgts_throw_napi_failure(env, "tunOpen result");
    return NULL;
  }
  return result;
}

/* tunSetPersist(fd, persist): clearing it makes the interface disappear with its last fd. */
static napi_value tun_set_persist(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  bool persist;
  if (!wgts_get_args(env, info, 2, argv) || !wgts_get_int32(env, argv[0], "fd", &fd) ||
      !wgts_get_bool(env, argv[1], "persist", &persist))
    return NULL;
  if (ioctl(fd, TUNSETPERSIST, persist ? 1L : 0L) < 0) wgts_throw_errno(env, errno, "TUNSETPERSIST", NULL);
  return NULL;
}

/*
 * Interface ioctls (MTU, flags) are addressed by name through any socket of the current network
 * namespace; a throwaway datagram socket is the conventional handle for them.
 */
static int ifreq_ioctl(napi_env env, unsigned long request, const char *op, struct ifreq *ifr) {
  int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) {
    wgts_throw_errno(env, errno, "socket", NULL);
    return -1;
  }
  int rc = ioctl(sock, request, ifr);
  int err = errno;
  close(sock);
  if (rc < 0) {
    wgts_throw_errno(env, err, op, ifr->ifr_name);
    return -1;
  }
  return 0;
}

/* setMtu(name, mtu) */
static napi_value set_mtu(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  struct ifreq ifr;
  int32_t mtu;
  memset(&ifr, 0, sizeof ifr);
  if (!wgts_get_args(env, info, 2, argv) || !get_ifname(env, argv[0], "SIOCSIFMTU", ifr.ifr_name) ||
      !wgts_get_int32(env, argv[1], "mtu", &mtu))
    return NULL;
  ifr.ifr_mtu = mtu;
  ifreq_ioctl(env, SIOCSIFMTU, "SIOCSIFMTU", &ifr);
  return NULL;
}

/* getMtu(name) -> number */
static napi_value get_mtu(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (!wgts_get_args(env, info, 1, argv) || !get_ifname(env, argv[0], "SIOCGIFMTU", ifr.ifr_name)) return NULL;
  if (ifreq_ioctl(env, SIOCGIFMTU, "SIOCGIFMTU", &ifr) < 0) return NULL;
  return wgts_int32(env, ifr.ifr_mtu);
}

/* setUp(name, up): sets or clears IFF_UP, keeping the other flags. */
static napi_value set_up(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  struct ifreq ifr;
  bool up;
  memset(&ifr, 0, sizeof ifr);
  if (!wgts_get_args(env, info, 2, argv) || !get_ifname(env, argv[0], "SIOCGIFFLAGS", ifr.ifr_name) ||
      !wgts_get_bool(env, argv[1], "up", &up))
    return NULL;
  if (ifreq_ioctl(env, SIOCGIFFLAGS, "SIOCGIFFLAGS", &ifr) < 0) return NULL;
  if (up)
    ifr.ifr_flags |= IFF_UP;
  else
    ifr.ifr_flags &= ~IFF_UP;
  ifreq_ioctl(env, SIOCSIFFLAGS, "SIOCSIFFLAGS", &ifr);
  return NULL;
}

/*
 * readBatch(fd, slab, slotSize, lengths, count) -> n
 * Up to count reads; packet i lands at slab[i * slotSize] with its length in lengths[i]. Stops at
 * EAGAIN; 0 means nothing was ready. The kernel silently truncates a packet longer than the buffer,
 * so each read also offers one spare byte: a packet that reaches it did not fit its slot and is
 * reported as length -1 (drop it; slots should hold the MTU). An error after some packets returns
 * those packets; the next call reports it.
 */
static napi_value read_batch(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int32_t fd, slot_size, count;
  uint8_t *slab;
  int32_t *lengths;
  size_t slab_len, lengths_len;
  if (!wgts_get_args(env, info, 5, argv) || !wgts_get_int32(env, argv[0], "fd", &fd) ||
      !wgts_get_typed(env, argv[1], "slab", napi_uint8_array, (void **)&slab, &slab_len) ||
      !wgts_get_int32(env, argv[2], "slotSize", &slot_size) ||
      !wgts_get_typed(env, argv[3], "lengths", napi_int32_array, (void **)&lengths, &lengths_len) ||
      !wgts_get_int32(env, argv[4], "count", &count))
    return NULL;
  if (slot_size <= 0 || count < 0 || (size_t)count > lengths_len ||
      !wgts_in_bounds(0, (int64_t)count * slot_size, slab_len)) {
    wgts_range_error(env, "readBatch: count slots of slotSize must fit slab and lengths");
    return NULL;
  }

  uint8_t spare;
  struct iovec iov[2] = {{.iov_base = NULL, .iov_len = (size_t)slot_size}, {.iov_base = &spare, .iov_len = 1}};
  int32_t n = 0;
  while (n < count) {
    iov[0].iov_base = slab + (size_t)n * (size_t)slot_size;
    ssize_t r = readv(fd, iov, 2);
    if (r > 0) {
      lengths[n++] = r > slot_size ? -1 : (int32_t)r;
      continue;
    }
    if (r == 0) break; /* not expected from a TUN; treat like "nothing more" */
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    if (n > 0) break; /* hand over what we have; the error repeats on the next call */
    wgts_throw_errno(env, errno, "readv", NULL);
    return NULL;
  }
  return wgts_int32(env, n);
}

/* What a failed write()/writev() of one packet means for the rest of the batch. */
typedef enum { WRITE_RETRY, WRITE_STOP, WRITE_FATAL, WRITE_DROP } write_outcome;

/*
 * EINTR: try again. EAGAIN: the queue is full, stop (resume when writable). A broken fd: stop
 * after what was written, or throw if nothing was. Anything else refuses only this packet
 * (malformed, EINVAL; too big, EMSGSIZE; interface down, EIO): drop it and go on.
 */
static write_outcome after_write_error(int err, int32_t written) {
  if (err == EINTR) return WRITE_RETRY;
  if (err == EAGAIN || err == EWOULDBLOCK) return WRITE_STOP;
  if (wgts_fd_is_broken(err)) return written > 0 ? WRITE_STOP : WRITE_FATAL;
  return WRITE_DROP;
}

/*
 * writeBatch(fd, slab, offsets, lengths, count, stats?) -> n
 * write()s packet i = slab[offsets[i] .. offsets[i] + lengths[i]) in order. n is how many packets
 * were consumed (written, or refused by the kernel and dropped); n < count only when the fd would
 * block (EAGAIN): resume from packet n once it is writable. stats (optional Int32Array, >= 2):
 * [0] packets dropped in this call, [1] negative errno of the last drop (0 if none).
 * Throws only when the fd itself is unusable and nothing was consumed yet.
 */
static napi_value write_batch(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  int32_t fd, count;
  uint8_t *slab;
  int32_t *offsets, *lengths, *stats;
  size_t slab_len, offsets_len, lengths_len;
  if (!wgts_get_args(env, info, 6, argv) || !wgts_get_int32(env, argv[0], "fd", &fd) ||
      !wgts_get_typed(env, argv[1], "slab", napi_uint8_array, (void **)&slab, &slab_len) ||
      !wgts_get_typed(env, argv[2], "offsets", napi_int32_array, (void **)&offsets, &offsets_len) ||
      !wgts_get_typed(env, argv[3], "lengths", napi_int32_array, (void **)&lengths, &lengths_len) ||
      !wgts_get_int32(env, argv[4], "count", &count) ||
      !wgts_get_optional_i32(env, argv[5], "stats", 2, &stats))
    return NULL;
  if (count < 0 || (size_t)count > offsets_len || (size_t)count > lengths_len) {
    wgts_range_error(env, "writeBatch: count exceeds offsets/lengths");
    return NULL;
  }
  for (int32_t i = 0; i < count; i++) {
    if (!wgts_in_bounds(offsets[i], lengths[i], slab_len)) {
      wgts_range_error(env, "writeBatch: a packet lies outside slab");
      return NULL;
    }
  }

  int32_t n = 0, dropped = 0, last_err = 0;
  while (n < count) {
    ssize_t r = write(fd, slab + offsets[n], (size_t)lengths[n]);
    if (r >= 0) {
      n++;
      continue;
    }
    int err = errno;
    write_outcome outcome = after_write_error(err, n);
    if (outcome == WRITE_RETRY) continue;
    if (outcome == WRITE_STOP) break;
    if (outcome == WRITE_FATAL) {
      wgts_throw_errno(env, err, "write", NULL);
      return NULL;
    }
    /* One packet refused (malformed, EINVAL; too big, EMSGSIZE; interface down, EIO): skip it. */
    dropped++;
    last_err = -err;
    n++;
  }
  if (stats != NULL) {
    stats[0] = dropped;
    stats[1] = last_err;
  }
  return wgts_int32(env, n);
}

/*
 * writevBatch(fd, slab, iovOffsets, iovLengths, iovCounts, count, stats?, errors?) -> n
 * Packet i is one writev() of the next iovCounts[i] ranges slab[iovOffsets[k] .. + iovLengths[k])
 * (ranges are taken in order: packet 0 uses the first iovCounts[0], and so on), so a packet can be
 * gathered from several places of one slab without a copy. Consumption, stats and throwing as for
 * writeBatch; errors (optional Int32Array, >= count): errors[i] = 0 when packet i was written,
 * its -errno when it was dropped (untouched past n).
 */
static napi_value writev_batch(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  int32_t fd, count;
  uint8_t *slab;
  int32_t *iov_offsets, *iov_lengths, *iov_counts, *stats, *errors;
  size_t slab_len, offsets_len, lengths_len, counts_len;
  if (!wgts_get_args(env, info, 8, argv) || !wgts_get_int32(env, argv[0], "fd", &fd) ||
      !wgts_get_typed(env, argv[1], "slab", napi_uint8_array, (void **)&slab, &slab_len) ||
      !wgts_get_typed(env, argv[2], "iovOffsets", napi_int32_array, (void **)&iov_offsets, &offsets_len) ||
      !wgts_get_typed(env, argv[3], "iovLengths", napi_int32_array, (void **)&iov_lengths, &lengths_len) ||
      !wgts_get_typed(env, argv[4], "iovCounts", napi_int32_array, (void **)&iov_counts, &counts_len) ||
      !wgts_get_int32(env, argv[5], "count", &count) ||
      !wgts_get_optional_i32(env, argv[6], "stats", 2, &stats) ||
      !wgts_get_optional_i32(env, argv[7], "errors", count > 0 ? (size_t)count : 0, &errors))
    return NULL;
  if (count < 0 || (size_t)count > counts_len) {
    wgts_range_error(env, "writevBatch: count exceeds iovCounts");
    return NULL;
  }
  size_t ranges = 0;
  for (int32_t i = 0; i < count; i++) {
    if (iov_counts[i] < 1 || iov_counts[i] > GATHER_IOV_MAX) {
      wgts_range_error(env, "writevBatch: each packet needs 1 to 1024 ranges");
      return NULL;
    }
    ranges += (size_t)iov_counts[i];
  }
  if (ranges > offsets_len || ranges > lengths_len) {
    wgts_range_error(env, "writevBatch: iovCounts exceed iovOffsets/iovLengths");
    return NULL;
  }
  for (size_t k = 0; k < ranges; k++) {
    if (!wgts_in_bounds(iov_offsets[k], iov_lengths[k], slab_len)) {
      wgts_range_error(env, "writevBatch: a range lies outside slab");
      return NULL;
    }
  }

  struct iovec iov[GATHER_IOV_MAX];
  int32_t n = 0, dropped = 0, last_err = 0;
  size_t first = 0; /* first range of packet n */
  while (n < count) {
    int k = iov_counts[n];
    for (int j = 0; j < k; j++) {
      iov[j].iov_base = slab + iov_offsets[first + (size_t)j];
      iov[j].iov_len = (size_t)iov_lengths[first + (size_t)j];
    }
    ssize_t r = writev(fd, iov, k);
    if (r >= 0) {
      if (errors != NULL) errors[n] = 0;
      first += (size_t)k;
      n++;
      continue;
    }
    int err = errno;
    write_outcome outcome = after_write_error(err, n);
    if (outcome == WRITE_RETRY) continue;
    if (outcome == WRITE_STOP) break;
    if (outcome == WRITE_FATAL) {
      wgts_throw_errno(env, err, "writev", NULL);
      return NULL;
    }
    /* Refused by the kernel (e.g. EINVAL for a virtio_net_hdr it does not accept): skip it. */
    if (errors != NULL) errors[n] = -err;
    dropped++;
    last_err = -err;
    first += (size_t)k;
    n++;
  }
  if (stats != NULL) {
    stats[0] = dropped;
    stats[1] = last_err;
  }
  return wgts_int32(env, n);
}

bool wgts_init_tun(napi_env env, napi_value exports) {
  return wgts_export(env, exports, "tunOpen", tun_open) &&
         wgts_export(env, exports, "tunSetPersist", tun_set_persist) &&
         wgts_export(env, exports, "setMtu", set_mtu) && wgts_export(env, exports, "getMtu", get_mtu) &&
         wgts_export(env, exports, "setUp", set_up) &&
         wgts_export(env, exports, "readBatch", read_batch) &&
         wgts_export(env, exports, "writeBatch", write_batch) &&
         wgts_export(env, exports, "writevBatch", writev_batch);
}
