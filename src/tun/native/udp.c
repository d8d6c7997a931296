/*
 * UDP socket for WireGuard's outer datagrams: IPv4, IPv6 or dual-stack, SO_MARK (keeps our own
 * ciphertext out of the policy-routing table that sends plaintext into the tunnel), large buffers,
 * and batched recvmmsg/sendmmsg with IP_PKTINFO/IPV6_PKTINFO so replies leave from the local
 * address the peer reached ("sticky sockets", as wireguard-go and the kernel module do).
 *
 * Endpoints travel as 40-byte address records (common.h, src/tun/README.md), one per slot.
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* wireguard-go's socket buffer size: enough to absorb bursts at multi-gigabit rates. */
#define SOCKET_BUFFER_BYTES (7 << 20)

/* Control space for one received or sent PKTINFO; dual-stack sockets may deliver both kinds. */
#define PKTINFO_CONTROL_BYTES \
  (CMSG_SPACE(sizeof(struct in6_pktinfo)) + CMSG_SPACE(sizeof(struct in_pktinfo)))

typedef union {
  struct sockaddr sa;
  struct sockaddr_in v4;
  struct sockaddr_in6 v6;
} sockaddr_any;

typedef union {
  char buf[PKTINFO_CONTROL_BYTES];
  struct cmsghdr align;
} control_buf;

static const uint8_t V4_MAPPED_PREFIX[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static bool is_v4_mapped(const uint8_t ip[16]) { return memcmp(ip, V4_MAPPED_PREFIX, 12) == 0; }

static bool is_link_local_v6(const uint8_t ip[16]) { return ip[0] == 0xfe && (ip[1] & 0xc0) == 0x80; }

static bool is_zero16(const uint8_t ip[16]) {
  static const uint8_t zero[16];
  return memcmp(ip, zero, 16) == 0;
}

static void put_v4_mapped(uint8_t dst[16], const struct in_addr *a) {
  memcpy(dst, V4_MAPPED_PREFIX, 12);
  memcpy(dst + 12, &a->s_addr, 4);
}

static void put_le32(uint8_t *dst, uint32_t v) {
  dst[0] = (uint8_t)v;
  dst[1] = (uint8_t)(v >> 8);
  dst[2] = (uint8_t)(v >> 16);
  dst[3] = (uint8_t)(v >> 24);
}

static uint32_t get_le32(const uint8_t *src) {
  return (uint32_t)src[0] | (uint32_t)src[1] << 8 | (uint32_t)src[2] << 16 | (uint32_t)src[3] << 24;
}

/* The socket's address family, so records can be turned into sockaddrs it accepts. */
static int socket_domain(int fd) {
  int domain = 0;
  socklen_t len = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0) return -1;
  return domain;
}

static int set_int_opt(int fd, int level, int name, int value) {
  return setsockopt(fd, level, name, &value, sizeof value);
}

/* Tries the privileged *FORCE variant (ignores net.core.[rw]mem_max), then the capped one. */
static int set_buffer(int fd, int force_name, int name) {
  if (set_int_opt(fd, SOL_SOCKET, force_name, SOCKET_BUFFER_BYTES) == 0) return 0;
  return set_int_opt(fd, SOL_SOCKET, name, SOCKET_BUFFER_BYTES);
}

/*
 * udpOpen(family 4|6|0, port, fwmark, address?) -> { fd, port }
 * family 0 is one AF_INET6 socket with IPV6_V6ONLY off, taking IPv4 as ::ffff:a.b.c.d.
 * address (optional string) binds to one local address instead of the wildcard.
 */
