/*
 * Shared helpers for the wgts native addon: argument checking, errno -> JS Error,
 * and the 40-byte address record layout. The addon never parses packets; it moves
 * bytes between caller-owned typed arrays and file descriptors.
 */
#ifndef WGTS_NATIVE_COMMON_H
#define WGTS_NATIVE_COMMON_H

#include <errno.h>
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Address record (one per packet slot), see src/tun/README.md. */
#define ADDR_RECORD_SIZE 40
#define ADDR_REMOTE_IP 0      /* 16 bytes, IPv4 as ::ffff:a.b.c.d */
#define ADDR_REMOTE_PORT 16   /* 2 bytes, big-endian */
#define ADDR_FAMILY 18        /* 4 or 6 (after unmapping) */
#define ADDR_RESERVED 19      /* always 0 */
#define ADDR_LOCAL_IP 20      /* 16 bytes, same encoding; all zero = unknown / let the kernel pick */
#define ADDR_IFINDEX 36       /* 4 bytes, little-endian */

/* Largest number of messages handed to one recvmmsg/sendmmsg call; longer batches are chunked. */
#define MMSG_CHUNK 64

/* Returns NULL from the calling napi_callback when a napi call failed (an exception is pending). */
#define NAPI_CHECK(env, call)                                                                      \
  do {                                                                                             \
    if ((call) != napi_ok) {                                                                       \
      wgts_throw_napi_failure((env), #call);                                                       \
      return NULL;                                                                                 \
    }                                                                                              \
  } while (0)

/* Throws the pending napi error (if none is pending yet) with the failing call's text. */
void wgts_throw_napi_failure(napi_env env, const char *what);

/*
 * Throws `Error("<syscall> <subject>: <strerror>")` with code ('EPERM'), errno (negative, as
 * Node's own system errors do) and syscall set. subject may be NULL or empty.
 */
void wgts_throw_errno(napi_env env, int err, const char *syscall, const char *subject);

/* Argument helpers: each throws a TypeError/RangeError and returns false on a bad argument. */
bool wgts_get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv);
bool wgts_get_int32(napi_env env, napi_value v, const char *name, int32_t *out);
bool wgts_get_uint32(napi_env env, napi_value v, const char *name, uint32_t *out);
bool wgts_get_bool(napi_env env, napi_value v, const char *name, bool *out);
/* Copies a JS string into buf (NUL-terminated); *len gets its length in bytes. */
bool wgts_get_string(napi_env env, napi_value v, const char *name, char *buf, size_t bufsize,
                     size_t *len);
/* A typed array of the given element type; *data / *count describe its elements. */
bool wgts_get_typed(napi_env env, napi_value v, const char *name, napi_typedarray_type type,
                    void **data, size_t *count);
/* An optional Int32Array (undefined/null -> *data = NULL) of at least min_count elements. */
bool wgts_get_optional_i32(napi_env env, napi_value v, const char *name, size_t min_count,
                           int32_t **data);
bool wgts_range_error(napi_env env, const char *msg);

napi_value wgts_int32(napi_env env, int32_t v);

/*
 * Whether a write/send error means the descriptor itself is unusable (throw) rather than that one
 * packet was refused (skip it, count it, go on). EAGAIN and EINTR are handled before this.
 */
static inline bool wgts_fd_is_broken(int err) {
  switch (err) {
    case EBADF:  /* closed or never opened */
    case EBADFD: /* TUN whose interface was deleted */
    case ENOTSOCK:
    case EFAULT: /* our own buffer bookkeeping is wrong; never skip silently */
    case ENODEV:
    case ENXIO:
      return true;
    default:
      return false;
  }
}

/* Checked byte range [offset, offset + length) inside a buffer of `size` bytes. */
static inline bool wgts_in_bounds(int64_t offset, int64_t length, size_t size) {
  return offset >= 0 && length >= 0 && (uint64_t)(offset + length) <= (uint64_t)size;
}

/* Module parts, each registering its functions on exports. */
bool wgts_init_tun(napi_env env, napi_value exports);
bool wgts_init_udp(napi_env env, napi_value exports);
bool wgts_init_poll(napi_env env, napi_value exports);
bool wgts_export(napi_env env, napi_value exports, const char *name, napi_callback fn);
/* Drops the offload state udpOpen keeps for fd (udp.c); close(fd) calls it first. */
void wgts_udp_forget(int fd);

#endif
