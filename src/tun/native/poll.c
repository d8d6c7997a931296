/*
 * Readiness of any fd (TUN, UDP socket) on Node's own event loop through uv_poll, so reads and
 * writes happen on the JS thread exactly when the kernel has work, with no thread or timer.
 * Level-triggered: the callback repeats every loop iteration while the fd stays ready, so JS
 * drains with readBatch/recvBatch until 0 (or pauses interest) before returning.
 *
 * Lifetime: a poll keeps a strong reference to its own handle object while started, so it cannot
 * be collected while the kernel may still report on it. Memory is freed once both libuv has
 * closed the uv_poll_t and the JS handle object is gone, whichever happens last.
 */
#include "common.h"

#include <stdlib.h>
#include <uv.h>

typedef struct {
  uv_poll_t handle; /* first member: handle.data also points back here */
  napi_env env;
  napi_ref callback;
  napi_ref self;
  napi_async_context async;
  bool stopped;   /* pollStop called (or the environment is being torn down) */
  bool closed;    /* libuv's close callback ran */
  bool finalized; /* the JS handle object was collected */
} wgts_poll;

static void on_close(uv_handle_t *handle) {
  wgts_poll *p = handle->data;
  p->closed = true;
  if (p->finalized) free(p);
}

/* Stops and closes the uv handle without touching JS (safe from cleanup hooks and finalizers). */
static void stop_uv(wgts_poll *p) {
  p->stopped = true;
  uv_poll_stop(&p->handle);
  uv_close((uv_handle_t *)&p->handle, on_close);
}

/* Environment teardown (process or worker exit) with the poll still started. */
static void on_env_cleanup(void *arg) {
  wgts_poll *p = arg;
  if (!p->stopped) stop_uv(p);
}

static void on_finalize(napi_env env, void *data, void *hint) {
  wgts_poll *p = data;
  p->finalized = true;
  if (!p->stopped) {
    /* Only reachable during environment teardown: a started poll holds its own handle. */
    napi_remove_env_cleanup_hook(env, on_env_cleanup, p);
    stop_uv(p);
    return;
  }
  if (p->closed) free(p);
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  wgts_poll *p = handle->data;
  if (p->stopped) return;
  napi_env env = p->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;

  napi_value callback, global, argv[2], exception;
  if (napi_get_reference_value(env, p->callback, &callback) == napi_ok && callback != NULL &&
      napi_get_global(env, &global) == napi_ok &&
      napi_create_int32(env, status < 0 ? 0 : events, &argv[0]) == napi_ok &&
      napi_create_int32(env, status, &argv[1]) == napi_ok) {
    /* make_callback (not call_function): runs process.nextTick and microtasks afterwards and
     * keeps async_hooks context, as Node does for its own I/O callbacks. */
    napi_status s = napi_make_callback(env, p->async, global, callback, 2, argv, NULL);
    if (s == napi_pending_exception && napi_get_and_clear_last_exception(env, &exception) == napi_ok)
      napi_fatal_exception(env, exception); /* -> process 'uncaughtException' */
  }
  napi_close_handle_scope(env, scope);
}

static int uv_events(int32_t events) {
  return ((events & 1) ? UV_READABLE : 0) | ((events & 2) ? UV_WRITABLE : 0);
}

static bool get_poll(napi_env env, napi_value v, wgts_poll **out) {
  napi_valuetype t;
  void *data = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external ||
      napi_get_value_external(env, v, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "The \"handle\" argument must be a poll handle");
    return false;
  }
  *out = data;
  return true;
}

/* (Re)arms interest; 0 stops watching (the handle then no longer keeps the loop alive). */
static int apply_events(wgts_poll *p, int32_t events) {
  int uvev = uv_events(events);
  return uvev == 0 ? uv_poll_stop(&p->handle) : uv_poll_start(&p->handle, uvev, on_poll);
}

/* pollStart(fd, events 1=readable|2=writable, callback(events, status)) -> handle
 * status is 0, or a negative errno when polling failed (libuv then stops the poll). */