static napi_value udp_open(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t family, port;
  uint32_t fwmark;
  if (!wgts_get_args(env, info, 4, argv) || !wgts_get_int32(env, argv[0], "family", &family) ||
      !wgts_get_int32(env, argv[1], "port", &port) || !wgts_get_uint32(env, argv[2], "fwmark", &fwmark))
    return NULL;
  if (family != 0 && family != 4 && family != 6) {
    wgts_range_error(env, "udpOpen: family must be 4, 6 or 0 (dual-stack)");
    return NULL;
  }
  if (port < 0 || port > 65535) {
    wgts_range_error(env, "udpOpen: port must be 0..65535");
    return NULL;
  }

  sockaddr_any local;
  socklen_t local_len;
  memset(&local, 0, sizeof local);
  if (family == 4) {
    local.v4.sin_family = AF_INET;
    local.v4.sin_port = htons((uint16_t)port);
    local.v4.sin_addr.s_addr = htonl(INADDR_ANY);
    local_len = sizeof local.v4;
  } else {
    local.v6.sin6_family = AF_INET6;
    local.v6.sin6_port = htons((uint16_t)port);
    local.v6.sin6_addr = in6addr_any;
    local_len = sizeof local.v6;
  }

  napi_valuetype address_type;
  if (napi_typeof(env, argv[3], &address_type) != napi_ok) {
    wgts_throw_napi_failure(env, "napi_typeof");
    return NULL;
  }
  char address[INET6_ADDRSTRLEN + 1] = "";
  if (address_type != napi_undefined && address_type != napi_null) {
    size_t len;
    if (!wgts_get_string(env, argv[3], "address", address, sizeof address, &len)) return NULL;
    int ok;
    if (family == 4) {
      ok = inet_pton(AF_INET, address, &local.v4.sin_addr);
    } else {
      struct in_addr v4;
      ok = inet_pton(AF_INET6, address, &local.v6.sin6_addr);
      if (ok != 1 && family == 0 && inet_pton(AF_INET, address, &v4) == 1) {
        put_v4_mapped(local.v6.sin6_addr.s6_addr, &v4);
        ok = 1;
      }
    }
    if (ok != 1) {
      wgts_range_error(env, "udpOpen: address is not an IP address of the socket's family");
      return NULL;
    }
  }

  /* Non-blocking: every call runs on the JS thread. CLOEXEC: children (ip, hooks) must not inherit it. */
  int domain = family == 4 ? AF_INET : AF_INET6;
  int fd = socket(domain, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
  if (fd < 0) {
    wgts_throw_errno(env, errno, "socket", NULL);
    return NULL;
  }
  /* SO_REUSEADDR stays at its default (off): a second daemon on the same port must fail to bind. */
  const char *failed = NULL;
  if (domain == AF_INET6 && set_int_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY, family == 6) < 0)
    failed = "IPV6_V6ONLY";
  else if (fwmark != 0 && set_int_opt(fd, SOL_SOCKET, SO_MARK, (int)fwmark) < 0)
    failed = "SO_MARK";
  else if (set_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF) < 0)
    failed = "SO_RCVBUF";
  else if (set_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF) < 0)
    failed = "SO_SNDBUF";
  /* Ask for the local address each datagram arrived on (see recvBatch). */
  else if (domain == AF_INET && set_int_opt(fd, IPPROTO_IP, IP_PKTINFO, 1) < 0)
    failed = "IP_PKTINFO";
  else if (domain == AF_INET6 && set_int_opt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1) < 0)
    failed = "IPV6_RECVPKTINFO";
  /* Dual-stack: IPv4 datagrams also carry IP_PKTINFO, whose ipi_spec_dst we prefer. */
  else if (family == 0 && set_int_opt(fd, IPPROTO_IP, IP_PKTINFO, 1) < 0)
    failed = "IP_PKTINFO";
  else if (bind(fd, &local.sa, local_len) < 0)
    failed = "bind";
  else if (getsockname(fd, &local.sa, &local_len) < 0)
    failed = "getsockname";
  if (failed != NULL) {
    int err = errno;
    close(fd);
    char subject[64];
    snprintf(subject, sizeof subject, "%s%s%d", address[0] ? address : "port", address[0] ? ":" : " ", port);
    wgts_throw_errno(env, err, failed, subject);
    return NULL;
  }

  int bound_port = ntohs(domain == AF_INET ? local.v4.sin_port : local.v6.sin6_port);
  napi_value result, fd_value, port_value;
  if (napi_create_object(env, &result) != napi_ok || napi_create_int32(env, fd, &fd_value) != napi_ok ||
      napi_create_int32(env, bound_port, &port_value) != napi_ok ||
      napi_set_named_property(env, result, "fd", fd_value) != napi_ok ||
      napi_set_named_property(env, result, "port", port_value) != napi_ok) {
    close(fd);
    wgts_throw_napi_failure(env, "udpOpen result");
    return NULL;
  }
  return result;
}

