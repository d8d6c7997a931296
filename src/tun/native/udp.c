/*
 * UDP socket for WireGuard's outer datagrams: IPv4, IPv6 or dual-stack, SO_MARK (keeps our own
 * ciphertext out of the policy-routing table that sends plaintext into the tunnel), large buffers,
 * and batched recvmmsg/sendmmsg with IP_PKTINFO/IPV6_PKTINFO so replies leave from the local
 * address the peer reached ("sticky sockets", as wireguard-go and the kernel module do).
 *
 * Offloads, invisible to callers: sendBatch turns runs of same-destination, same-size datagrams
 * into one UDP_SEGMENT (GSO) message each, and recvBatch splits UDP_GRO-coalesced receives back
 * into one datagram per slot. Both need per-socket state (below), keyed by fd.
 *
 * Endpoints travel as 40-byte address records (common.h, src/tun/README.md), one per slot.
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* wireguard-go's socket buffer size: enough to absorb bursts at multi-gigabit rates. */
#define SOCKET_BUFFER_BYTES (7 << 20)

/* Control space for one received or sent PKTINFO (dual-stack sockets may deliver both kinds),
 * plus the UDP_GRO segment size of a coalesced receive (int) or the UDP_SEGMENT of a GSO send (u16). */
#define PKTINFO_CONTROL_BYTES \
  (CMSG_SPACE(sizeof(struct in6_pktinfo)) + CMSG_SPACE(sizeof(struct in_pktinfo)))
#define CONTROL_BYTES (PKTINFO_CONTROL_BYTES + CMSG_SPACE(sizeof(int)))

/* The kernel's UDP_MAX_SEGMENTS (GSO) and UDP_GRO_CNT_MAX (GRO): datagrams per offloaded message. */
#define MAX_SEGMENTS 64
/* Largest UDP payload of one GSO message: the IP datagram must stay below 64 KiB
 * (65535 - 20 - 8 for IPv4; IPv6's payload-length field excludes its own header: 65535 - 8). */
#define GSO_MAX_PAYLOAD_V4 (65535 - 20 - 8)
#define GSO_MAX_PAYLOAD_V6 (65535 - 8)
/* Receive room per message while GRO is on: a coalesced skb stays below gro_max_size (64 KiB). */
#define GRO_MAX_BYTES 65536
/* Datagrams (iovecs) one sendmmsg call may carry across its MMSG_CHUNK messages. */
#define SEND_IOV_MAX 1024

typedef union {
  struct sockaddr sa;
  struct sockaddr_in v4;
  struct sockaddr_in6 v6;
} sockaddr_any;

typedef union {
  char buf[CONTROL_BYTES];
  struct cmsghdr align;
} control_buf;

/* ---- per-socket offload state ------------------------------------------------------------------ */

/* One datagram split off a GRO receive that did not fit the caller's slots: delivered first next time. */
typedef struct {
  uint32_t offset; /* in carry_data */
  int32_t length;  /* -1: it can never fit a slot (larger than the slot it was split for) */
  uint16_t record; /* index into carry_records */
} carried_datagram;

typedef struct {
  bool gso; /* UDP_SEGMENT supported and not refused so far */
  bool gro; /* UDP_GRO enabled */
  int inject_gso_errno; /* test hook: the next GSO message "fails" with this errno */
  uint64_t gso_messages, gso_datagrams, gso_fallbacks, gro_messages, gro_datagrams, carried_total;
  uint32_t segments_x16; /* moving average of datagrams per received message, x16 */
  uint8_t *scratch;      /* GRO: GRO_MAX_BYTES per message in flight, past the caller's slot */
  size_t scratch_messages;
  uint8_t *carry_data;
  size_t carry_capacity;
  carried_datagram *carry; /* MMSG_CHUNK * MAX_SEGMENTS entries once allocated */
  uint32_t carry_next, carry_count;
  uint8_t carry_records[MMSG_CHUNK * ADDR_RECORD_SIZE];
} udp_state;

/* States by fd (fds are small, dense ints). The lock only guards the table; each state is used by
 * the one thread that calls into its socket. */
static pthread_mutex_t states_lock = PTHREAD_MUTEX_INITIALIZER;
static udp_state **states;
static size_t states_len;