static napi_value poll_start(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd, events;
  if (!wgts_get_args(env, info, 3, argv) || !wgts_get_int32(env, argv[0], "fd", &fd) ||
      !wgts_get_int32(env, argv[1], "events", &events))
    return NULL;
  napi_valuetype t;
  if (napi_typeof(env, argv[2], &t) != napi_ok || t != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "The \"callback\" argument must be a function");
    return NULL;
  }
  uv_loop_t *loop;
  NAPI_CHECK(env, napi_get_uv_event_loop(env, &loop));

  wgts_poll *p = calloc(1, sizeof *p);
  if (p == NULL) {
    wgts_throw_errno(env, ENOMEM, "pollStart", NULL);
    return NULL;
  }
  p->env = env;
  p->handle.data = p;
  int rc = uv_poll_init(loop, &p->handle, fd);
  if (rc < 0) {
    free(p);
    wgts_throw_errno(env, -rc, "uv_poll_init", NULL);
    return NULL;
  }

  napi_value handle, name;
  if (napi_create_reference(env, argv[2], 1, &p->callback) != napi_ok ||
      napi_create_string_utf8(env, "wgts:poll", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &p->async) != napi_ok ||
      napi_create_external(env, p, on_finalize, NULL, &handle) != napi_ok) {
    /* Nothing in JS owns p yet: let the close callback free it. */
    p->finalized = true;
    stop_uv(p);
    wgts_throw_napi_failure(env, "pollStart");
    return NULL;
  }
  if (napi_create_reference(env, handle, 1, &p->self) != napi_ok ||
      napi_add_env_cleanup_hook(env, on_env_cleanup, p) != napi_ok) {
    stop_uv(p); /* the finalizer frees p once the handle is collected */
    wgts_throw_napi_failure(env, "pollStart");
    return NULL;
  }
  rc = apply_events(p, events);
  if (rc < 0) {
    napi_remove_env_cleanup_hook(env, on_env_cleanup, p);
    napi_delete_reference(env, p->self);
    stop_uv(p);
    wgts_throw_errno(env, -rc, "uv_poll_start", NULL);
    return NULL;
  }
  return handle;
}

/* pollUpdate(handle, events): change interest; 0 pauses. */
static napi_value poll_update(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  wgts_poll *p;
  int32_t events;
  if (!wgts_get_args(env, info, 2, argv) || !get_poll(env, argv[0], &p) ||
      !wgts_get_int32(env, argv[1], "events", &events))
    return NULL;
  if (p->stopped) {
    wgts_throw_errno(env, EBADF, "pollUpdate", "(stopped)");
    return NULL;
  }
  int rc = apply_events(p, events);
  if (rc < 0) wgts_throw_errno(env, -rc, "uv_poll_start", NULL);
  return NULL;
}

/* pollRef(handle, ref): whether this poll keeps the event loop (and so the process) alive. */
static napi_value poll_ref(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  wgts_poll *p;
  bool ref;
  if (!wgts_get_args(env, info, 2, argv) || !get_poll(env, argv[0], &p) || !wgts_get_bool(env, argv[1], "ref", &ref))
    return NULL;
  if (p->stopped) return NULL;
  if (ref)
    uv_ref((uv_handle_t *)&p->handle);
  else
    uv_unref((uv_handle_t *)&p->handle);
  return NULL;
}

/* pollStop(handle): idempotent. Call it before close(fd). */
static napi_value poll_stop(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  wgts_poll *p;
  if (!wgts_get_args(env, info, 1, argv) || !get_poll(env, argv[0], &p)) return NULL;
  if (p->stopped) return NULL;
  napi_remove_env_cleanup_hook(env, on_env_cleanup, p);
  napi_delete_reference(env, p->callback);
  napi_async_destroy(env, p->async);
  stop_uv(p);
  /* Last: dropping the self reference lets the handle (and then p) be collected. */
  napi_delete_reference(env, p->self);
  return NULL;
}

bool wgts_init_poll(napi_env env, napi_value exports) {
  return wgts_export(env, exports, "pollStart", poll_start) &&
         wgts_export(env, exports, "pollUpdate", poll_update) &&
         wgts_export(env, exports, "pollRef", poll_ref) && wgts_export(env, exports, "pollStop", poll_stop);
}