/* udpSetMark(fd, mark): SO_MARK (needs CAP_NET_ADMIN); 0 clears it. */
static napi_value udp_set_mark(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  uint32_t mark;
  if (!wgts_get_args(env, info, 2, argv) || !wgts_get_int32(env, argv[0], "fd", &fd) ||
      !wgts_get_uint32(env, argv[1], "mark", &mark))
    return NULL;
  if (set_int_opt(fd, SOL_SOCKET, SO_MARK, (int)mark) < 0) wgts_throw_errno(env, errno, "SO_MARK", NULL);
  return NULL;
}

/* udpGetMark(fd) -> number (unsigned) */
static napi_value udp_get_mark(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!wgts_get_args(env, info, 1, argv) || !wgts_get_int32(env, argv[0], "fd", &fd)) return NULL;
  uint32_t mark = 0;
  socklen_t len = sizeof mark;
  if (getsockopt(fd, SOL_SOCKET, SO_MARK, &mark, &len) < 0) {
    wgts_throw_errno(env, errno, "SO_MARK", NULL);
    return NULL;
  }
  napi_value out;
  NAPI_CHECK(env, napi_create_uint32(env, mark, &out));
  return out;
}

/* Fills the remote and local halves of one address record from a received message. */
static void record_from_msg(uint8_t *rec, const struct msghdr *msg) {
  const sockaddr_any *from = msg->msg_name;
  memset(rec, 0, ADDR_RECORD_SIZE);
  if (from->sa.sa_family == AF_INET) {
    put_v4_mapped(rec + ADDR_REMOTE_IP, &from->v4.sin_addr);
    memcpy(rec + ADDR_REMOTE_PORT, &from->v4.sin_port, 2); /* already big-endian */
    rec[ADDR_FAMILY] = 4;
  } else if (from->sa.sa_family == AF_INET6) {
    memcpy(rec + ADDR_REMOTE_IP, &from->v6.sin6_addr, 16);
    memcpy(rec + ADDR_REMOTE_PORT, &from->v6.sin6_port, 2);
    rec[ADDR_FAMILY] = is_v4_mapped(rec + ADDR_REMOTE_IP) ? 4 : 6;
  }

  /* MSG_CTRUNC would mean a partial control area: then the local half stays "unknown" (zero). */
  if (msg->msg_flags & MSG_CTRUNC) return;
  bool have_v4_info = false;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO &&
        c->cmsg_len >= CMSG_LEN(sizeof(struct in_pktinfo))) {
      struct in_pktinfo pi;
      memcpy(&pi, CMSG_DATA(c), sizeof pi);
      /* ipi_spec_dst: the local address to answer from (differs from ipi_addr for broadcast). */
      put_v4_mapped(rec + ADDR_LOCAL_IP, &pi.ipi_spec_dst);
      put_le32(rec + ADDR_IFINDEX, (uint32_t)pi.ipi_ifindex);
      have_v4_info = true;
    } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO && !have_v4_info &&
               c->cmsg_len >= CMSG_LEN(sizeof(struct in6_pktinfo))) {
      struct in6_pktinfo pi;
      memcpy(&pi, CMSG_DATA(c), sizeof pi);
      memcpy(rec + ADDR_LOCAL_IP, &pi.ipi6_addr, 16);
      put_le32(rec + ADDR_IFINDEX, pi.ipi6_ifindex);
    }
  }
}

/*
 * recvBatch(fd, slab, slotSize, lengths, addrs, count) -> n
 * One recvmmsg per up-to-MMSG_CHUNK slots; datagram i at slab[i * slotSize], lengths[i] its size
 * (-1 if it was larger than slotSize and got truncated: drop it), address record i at addrs[i * 40].
 * Stops at EAGAIN (0 = nothing ready). An error after some datagrams returns those; the next call
 * reports it.
 */