static void state_free(udp_state *st) {
  if (st == NULL) return;
  free(st->scratch);
  free(st->carry_data);
  free(st->carry);
  free(st);
}

static udp_state *state_get(int fd) {
  udp_state *st = NULL;
  pthread_mutex_lock(&states_lock);
  if (fd >= 0 && (size_t)fd < states_len) st = states[fd];
  pthread_mutex_unlock(&states_lock);
  return st;
}

/* Installs st for fd (replacing a stale one left by an fd closed behind our back). */
static bool state_put(int fd, udp_state *st) {
  pthread_mutex_lock(&states_lock);
  if ((size_t)fd >= states_len) {
    size_t len = states_len ? states_len : 64;
    while (len <= (size_t)fd) len *= 2;
    udp_state **grown = realloc(states, len * sizeof *grown);
    if (grown == NULL) {
      pthread_mutex_unlock(&states_lock);
      return false;
    }
    memset(grown + states_len, 0, (len - states_len) * sizeof *grown);
    states = grown;
    states_len = len;
  }
  udp_state *old = states[fd];
  states[fd] = st;
  pthread_mutex_unlock(&states_lock);
  state_free(old);
  return true;
}

void wgts_udp_forget(int fd) {
  udp_state *st = NULL;
  pthread_mutex_lock(&states_lock);
  if (fd >= 0 && (size_t)fd < states_len) {
    st = states[fd];
    states[fd] = NULL;
  }
  pthread_mutex_unlock(&states_lock);
  state_free(st);
}

static bool ensure_scratch(udp_state *st, size_t messages) {
  if (st->scratch_messages >= messages) return true;
  /* Allocated once at the largest size: untouched pages cost nothing, and only the bytes of a
   * coalesced receive beyond the caller's slot are ever written here. */
  uint8_t *p = malloc((size_t)MMSG_CHUNK * GRO_MAX_BYTES);
  if (p == NULL) return false;
  free(st->scratch);
  st->scratch = p;
  st->scratch_messages = MMSG_CHUNK;
  return true;
}

static bool ensure_carry(udp_state *st, size_t bytes) {
  if (st->carry == NULL) {
    st->carry = malloc((size_t)MMSG_CHUNK * MAX_SEGMENTS * sizeof *st->carry);
    if (st->carry == NULL) return false;
  }
  if (st->carry_capacity >= bytes) return true;
  size_t capacity = st->carry_capacity ? st->carry_capacity : GRO_MAX_BYTES;
  while (capacity < bytes) capacity *= 2;
  uint8_t *p = realloc(st->carry_data, capacity);
  if (p == NULL) return false;
  st->carry_data = p;
  st->carry_capacity = capacity;
  return true;
}

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
 * udpOpen(family 4|6|0, port, fwmark, address?, offload?) -> { fd, port }
 * family 0 is one AF_INET6 socket with IPV6_V6ONLY off, taking IPv4 as ::ffff:a.b.c.d.
 * address (optional string) binds to one local address instead of the wildcard.
 * offload (default true): UDP GSO on send when the kernel has UDP_SEGMENT, UDP_GRO on receive.
 */
