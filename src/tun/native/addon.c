/*
 * wgts native addon: entry point and shared helpers.
 *
 * Only what Node cannot do lives here (TUN ioctls, recvmmsg/sendmmsg with PKTINFO and SO_MARK,
 * readiness of arbitrary fds through uv_poll). Every function works on caller-owned typed arrays
 * and allocates nothing per packet; errors become JS Errors shaped like Node's system errors.
 */
#include "common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* ---- errors ---------------------------------------------------------------------------------- */

static const char *errno_name(int err) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char *name = strerrorname_np(err);
  if (name != NULL) return name;
#else
  switch (err) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case ENXIO: return "ENXIO";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case ENODEV: return "ENODEV";
    case EINVAL: return "EINVAL";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOTTY: return "ENOTTY";
    case ENOSPC: return "ENOSPC";
    case EBADFD: return "EBADFD";
    case ENOTSOCK: return "ENOTSOCK";
    case EDESTADDRREQ: return "EDESTADDRREQ";
    case EMSGSIZE: return "EMSGSIZE";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EADDRINUSE: return "EADDRINUSE";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case ENETDOWN: return "ENETDOWN";
    case ENETUNREACH: return "ENETUNREACH";
    case ENOBUFS: return "ENOBUFS";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    default: break;
  }
#endif
  return "EUNKNOWN";
}

void wgts_throw_napi_failure(napi_env env, const char *what) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return;
  const napi_extended_error_info *info = NULL;
  const char *detail = "napi call failed";
  if (napi_get_last_error_info(env, &info) == napi_ok && info != NULL && info->error_message)
    detail = info->error_message;
  char msg[256];
  snprintf(msg, sizeof msg, "wgts native: %s: %s", what, detail);
  napi_throw_error(env, NULL, msg);
}

void wgts_throw_errno(napi_env env, int err, const char *syscall, const char *subject) {
  char msg[256];
  if (subject != NULL && subject[0] != '\0')
    snprintf(msg, sizeof msg, "%s %s: %s", syscall, subject, strerror(err));
  else
    snprintf(msg, sizeof msg, "%s: %s", syscall, strerror(err));

  napi_value message, code, error, errno_value, syscall_value;
  if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message) != napi_ok ||
      napi_create_string_utf8(env, errno_name(err), NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_error(env, code, message, &error) != napi_ok ||
      napi_create_int32(env, -err, &errno_value) != napi_ok ||
      napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_value) != napi_ok ||
      napi_set_named_property(env, error, "errno", errno_value) != napi_ok ||
      napi_set_named_property(env, error, "syscall", syscall_value) != napi_ok) {
    wgts_throw_napi_failure(env, "creating an Error");
    return;
  }
  napi_throw(env, error);
}

bool wgts_range_error(napi_env env, const char *msg) {
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return false;
}

static bool type_error(napi_env env, const char *name, const char *expected) {
  char msg[160];
  snprintf(msg, sizeof msg, "The \"%s\" argument must be %s", name, expected);
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return false;
}

/* ---- arguments ------------------------------------------------------------------------------- */

bool wgts_get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    wgts_throw_napi_failure(env, "napi_get_cb_info");
    return false;
  }
  /* napi_get_cb_info fills missing trailing arguments with undefined; the getters reject them. */
  return true;
}

static bool get_number(napi_env env, napi_value v, const char *name, double *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) return type_error(env, name, "a number");
  if (napi_get_value_double(env, v, out) != napi_ok) return type_error(env, name, "a number");
  return true;
}

bool wgts_get_int32(napi_env env, napi_value v, const char *name, int32_t *out) {
  double d;
  if (!get_number(env, v, name, &d)) return false;
  if (!(d >= -2147483648.0 && d <= 2147483647.0) || d != (double)(int32_t)d) {
    char msg[160];
    snprintf(msg, sizeof msg, "The \"%s\" argument must be a 32-bit integer", name);
    return wgts_range_error(env, msg);
  }
  *out = (int32_t)d;
  return true;
}