static napi_value recv_batch(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  int32_t fd, slot_size, count;
  uint8_t *slab, *addrs;
  int32_t *lengths;
  size_t slab_len, lengths_len, addrs_len;
  if (!wgts_get_args(env, info, 6, argv) || !wgts_get_int32(env, argv[0], "fd", &fd) ||
      !wgts_get_typed(env, argv[1], "slab", napi_uint8_array, (void **)&slab, &slab_len) ||
      !wgts_get_int32(env, argv[2], "slotSize", &slot_size) ||
      !wgts_get_typed(env, argv[3], "lengths", napi_int32_array, (void **)&lengths, &lengths_len) ||
      !wgts_get_typed(env, argv[4], "addrs", napi_uint8_array, (void **)&addrs, &addrs_len) ||
      !wgts_get_int32(env, argv[5], "count", &count))
    return NULL;
  if (slot_size <= 0 || count < 0 || (size_t)count > lengths_len ||
      !wgts_in_bounds(0, (int64_t)count * slot_size, slab_len) ||
      !wgts_in_bounds(0, (int64_t)count * ADDR_RECORD_SIZE, addrs_len)) {
    wgts_range_error(env, "recvBatch: count slots must fit slab, lengths and addrs");
    return NULL;
  }

  struct mmsghdr msgs[MMSG_CHUNK];
  struct iovec iov[MMSG_CHUNK];
  sockaddr_any names[MMSG_CHUNK];
  control_buf control[MMSG_CHUNK];
  int32_t n = 0;
  int stale_errors = 0;
  while (n < count) {
    int chunk = count - n < MMSG_CHUNK ? count - n : MMSG_CHUNK;
    for (int j = 0; j < chunk; j++) {
      iov[j].iov_base = slab + (size_t)(n + j) * (size_t)slot_size;
      iov[j].iov_len = (size_t)slot_size;
      memset(&msgs[j], 0, sizeof msgs[j]);
      msgs[j].msg_hdr.msg_name = &names[j];
      msgs[j].msg_hdr.msg_namelen = sizeof names[j];
      msgs[j].msg_hdr.msg_iov = &iov[j];
      msgs[j].msg_hdr.msg_iovlen = 1;
      msgs[j].msg_hdr.msg_control = control[j].buf;
      msgs[j].msg_hdr.msg_controllen = sizeof control[j].buf;
    }
    int r = recvmmsg(fd, msgs, (unsigned)chunk, MSG_DONTWAIT, NULL);
    if (r < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      if (n > 0) break;
      /* A queued ICMP error (only reported with IP_RECVERR or on connected sockets) is consumed
       * by the call that returns it; datagrams behind it are still there. */
      if ((err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH) && ++stale_errors < 8)
        continue;
      wgts_throw_errno(env, err, "recvmmsg", NULL);
      return NULL;
    }
    for (int j = 0; j < r; j++) {
      const struct msghdr *h = &msgs[j].msg_hdr;
      lengths[n + j] = (h->msg_flags & MSG_TRUNC) ? -1 : (int32_t)msgs[j].msg_len;
      record_from_msg(addrs + (size_t)(n + j) * ADDR_RECORD_SIZE, h);
    }
    n += r;
    if (r < chunk) break; /* the queue is empty; skip the extra syscall that would say EAGAIN */
  }
  return wgts_int32(env, n);
}

/*
 * Builds the destination (and, if with_source, the PKTINFO source) of one outgoing datagram from
 * its address record. A record the socket cannot address gets no name; the kernel then refuses
 * the packet (EDESTADDRREQ) and it is counted as dropped like any other refused packet.
 */