static napi_value udp_open(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int32_t family, port;
  uint32_t fwmark;
  if (!wgts_get_args(env, info, 5, argv) || !wgts_get_int32(env, argv[0], "family", &family) ||
      !wgts_get_int32(env, argv[1], "port", &port) || !wgts_get_uint32(env, argv[2], "fwmark", &fwmark))
    return NULL;
  bool offload = true;
  napi_valuetype offload_type;
  if (napi_typeof(env, argv[4], &offload_type) != napi_ok) {
    wgts_throw_napi_failure(env, "napi_typeof");
    return NULL;
  }
  if (offload_type != napi_undefined && !wgts_get_bool(env, argv[4], "offload", &offload)) return NULL;
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
  udp_state *st = NULL;
  if (failed == NULL) {
    st = calloc(1, sizeof *st);
    if (st == NULL) {
      errno = ENOMEM;
      failed = "udpOpen";
    }
  }
  if (failed == NULL && offload) {
    /* GSO: getsockopt(UDP_SEGMENT) exists since 4.18, as the cmsg does (older kernels would ignore
     * the cmsg and send one oversized datagram, so never send it unprobed). GRO: 5.0; a kernel
     * without it refuses the option and datagrams arrive one by one, as without offloads. */
    int value = 0;
    socklen_t value_len = sizeof value;
    st->gso = getsockopt(fd, SOL_UDP, UDP_SEGMENT, &value, &value_len) == 0;
    st->gro = set_int_opt(fd, SOL_UDP, UDP_GRO, 1) == 0;
  }
  if (st != NULL) st->segments_x16 = 16;
  if (failed == NULL && !state_put(fd, st)) {
    errno = ENOMEM;
    failed = "udpOpen";
  }
  if (failed != NULL) {
    int err = errno;
    if (st != NULL && state_get(fd) == st) wgts_udp_forget(fd);
    else state_free(st);
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
    wgts_udp_forget(fd);
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

/*
 * Fills the remote and local halves of one address record from a received message; returns the
 * UDP_GRO segment size when the message holds several coalesced datagrams, else 0.
 */
static int record_from_msg(uint8_t *rec, const struct msghdr *msg) {
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

  /* MSG_CTRUNC would mean a partial control area: then the local half stays "unknown" (zero). The
   * area has room for everything the socket asks for, so this does not happen in practice. */
  int gro_size = 0;
  bool have_v4_info = false;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
    if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
      memcpy(&gro_size, CMSG_DATA(c), sizeof gro_size);
    } else if (msg->msg_flags & MSG_CTRUNC) {
      continue;
    } else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO &&
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
  return gro_size > 0 ? gro_size : 0;
}

/* Copies bytes [from, from + len) of a received message laid out as slot[0..slot_len) ++ rest. */
static void gather(uint8_t *dst, const uint8_t *slot, size_t slot_len, const uint8_t *rest, size_t from,
                   size_t len) {
  if (from < slot_len) {
    size_t head = slot_len - from < len ? slot_len - from : len;
    memcpy(dst, slot + from, head);
    dst += head;
    from += head;
    len -= head;
  }
  if (len > 0) memcpy(dst, rest + (from - slot_len), len);
}

/* Hands out datagrams kept from an earlier call (oldest first); returns how many. */
static int32_t deliver_carry(udp_state *st, uint8_t *slab, int32_t slot_size, int32_t *lengths,
                             uint8_t *addrs, int32_t count) {
  int32_t n = 0;
  while (n < count && st->carry_next < st->carry_count) {
    const carried_datagram *d = &st->carry[st->carry_next++];
    int32_t len = d->length;
    if (len > slot_size) len = -1;
    if (len > 0) memcpy(slab + (size_t)n * (size_t)slot_size, st->carry_data + d->offset, (size_t)len);
    lengths[n] = len;
    memcpy(addrs + (size_t)n * ADDR_RECORD_SIZE, st->carry_records + (size_t)d->record * ADDR_RECORD_SIZE,
           ADDR_RECORD_SIZE);
    n++;
  }
  if (st->carry_next == st->carry_count) st->carry_next = st->carry_count = 0;
  return n;
}

static uint32_t carried_now(const udp_state *st) { return st == NULL ? 0 : st->carry_count - st->carry_next; }

/*
 * recvBatch(fd, slab, slotSize, lengths, addrs, count, info?) -> n
 * One recvmmsg per up-to-MMSG_CHUNK slots; datagram i at slab[i * slotSize], lengths[i] its size
 * (-1 if it was larger than slotSize and got truncated: drop it), address record i at addrs[i * 40].
 * Stops at EAGAIN (0 = nothing ready). An error after some datagrams returns those; the next call
 * reports it. info (optional Int32Array, >= 1): [0] datagrams held back for the next call.
 *
 * With UDP_GRO on, one message may hold up to 64 datagrams of one flow (all gso_size long but a
 * shorter last). Message j is received into slot j and, past it, a per-socket 64 KiB scratch
 * area; its datagrams are then moved to consecutive slots. Since a message's slots start at or
 * after its own, moving messages last-first never overwrites one not yet moved. Datagrams beyond
 * the last slot are copied to a per-socket carry area first and handed out by the next call, so
 * nothing is dropped. Fewer messages are asked for when recent ones were coalesced (a running
 * average), which keeps such carry-overs rare.
 */
static napi_value recv_batch(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  int32_t fd, slot_size, count, *out_info;
  uint8_t *slab, *addrs;
  int32_t *lengths;
  size_t slab_len, lengths_len, addrs_len;
  if (!wgts_get_args(env, info, 7, argv) || !wgts_get_int32(env, argv[0], "fd", &fd) ||
      !wgts_get_typed(env, argv[1], "slab", napi_uint8_array, (void **)&slab, &slab_len) ||
      !wgts_get_int32(env, argv[2], "slotSize", &slot_size) ||
      !wgts_get_typed(env, argv[3], "lengths", napi_int32_array, (void **)&lengths, &lengths_len) ||
      !wgts_get_typed(env, argv[4], "addrs", napi_uint8_array, (void **)&addrs, &addrs_len) ||
      !wgts_get_int32(env, argv[5], "count", &count) ||
      !wgts_get_optional_i32(env, argv[6], "info", 1, &out_info))
    return NULL;
  if (slot_size <= 0 || count < 0 || (size_t)count > lengths_len ||
      !wgts_in_bounds(0, (int64_t)count * slot_size, slab_len) ||
      !wgts_in_bounds(0, (int64_t)count * ADDR_RECORD_SIZE, addrs_len)) {
    wgts_range_error(env, "recvBatch: count slots must fit slab, lengths and addrs");
    return NULL;
  }

  udp_state *st = state_get(fd);
  int32_t n = 0;
  if (carried_now(st) > 0) n = deliver_carry(st, slab, slot_size, lengths, addrs, count);

  struct mmsghdr msgs[MMSG_CHUNK];
  struct iovec iov[2 * MMSG_CHUNK];
  sockaddr_any names[MMSG_CHUNK];
  control_buf control[MMSG_CHUNK];
  uint8_t records[MMSG_CHUNK * ADDR_RECORD_SIZE];
  int32_t segments[MMSG_CHUNK], segment_size[MMSG_CHUNK], first_out[MMSG_CHUNK];
  int stale_errors = 0;
  bool gro = st != NULL && st->gro;
  /* Past the caller's slot, room for the rest of a coalesced message (none needed for huge slots). */
  size_t rest_len = gro && slot_size < GRO_MAX_BYTES ? (size_t)(GRO_MAX_BYTES - slot_size) : 0;
  if (rest_len > 0 && !ensure_scratch(st, MMSG_CHUNK)) {
    if (out_info != NULL) out_info[0] = (int32_t)carried_now(st);
    if (n > 0) return wgts_int32(env, n);
    wgts_throw_errno(env, ENOMEM, "recvmmsg", NULL);
    return NULL;
  }
  while (n < count && carried_now(st) == 0) {
    int32_t remaining = count - n;
    int chunk = remaining < MMSG_CHUNK ? remaining : MMSG_CHUNK;
    if (gro) {
      /* Ask for about as many messages as the slots would take at the recent datagrams/message. */
      int32_t expected = (int32_t)(((int64_t)remaining * 16 + st->segments_x16 - 1) / st->segments_x16);
      if (expected < chunk) chunk = expected < 1 ? 1 : expected;
    }
    for (int j = 0; j < chunk; j++) {
      iov[2 * j].iov_base = slab + (size_t)(n + j) * (size_t)slot_size;
      iov[2 * j].iov_len = (size_t)slot_size;
      memset(&msgs[j], 0, sizeof msgs[j]);
      if (rest_len > 0) {
        iov[2 * j + 1].iov_base = st->scratch + (size_t)j * GRO_MAX_BYTES;
        iov[2 * j + 1].iov_len = rest_len;
      }
      msgs[j].msg_hdr.msg_name = &names[j];
      msgs[j].msg_hdr.msg_namelen = sizeof names[j];
      msgs[j].msg_hdr.msg_iov = &iov[2 * j];
      msgs[j].msg_hdr.msg_iovlen = rest_len > 0 ? 2 : 1;
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

    /* Datagrams per message, and where each message's first one goes (relative to slot n). */
    int32_t total = 0, coalesced = 0;
    size_t overflow_bytes = 0;
    for (int j = 0; j < r; j++) {
      const struct msghdr *h = &msgs[j].msg_hdr;
      int32_t size = record_from_msg(records + (size_t)j * ADDR_RECORD_SIZE, h);
      if (st == NULL) size = 0; /* UDP_GRO set behind our back: no room to split, so -1 below */
      int32_t len = (int32_t)msgs[j].msg_len;
      segments[j] = size > 0 && len > size ? (len + size - 1) / size : 1;
      segment_size[j] = segments[j] > 1 ? size : len;
      first_out[j] = total;
      if (segments[j] > 1) coalesced++;
      if (total + segments[j] > remaining) overflow_bytes += (size_t)len;
      total += segments[j];
    }
    if (gro && r > 0) {
      uint32_t now_x16 = (uint32_t)(((int64_t)total * 16) / r);
      st->segments_x16 = (st->segments_x16 + now_x16 + 1) / 2;
      if (st->segments_x16 < 16) st->segments_x16 = 16;
    }
    if (total > remaining && !ensure_carry(st, overflow_bytes)) {
      /* Out of memory for the overflow: the datagrams past the last slot are dropped. */
      total = remaining;
    }

    /* Overflow first (nothing has moved yet): copy datagrams past the last slot to the carry area. */
    if (total > remaining) {
      memcpy(st->carry_records, records, (size_t)r * ADDR_RECORD_SIZE);
      uint32_t offset = 0, kept = 0;
      for (int j = 0; j < r; j++) {
        if (first_out[j] + segments[j] <= remaining) continue;
        const struct msghdr *h = &msgs[j].msg_hdr;
        int32_t len = (int32_t)msgs[j].msg_len, size = segment_size[j];
        const uint8_t *slot = slab + (size_t)(n + j) * (size_t)slot_size;
        const uint8_t *rest = rest_len > 0 ? st->scratch + (size_t)j * GRO_MAX_BYTES : NULL;
        for (int32_t s = 0; s < segments[j]; s++) {
          if (first_out[j] + s < remaining) continue;
          int32_t seg_len = s == segments[j] - 1 ? len - s * size : size;
          carried_datagram *d = &st->carry[kept++];
          d->offset = offset;
          d->record = (uint16_t)j;
          bool truncated = (h->msg_flags & MSG_TRUNC) && s == segments[j] - 1;
          d->length = truncated ? -1 : seg_len; /* deliver_carry judges the fit */
          if (d->length > 0) {
            gather(st->carry_data + offset, slot, (size_t)slot_size, rest, (size_t)s * (size_t)size, (size_t)seg_len);
            offset += (uint32_t)seg_len;
          }
        }
      }
      st->carry_next = 0;
      st->carry_count = kept;
      st->carried_total += kept;
    }

    /* Then last-first into the slots: message j's datagrams go to slots n + first_out[j] + s. */
    for (int j = r - 1; j >= 0; j--) {
      const struct msghdr *h = &msgs[j].msg_hdr;
      int32_t len = (int32_t)msgs[j].msg_len, size = segment_size[j];
      uint8_t *slot = slab + (size_t)(n + j) * (size_t)slot_size;
      const uint8_t *rest = rest_len > 0 ? st->scratch + (size_t)j * GRO_MAX_BYTES : NULL;
      const uint8_t *rec = records + (size_t)j * ADDR_RECORD_SIZE;
      for (int32_t s = segments[j] - 1; s >= 0; s--) {
        int32_t out = first_out[j] + s;
        if (out >= remaining) continue;
        int32_t seg_len = s == segments[j] - 1 ? len - s * size : size;
        bool truncated = (h->msg_flags & MSG_TRUNC) && s == segments[j] - 1;
        bool fits = !truncated && seg_len <= slot_size;
        uint8_t *dst = slab + (size_t)(n + out) * (size_t)slot_size;
        if (fits && dst != slot) gather(dst, slot, (size_t)slot_size, rest, (size_t)s * (size_t)size, (size_t)seg_len);
        lengths[n + out] = fits ? seg_len : -1;
        memcpy(addrs + (size_t)(n + out) * ADDR_RECORD_SIZE, rec, ADDR_RECORD_SIZE);
      }
    }
    if (gro && coalesced > 0) {
      st->gro_messages += (uint64_t)coalesced;
      for (int j = 0; j < r; j++)
        if (segments[j] > 1) st->gro_datagrams += (uint64_t)segments[j];
    }
    n += total < remaining ? total : remaining;
    if (r < chunk) break; /* the queue is empty; skip the extra syscall that would say EAGAIN */
  }
  if (out_info != NULL) out_info[0] = (int32_t)carried_now(st);
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

/* Appends a UDP_SEGMENT cmsg (GSO: the kernel cuts the message into gso_size pieces). */
static void add_segment_cmsg(struct msghdr *h, control_buf *control, uint16_t gso_size) {
  if (h->msg_control == NULL) {
    memset(control->buf, 0, sizeof control->buf);
    h->msg_control = control->buf;
    h->msg_controllen = 0;
  }
  struct cmsghdr *c = (struct cmsghdr *)(control->buf + h->msg_controllen);
  c->cmsg_level = SOL_UDP;
  c->cmsg_type = UDP_SEGMENT;
  c->cmsg_len = CMSG_LEN(sizeof gso_size);
  memcpy(CMSG_DATA(c), &gso_size, sizeof gso_size);
  h->msg_controllen += CMSG_SPACE(sizeof gso_size);
}

/*
 * How many datagrams from i on can go as one GSO message: same address record (destination and
 * source), all as long as the first except a shorter last one, at most MAX_SEGMENTS and below the
 * largest IP datagram.
 */
static int gso_run(const uint8_t *addrs, const int32_t *lengths, int32_t i, int32_t count, int max) {
  const uint8_t *rec = addrs + (size_t)i * ADDR_RECORD_SIZE;
  int32_t size = lengths[i];
  if (size <= 0 || size > UINT16_MAX) return 1;
  int64_t limit = is_v4_mapped(rec + ADDR_REMOTE_IP) ? GSO_MAX_PAYLOAD_V4 : GSO_MAX_PAYLOAD_V6;
  int64_t total = size;
  int k = 1;
  if (max > MAX_SEGMENTS) max = MAX_SEGMENTS;
  while (k < max && i + k < count) {
    int32_t len = lengths[i + k];
    if (len <= 0 || len > size || total + len > limit ||
        memcmp(rec, addrs + (size_t)(i + k) * ADDR_RECORD_SIZE, ADDR_RECORD_SIZE) != 0)
      break;
    total += len;
    k++;
    if (len < size) break; /* a shorter datagram ends the run */
  }
  return k;
}

static bool gso_refusal(int err) { return err == EIO || err == EINVAL || err == ENOPROTOOPT || err == EOPNOTSUPP; }

/*
 * sendBatch(fd, slab, offsets, lengths, addrs, count, stats?) -> n
 * sendmmsg of datagram i = slab[offsets[i] .. + lengths[i]) to the remote half of record i, from
 * its local half when that is non-zero. n counts datagrams consumed (sent, or refused and
 * dropped); n < count only on EAGAIN: resume from n when writable. A source the kernel refuses
 * (the address is gone) is retried without it, and the record's local half [20..40) is
 * zeroed so the caller sees it. stats (optional Int32Array, >= 3): [0] dropped, [1] negative
 * errno of the last drop, [2] sent after dropping their source.
 *
 * GSO: with the socket's offload on, each run of consecutive datagrams to the same record with
 * equal lengths (a shorter last allowed) is one message: an iovec per datagram, straight from the
 * slab, and a UDP_SEGMENT cmsg; the kernel (or the NIC) cuts it into the original datagrams. A
 * message is all-or-nothing, so EAGAIN still stops at a datagram boundary. A GSO message the
 * kernel refuses is sent again as plain datagrams; when the refusal is GSO's own (EIO: the route's
 * device cannot checksum; EINVAL/ENOPROTOOPT/EOPNOTSUPP and the same datagram then goes plainly),
 * GSO is turned off for the socket for good.
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
  udp_state *st = state_get(fd);
  bool gso = st != NULL && st->gso;

  struct mmsghdr msgs[MMSG_CHUNK];
  struct iovec iov[SEND_IOV_MAX];
  sockaddr_any names[MMSG_CHUNK];
  control_buf control[MMSG_CHUNK];
  int segments[MMSG_CHUNK];   /* datagrams in message j */
  bool sourced[MMSG_CHUNK];   /* message j carries a PKTINFO source */
  bool stripped[MMSG_CHUNK];  /* message j goes without its record's (refused) source */
  uint8_t refused_source[16]; /* a source the kernel refused in this call: skip it from now on */
  bool have_refused = false;
  int32_t plain_until = 0;    /* datagrams before this index go one per message (a GSO refusal) */
  int32_t suspect = -1;       /* GSO refused with an ambiguous errno at this datagram: judge by its plain send */
  int32_t n = 0, dropped = 0, last_err = 0, unsourced = 0;
  while (n < count) {
    int chunk = 0, used = 0;
    for (int32_t i = n; i < count && chunk < MMSG_CHUNK && used < SEND_IOV_MAX; chunk++) {
      const uint8_t *rec = addrs + (size_t)i * ADDR_RECORD_SIZE;
      int k = gso && i >= plain_until ? gso_run(addrs, lengths, i, count, SEND_IOV_MAX - used) : 1;
      bool has_source = !is_zero16(rec + ADDR_LOCAL_IP);
      stripped[chunk] = has_source && have_refused && memcmp(rec + ADDR_LOCAL_IP, refused_source, 16) == 0;
      for (int t = 0; t < k; t++) {
        iov[used + t].iov_base = slab + offsets[i + t];
        iov[used + t].iov_len = (size_t)lengths[i + t];
      }
      struct msghdr *h = &msgs[chunk].msg_hdr;
      memset(&msgs[chunk], 0, sizeof msgs[chunk]);
      h->msg_iov = &iov[used];
      h->msg_iovlen = (size_t)k;
      msg_from_record(h, &names[chunk], &control[chunk], domain, rec, has_source && !stripped[chunk]);
      sourced[chunk] = h->msg_control != NULL;
      if (k > 1) add_segment_cmsg(h, &control[chunk], (uint16_t)lengths[i]);
      segments[chunk] = k;
      used += k;
      i += k;
    }
    /* sendmmsg reports an error only for the first message; later failures end the batch early
     * and surface as the first message of the next call. */
    int r, first_gso = chunk;
    if (st != NULL && st->inject_gso_errno != 0)
      for (first_gso = 0; first_gso < chunk && segments[first_gso] == 1; first_gso++) {}
    if (first_gso == 0) {
      /* Test hook: the first GSO message fails as the kernel's would: the call ends before it,
       * and it is reported as the error of the call where it comes first. */
      errno = st->inject_gso_errno;
      st->inject_gso_errno = 0;
      r = -1;
    } else {
      r = sendmmsg(fd, msgs, (unsigned)first_gso, MSG_DONTWAIT);
    }
    if (r > 0) {
      if (suspect == n) {
        /* GSO was refused where the same datagram goes plainly: the kernel cannot do GSO here. */
        gso = st->gso = false;
        st->gso_fallbacks++;
        suspect = -1;
      }
      for (int j = 0; j < r; j++) {
        if (stripped[j]) {
          for (int t = 0; t < segments[j]; t++)
            memset(addrs + (size_t)(n + t) * ADDR_RECORD_SIZE + ADDR_LOCAL_IP, 0, ADDR_RECORD_SIZE - ADDR_LOCAL_IP);
          unsourced += segments[j];
        }
        if (segments[j] > 1) {
          st->gso_messages++;
          st->gso_datagrams += (uint64_t)segments[j];
        }
        n += segments[j];
      }
      continue;
    }
    int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) break; /* nothing of message 0 went: n is exact */
    if (source_refusal(err) && sourced[0]) {
      /* The local address we were told to send from is not (or no longer) ours: send without,
       * and do the same for every other datagram of this call that names it. (The kernel checks
       * the source before GSO, so this is the source's fault even on a GSO message.) */
      memcpy(refused_source, addrs + (size_t)n * ADDR_RECORD_SIZE + ADDR_LOCAL_IP, 16);
      have_refused = true;
      continue;
    }
    if (wgts_fd_is_broken(err)) {
      if (n > 0) break;
      wgts_throw_errno(env, err, "sendmmsg", NULL);
      return NULL;
    }
    if (segments[0] > 1) {
      /* A GSO message refused as a whole: send its datagrams plainly, each judged on its own. */
      plain_until = n + segments[0];
      if (err == EIO) {
        gso = st->gso = false;
        st->gso_fallbacks++;
      } else if (gso_refusal(err)) {
        suspect = n;
      }
      continue;
    }
    /* One datagram refused (unreachable, EMSGSIZE, no route, filtered): drop it and go on. */
    if (suspect == n) suspect = -1; /* the destination, not GSO, was the problem */
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

/* udpOffloads(fd) -> flags: 1 GSO on send, 2 GRO on receive (0 for a socket not from udpOpen). */
static napi_value udp_offloads(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!wgts_get_args(env, info, 1, argv) || !wgts_get_int32(env, argv[0], "fd", &fd)) return NULL;
  udp_state *st = state_get(fd);
  return wgts_int32(env, st == NULL ? 0 : (st->gso ? 1 : 0) | (st->gro ? 2 : 0));
}

static bool set_number(napi_env env, napi_value obj, const char *name, double v) {
  napi_value value;
  return napi_create_double(env, v, &value) == napi_ok && napi_set_named_property(env, obj, name, value) == napi_ok;
}

/* udpOffloadStats(fd) -> { gsoMessages, gsoDatagrams, gsoFallbacks, groMessages, groDatagrams, carried, held } */
static napi_value udp_offload_stats(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!wgts_get_args(env, info, 1, argv) || !wgts_get_int32(env, argv[0], "fd", &fd)) return NULL;
  udp_state *st = state_get(fd);
  udp_state zero;
  memset(&zero, 0, sizeof zero);
  if (st == NULL) st = &zero;
  napi_value out;
  NAPI_CHECK(env, napi_create_object(env, &out));
  if (!set_number(env, out, "gsoMessages", (double)st->gso_messages) ||
      !set_number(env, out, "gsoDatagrams", (double)st->gso_datagrams) ||
      !set_number(env, out, "gsoFallbacks", (double)st->gso_fallbacks) ||
      !set_number(env, out, "groMessages", (double)st->gro_messages) ||
      !set_number(env, out, "groDatagrams", (double)st->gro_datagrams) ||
      !set_number(env, out, "carried", (double)st->carried_total) ||
      !set_number(env, out, "held", (double)carried_now(st == &zero ? NULL : st))) {
    wgts_throw_napi_failure(env, "udpOffloadStats result");
    return NULL;
  }
  return out;
}

/* udpInjectGsoError(fd, errno) — tests only: the next GSO message "fails" with errno, unsent. */
static napi_value udp_inject_gso_error(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd, err;
  if (!wgts_get_args(env, info, 2, argv) || !wgts_get_int32(env, argv[0], "fd", &fd) ||
      !wgts_get_int32(env, argv[1], "errno", &err))
    return NULL;
  udp_state *st = state_get(fd);
  if (st == NULL) {
    wgts_throw_errno(env, EBADF, "udpInjectGsoError", NULL);
    return NULL;
  }
  st->inject_gso_errno = err < 0 ? -err : err;
  return NULL;
}

bool wgts_init_udp(napi_env env, napi_value exports) {
  return wgts_export(env, exports, "udpOpen", udp_open) &&
         wgts_export(env, exports, "udpSetMark", udp_set_mark) &&
         wgts_export(env, exports, "udpGetMark", udp_get_mark) &&
         wgts_export(env, exports, "recvBatch", recv_batch) &&
         wgts_export(env, exports, "sendBatch", send_batch) &&
         wgts_export(env, exports, "udpOffloads", udp_offloads) &&
         wgts_export(env, exports, "udpOffloadStats", udp_offload_stats) &&
         wgts_export(env, exports, "udpInjectGsoError", udp_inject_gso_error);
}