bool wgts_get_uint32(napi_env env, napi_value v, const char *name, uint32_t *out) {
  double d;
  if (!get_number(env, v, name, &d)) return false;
  if (!(d >= 0 && d <= 4294967295.0) || d != (double)(uint32_t)d) {
    char msg[160];
    snprintf(msg, sizeof msg, "The \"%s\" argument must be an unsigned 32-bit integer", name);
    return wgts_range_error(env, msg);
  }
  *out = (uint32_t)d;
  return true;
}

bool wgts_get_bool(napi_env env, napi_value v, const char *name, bool *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_boolean) return type_error(env, name, "a boolean");
  if (napi_get_value_bool(env, v, out) != napi_ok) return type_error(env, name, "a boolean");
  return true;
}

bool wgts_get_string(napi_env env, napi_value v, const char *name, char *buf, size_t bufsize,
                     size_t *len) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string) return type_error(env, name, "a string");
  size_t full = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &full) != napi_ok) return type_error(env, name, "a string");
  if (full >= bufsize) {
    char msg[160];
    snprintf(msg, sizeof msg, "The \"%s\" argument is longer than %zu bytes", name, bufsize - 1);
    return wgts_range_error(env, msg);
  }
  if (napi_get_value_string_utf8(env, v, buf, bufsize, len) != napi_ok) return type_error(env, name, "a string");
  return true;
}

static const char *typed_name(napi_typedarray_type type) {
  switch (type) {
    case napi_uint8_array: return "a Uint8Array";
    case napi_int32_array: return "an Int32Array";
    default: return "a typed array";
  }
}

bool wgts_get_typed(napi_env env, napi_value v, const char *name, napi_typedarray_type type,
                    void **data, size_t *count) {
  bool is_typed = false;
  if (napi_is_typedarray(env, v, &is_typed) != napi_ok || !is_typed)
    return type_error(env, name, typed_name(type));
  napi_typedarray_type actual;
  size_t length = 0;
  void *ptr = NULL;
  if (napi_get_typedarray_info(env, v, &actual, &length, &ptr, NULL, NULL) != napi_ok || actual != type)
    return type_error(env, name, typed_name(type));
  *data = ptr;
  *count = length;
  return true;
}

bool wgts_get_optional_i32(napi_env env, napi_value v, const char *name, size_t min_count,
                           int32_t **data) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return type_error(env, name, "an Int32Array");
  if (t == napi_undefined || t == napi_null) {
    *data = NULL;
    return true;
  }
  void *ptr;
  size_t count;
  if (!wgts_get_typed(env, v, name, napi_int32_array, &ptr, &count)) return false;
  if (count < min_count) {
    char msg[160];
    snprintf(msg, sizeof msg, "The \"%s\" argument needs at least %zu elements", name, min_count);
    return wgts_range_error(env, msg);
  }
  *data = ptr;
  return true;
}

napi_value wgts_int32(napi_env env, int32_t v) {
  napi_value out;
  NAPI_CHECK(env, napi_create_int32(env, v, &out));
  return out;
}

bool wgts_export(napi_env env, napi_value exports, const char *name, napi_callback fn) {
  napi_value f;
  if (napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f) != napi_ok ||
      napi_set_named_property(env, exports, name, f) != napi_ok) {
    wgts_throw_napi_failure(env, name);
    return false;
  }
  return true;
}

/* ---- close(fd) -------------------------------------------------------------------------------- */

/* close(fd): stop any poll on fd first (pollStop), or libuv keeps watching a recycled number. */
static napi_value close_fd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!wgts_get_args(env, info, 1, argv) || !wgts_get_int32(env, argv[0], "fd", &fd)) return NULL;
  /* Before close: once closed, another thread's udpOpen may get the same number. */
  wgts_udp_forget(fd);
  /* Linux releases the descriptor even when close() reports EINTR, so never retry it. */
  if (close(fd) < 0 && errno != EINTR) {
    wgts_throw_errno(env, errno, "close", NULL);
    return NULL;
  }
  return NULL;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  if (!wgts_export(env, exports, "close", close_fd)) return NULL;
  if (!wgts_init_tun(env, exports)) return NULL;
  if (!wgts_init_udp(env, exports)) return NULL;
  if (!wgts_init_poll(env, exports)) return NULL;
  return exports;
}