static void msg_from_record(struct msghdr *h, sockaddr_any *name, control_buf *control, int domain,
                            const uint8_t *rec, bool with_source) {
  const uint8_t *remote = rec + ADDR_REMOTE_IP;
  const uint8_t *local = rec + ADDR_LOCAL_IP;
  uint32_t ifindex = get_le32(rec + ADDR_IFINDEX);
  memset(name, 0, sizeof *name);
  h->msg_name = name;
  h->msg_namelen = 0;
  h->msg_control = NULL;
  h->msg_controllen = 0;

  if (domain == AF_INET) {
    if (!is_v4_mapped(remote)) {
      h->msg_name = NULL; /* not addressable from an IPv4 socket */
      return;
    }
    name->v4.sin_family = AF_INET;
    memcpy(&name->v4.sin_addr, remote + 12, 4);
    memcpy(&name->v4.sin_port, rec + ADDR_REMOTE_PORT, 2);
    h->msg_namelen = sizeof name->v4;
  } else {
    name->v6.sin6_family = AF_INET6;
    memcpy(&name->v6.sin6_addr, remote, 16);
    memcpy(&name->v6.sin6_port, rec + ADDR_REMOTE_PORT, 2);
    /* A link-local peer is only reachable through the interface we heard it on. */
    if (is_link_local_v6(remote)) name->v6.sin6_scope_id = ifindex;
    h->msg_namelen = sizeof name->v6;
  }

  if (!with_source) return;
  memset(control->buf, 0, sizeof control->buf);
  h->msg_control = control->buf;
  struct cmsghdr *c;
  if (domain == AF_INET) {
    if (!is_v4_mapped(local)) {
      h->msg_control = NULL;
      return;
    }
    struct in_pktinfo pi;
    memset(&pi, 0, sizeof pi);
    /* Source address only; ipi_ifindex stays 0 so routing still picks the way out. */
    memcpy(&pi.ipi_spec_dst, local + 12, 4);
    h->msg_controllen = CMSG_SPACE(sizeof pi);
    c = CMSG_FIRSTHDR(h);
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof pi);
    memcpy(CMSG_DATA(c), &pi, sizeof pi);
  } else {
    /* On a dual-stack socket a ::ffff:a.b.c.d source works for IPv4 destinations too. */
    struct in6_pktinfo pi;
    memset(&pi, 0, sizeof pi);
    memcpy(&pi.ipi6_addr, local, 16);
    if (is_link_local_v6(local)) pi.ipi6_ifindex = ifindex;
    h->msg_controllen = CMSG_SPACE(sizeof pi);
    c = CMSG_FIRSTHDR(h);
    c->cmsg_level = IPPROTO_IPV6;
    c->cmsg_type = IPV6_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof pi);
    memcpy(CMSG_DATA(c), &pi, sizeof pi);
  }
}

/*
 * How the kernel refuses a PKTINFO source that is not a local address: EINVAL (IPv6, older IPv4),
 * ENETUNREACH (IPv4 route lookup since ~5.x), EADDRNOTAVAIL. Retrying without the source costs
 * one extra syscall for a packet that then fails for another reason.
 */
static bool source_refusal(int err) { return err == EINVAL || err == ENETUNREACH || err == EADDRNOTAVAIL; }

/*
 * sendBatch(fd, slab, offsets, lengths, addrs, count, stats?) -> n
 * sendmmsg of datagram i = slab[offsets[i] .. + lengths[i]) to the remote half of record i, from
 * its local half when that is non-zero. n counts datagrams consumed (sent, or refused and
 * dropped); n < count only on EAGAIN: resume from n when writable. A source the kernel refuses
 * (the address is gone) is retried without it, and the record's local half [20..40) is
 * zeroed so the caller sees it. stats (optional Int32Array, >= 3): [0] dropped, [1] negative
 * errno of the last drop, [2] sent after dropping their source.
 */
static napi_value send_batch(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  int32_t fd, count;
  uint8_t *slab, *addrs;
  int32_t *offsets, *lengths, *stats;
  size_t slab_len, offsets_len, lengths_len, addrs_len;
  if (!wgts_get_args(env, info, 7, argv) || !wgts_get_int32(env, argv[0], "fd", &fd) ||
      !wgts_get_typed(env, argv[1], "slab", napi_uint8_array, (void **)&slab, &slab_len) ||
      !wgts_get_typed(env, argv[2], "offsets", napi_int32_array, (void **)&offsets, &offsets_len) ||
      !wgts_get_typed(env, argv[3], "lengths", napi_int32_array, (void **)&lengths, &lengths_len) ||
      !wgts_get_typed(env, argv[4], "addrs", napi_uint8_array, (void **)&addrs, &addrs_len) ||
      !wgts_get_int32(env, argv[5], "count", &count) ||
      !wgts_get_optional_i32(env, argv[6], "stats", 3, &stats))
    return NULL;
  if (count < 0 || (size_t)count > offsets_len || (size_t)count > lengths_len ||
      !wgts_in_bounds(0, (int64_t)count * ADDR_RECORD_SIZE, addrs_len)) {
    wgts_range_error(env, "sendBatch: count exceeds offsets, lengths or addrs");
    return NULL;
  }
  for (int32_t i = 0; i < count; i++) {
    if (!wgts_in_bounds(offsets[i], lengths[i], slab_len)) {
      wgts_range_error(env, "sendBatch: a datagram lies outside slab");
      return NULL;
    }
  }
  if (count == 0) {
    if (stats != NULL) stats[0] = stats[1] = stats[2] = 0;
    return wgts_int32(env, 0);
  }
  int domain = socket_domain(fd);
  if (domain < 0) {
    wgts_throw_errno(env, errno, "getsockopt SO_DOMAIN", NULL);
    return NULL;
  }

  struct mmsghdr msgs[MMSG_CHUNK];
  struct iovec iov[MMSG_CHUNK];
  sockaddr_any names[MMSG_CHUNK];
  control_buf control[MMSG_CHUNK];
  bool stripped[MMSG_CHUNK];  /* message j goes without its record's (refused) source */
  uint8_t refused_source[16]; /* a source the kernel refused in this call: skip it from now on */
  bool have_refused = false;
  int32_t n = 0, dropped = 0, last_err = 0, unsourced = 0;
  while (n < count) {
    int chunk = count - n < MMSG_CHUNK ? count - n : MMSG_CHUNK;
    for (int j = 0; j < chunk; j++) {
      const uint8_t *rec = addrs + (size_t)(n + j) * ADDR_RECORD_SIZE;
      bool has_source = !is_zero16(rec + ADDR_LOCAL_IP);
      stripped[j] = has_source && have_refused && memcmp(rec + ADDR_LOCAL_IP, refused_source, 16) == 0;
      iov[j].iov_base = slab + offsets[n + j];
      iov[j].iov_len = (size_t)lengths[n + j];
      memset(&msgs[j], 0, sizeof msgs[j]);
      msgs[j].msg_hdr.msg_iov = &iov[j];
      msgs[j].msg_hdr.msg_iovlen = 1;
      msg_from_record(&msgs[j].msg_hdr, &names[j], &control[j], domain, rec, has_source && !stripped[j]);
    }
    /* sendmmsg reports an error only for the first message; later failures end the batch early
     * and surface as the first message of the next call. */
    int r = sendmmsg(fd, msgs, (unsigned)chunk, MSG_DONTWAIT);
    if (r > 0) {
      for (int j = 0; j < r; j++) {
        if (!stripped[j]) continue;
        memset(addrs + (size_t)(n + j) * ADDR_RECORD_SIZE + ADDR_LOCAL_IP, 0, ADDR_RECORD_SIZE - ADDR_LOCAL_IP);
        unsourced++;
      }
      n += r;
      continue;
    }
    int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) break;
    if (source_refusal(err) && msgs[0].msg_hdr.msg_control != NULL) {
      /* The local address we were told to send from is not (or no longer) ours: send without,
       * and do the same for every other datagram of this call that names it. */
      memcpy(refused_source, addrs + (size_t)n * ADDR_RECORD_SIZE + ADDR_LOCAL_IP, 16);
      have_refused = true;
      continue;
    }
    if (wgts_fd_is_broken(err)) {
      if (n > 0) break;
      wgts_throw_errno(env, err, "sendmmsg", NULL);
      return NULL;
    }
    /* One datagram refused (unreachable, EMSGSIZE, no route, filtered): drop it and go on. */
    dropped++;
    last_err = -err;
    n++;
  }
  if (stats != NULL) {
    stats[0] = dropped;
    stats[1] = last_err;
    stats[2] = unsourced;
  }
  return wgts_int32(env, n);
}

bool wgts_init_udp(napi_env env, napi_value exports) {
  return wgts_export(env, exports, "udpOpen", udp_open) &&
         wgts_export(env, exports, "udpSetMark", udp_set_mark) &&
         wgts_export(env, exports, "udpGetMark", udp_get_mark) &&
         wgts_export(env, exports, "recvBatch", recv_batch) &&
         wgts_export(env, exports, "sendBatch", send_batch);
}
