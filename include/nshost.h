/*
 * nshost.h - the public API of libnshost.
 *
 * libnshost runs Lua functions on a pool of worker threads.  Every worker
 * owns one libuv loop and one LuaJIT state; nothing is shared between
 * workers and nothing is stolen.  A job goes to a worker picked at random.
 *
 * This is the only header an embedder includes.  Functions that can fail
 * return 0 or a negative NSHOST_E* code; on failure nothing has changed.
 */
#ifndef NSHOST_H
#define NSHOST_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
# define NSHOST_EXTERN __attribute__((visibility("default")))
#else
# define NSHOST_EXTERN
#endif

struct lua_State;

/* ---- Version ---------------------------------------------------------- */

#define NSHOST_VERSION_MAJOR 0
#define NSHOST_VERSION_MINOR 1
#define NSHOST_VERSION_PATCH 0
#define NSHOST_VERSION_STRING "0.1.0"
#define NSHOST_VERSION_HEX \
  ((NSHOST_VERSION_MAJOR << 16) | (NSHOST_VERSION_MINOR << 8) | \
   NSHOST_VERSION_PATCH)

/* The version the library was built as, e.g. "0.1.0". */
NSHOST_EXTERN const char *nshost_version_string(void);
/* The same as NSHOST_VERSION_HEX of the library's build. */
NSHOST_EXTERN unsigned nshost_version(void);

/* ---- Errors ----------------------------------------------------------- */

/* One list makes the enum, nshost_err_name() and nshost_strerror(). */
#define NSHOST_ERRNO_MAP(X)                                                \
  X(EINVAL, -1001, "invalid argument")                                     \
  X(ENOMEM, -1002, "not enough memory")                                    \
  X(ESHUTDOWN, -1003, "runtime is shut down")                              \
  X(ETIMEDOUT, -1004, "shutdown timed out with jobs still running")        \
  X(ETHREAD, -1005, "cannot start a worker thread")                        \
  X(ELUA, -1006, "Lua error")                                              \
  X(EBUSY, -1007, "resource busy")                                         \
  X(EWRONGTHREAD, -1008, "called from a thread that does not own it")      \
  X(EMALFORMED, -1009, "malformed message")

typedef enum {
#define NSHOST_ERR_ENUM(name, code, text) NSHOST_##name = (code),
  NSHOST_ERRNO_MAP(NSHOST_ERR_ENUM)
#undef NSHOST_ERR_ENUM
  NSHOST_OK = 0
} nshost_errno_t;

/* Short text for an error code; never NULL. */
NSHOST_EXTERN const char *nshost_strerror(int err);
/* The code's name, e.g. "ESHUTDOWN"; never NULL. */
NSHOST_EXTERN const char *nshost_err_name(int err);

/* ---- Configuration ---------------------------------------------------- */

typedef struct nshost_runtime_s nshost_runtime_t;
typedef struct nshost_script_s nshost_script_t;

enum {
  NSHOST_LOG_ERROR = 0,
  NSHOST_LOG_WARN = 1,
  NSHOST_LOG_INFO = 2,
  NSHOST_LOG_DEBUG = 3
};

/* Receives one whole line (no trailing newline).  Called from any thread,
 * possibly several at once; it must be thread-safe. */
typedef void (*nshost_log_cb)(int level, const char *line, void *ud);

/* Runs in every new Lua state (each worker's and each script's) after the
 * standard libraries and `runtime` are open, on the thread that owns the
 * state.  worker_id is 0 for a script state.  Return 0 to go on; anything
 * else is logged and the state is used as it is. */
typedef int (*nshost_setup_cb)(struct lua_State *L, int worker_id,
                               void *ud);

typedef struct {
  int threads;              /* workers; <= 0 means one per CPU */
  const char *name;         /* thread name prefix, default "nshost" */
  int shutdown_timeout_ms;  /* for nshost_runtime_free; default 5000 */
  nshost_log_cb log;        /* NULL: the library prints nothing */
  int log_level;            /* lines above this level are dropped */
  void *log_ud;
  nshost_setup_cb setup;    /* NULL: nothing extra in new states */
  void *setup_ud;
  size_t worker_memory;     /* bytes of Lua memory per worker; 0: no
                               limit.  A job that goes past it fails with
                               "not enough memory"; the worker goes on. */
  int placement;            /* NSHOST_PLACE_RANDOM (the default) or
                               NSHOST_PLACE_P2C */
} nshost_config_t;

/* Where a job goes.  RANDOM: a worker picked uniformly at random, the
 * design's default.  P2C: the less loaded (queued plus running jobs) of
 * two workers picked at random; it costs two atomic updates a job. */
enum { NSHOST_PLACE_RANDOM = 0, NSHOST_PLACE_P2C = 1 };

/* Fills cfg with the defaults. */
NSHOST_EXTERN void nshost_config_init(nshost_config_t *cfg);

/* ---- Runtime ---------------------------------------------------------- */

/* Creates a runtime; no thread starts until its first use.  cfg may be
 * NULL for the defaults; it is copied (name included).  Any thread. */
NSHOST_EXTERN int nshost_runtime_new(nshost_runtime_t **out,
                                     const nshost_config_t *cfg);

/* Starts the workers if they are not running yet.  Safe to call from
 * many threads at once: the workers are created exactly once.  Returns
 * NSHOST_ESHUTDOWN after shutdown, NSHOST_ETHREAD if a thread could not
 * be created (then no worker runs and a later call tries again). */
NSHOST_EXTERN int nshost_runtime_start(nshost_runtime_t *rt);

/* The number of workers the runtime has or will have. */
NSHOST_EXTERN int nshost_runtime_threads(const nshost_runtime_t *rt);

/* How many worker threads this runtime has created so far (a test aid:
 * it is never more than nshost_runtime_threads()). */
NSHOST_EXTERN int nshost_runtime_started_threads(const nshost_runtime_t *rt);

/* How many jobs failed with an error nobody awaited (each one was
 * logged).  The nshost program exits non-zero when this is not 0. */
NSHOST_EXTERN long nshost_runtime_unhandled_errors(const nshost_runtime_t *rt);

/* Stops the runtime: new jobs are refused at once, running jobs get until
 * timeout_ms to finish, then what is left is cancelled and its awaiters
 * get an error.  Joins every worker that stopped and closes its state.
 * Returns 0, or NSHOST_ETIMEDOUT when a worker was stuck in a job that
 * never gave way (it is reported through the log and left running).
 * Calling it again is harmless.  Not from a worker thread. */
NSHOST_EXTERN int nshost_runtime_shutdown(nshost_runtime_t *rt,
                                          int timeout_ms);

/* Shuts down (with the configured timeout) if needed, then frees.  If a
 * worker is stuck in a job (NSHOST_ETIMEDOUT), the runtime's memory is
 * left in place for it, and so are clients and scripts still waiting
 * on it when they are freed. */
NSHOST_EXTERN void nshost_runtime_free(nshost_runtime_t *rt);

/* ---- Scripts ---------------------------------------------------------- */

/* A script state: a Lua state with the standard libraries and `runtime`,
 * owned by the calling thread, with its own libuv loop where the results
 * of its jobs arrive.  Use it only from the thread that created it. */
NSHOST_EXTERN int nshost_script_new(nshost_runtime_t *rt,
                                    nshost_script_t **out);

/* The script's Lua state, to push functions and arguments onto. */
NSHOST_EXTERN struct lua_State *nshost_script_lua(nshost_script_t *s);

/* Runs the function below its nargs arguments on the stack as the main
 * coroutine, so that it may await jobs and sleep, and drives the loop
 * until it has returned and every job of the runtime has finished.
 * Pops the function and arguments.  Returns 0, or NSHOST_ELUA with the
 * error value and then a traceback string pushed (2 values). */
NSHOST_EXTERN int nshost_script_run(nshost_script_t *s, int nargs);

/* Stops the script as a signal would: the running or waiting main
 * task ends with the error "interrupted by signal N", and
 * nshost_script_run returns.  Async-signal-safe, and safe from any
 * thread.  A loop compiled by the JIT is not interrupted.  The state
 * stays interrupted: later runs end the same way at once. */
NSHOST_EXTERN void nshost_script_interrupt(nshost_script_t *s, int signum);

/* The signal passed to nshost_script_interrupt, or 0. */
NSHOST_EXTERN int nshost_script_interrupted(nshost_script_t *s);

/* Closes the script's state (finalizers run) and frees it. */
NSHOST_EXTERN void nshost_script_free(nshost_script_t *s);

/* ---- Work from C -------------------------------------------------------- */

/* Arguments for a job, built in order: nil, booleans, numbers, strings
 * and tables.  Inside a table, values alternate key, value.  Any thread,
 * one builder per thread at a time. */
typedef struct nshost_args_s nshost_args_t;

NSHOST_EXTERN nshost_args_t *nshost_args_new(void);  /* NULL: no memory */
NSHOST_EXTERN int nshost_args_nil(nshost_args_t *a);
NSHOST_EXTERN int nshost_args_boolean(nshost_args_t *a, int b);
NSHOST_EXTERN int nshost_args_number(nshost_args_t *a, double x);
NSHOST_EXTERN int nshost_args_string(nshost_args_t *a, const char *s,
                                     size_t len);
/* Opens a table; until the matching end, values go into it as key,
 * value, key, value.  NSHOST_EINVAL for an end without a start, a key
 * without its value, or a nil key. */
NSHOST_EXTERN int nshost_args_table(nshost_args_t *a);
NSHOST_EXTERN int nshost_args_end(nshost_args_t *a);
/* Forgets everything added, for building the next call's arguments. */
NSHOST_EXTERN void nshost_args_clear(nshost_args_t *a);
NSHOST_EXTERN void nshost_args_free(nshost_args_t *a);

/* A job's outcome, valid only during the callback. */
typedef struct nshost_result_s nshost_result_t;

enum {
  NSHOST_TNIL, NSHOST_TBOOLEAN, NSHOST_TNUMBER, NSHOST_TSTRING,
  NSHOST_TTABLE, NSHOST_TOTHER
};

/* 0 if the job returned; NSHOST_ELUA if it raised (nshost_result_error
 * has the message and traceback); NSHOST_ESHUTDOWN if it was cancelled;
 * NSHOST_EMALFORMED if its results could not be read (no memory). */
NSHOST_EXTERN int nshost_result_status(const nshost_result_t *r);
NSHOST_EXTERN const char *nshost_result_error(const nshost_result_t *r);
NSHOST_EXTERN int nshost_result_worker(const nshost_result_t *r);
/* The returned values: how many, and each one's type and value (index
 * from 0).  A table's contents are read with nshost_result_push. */
NSHOST_EXTERN int nshost_result_count(const nshost_result_t *r);
NSHOST_EXTERN int nshost_result_type(const nshost_result_t *r, int i);
NSHOST_EXTERN int nshost_result_boolean(const nshost_result_t *r, int i);
NSHOST_EXTERN double nshost_result_number(const nshost_result_t *r, int i);
/* NULL unless value i is a string (or len is NULL); *len gets its
 * length.  The bytes are not followed by a NUL: use the length (a Lua
 * string may hold zero bytes too).  Valid while r is. */
NSHOST_EXTERN const char *nshost_result_string(const nshost_result_t *r,
                                               int i, size_t *len);
/* Pushes every returned value onto L (a state of the embedder's; a
 * script's state works too).  Returns how many, or a negative code. */
NSHOST_EXTERN int nshost_result_push(const nshost_result_t *r,
                                     struct lua_State *L);

typedef void (*nshost_result_cb)(const nshost_result_t *r, void *ud);

/* A client: where the outcomes of jobs submitted from C arrive.  With a
 * loop, callbacks run on that loop (the client adds one handle to it,
 * which keeps it alive until the client is freed); without one (NULL),
 * they run inside nshost_client_poll on the thread that created the
 * client.  Use a client from that one thread only. */
typedef struct nshost_client_s nshost_client_t;
struct uv_loop_s;

NSHOST_EXTERN int nshost_client_new(nshost_runtime_t *rt,
                                    struct uv_loop_s *loop,
                                    nshost_client_t **out);

/* Runs the callbacks of outcomes that have arrived; with timeout_ms > 0
 * first waits up to that long for one.  Returns how many ran, or
 * NSHOST_EINVAL for a client with a loop, NSHOST_EWRONGTHREAD from
 * another thread. */
NSHOST_EXTERN int nshost_client_poll(nshost_client_t *c, int timeout_ms);

/* Jobs submitted and not yet called back. */
NSHOST_EXTERN long nshost_client_pending(const nshost_client_t *c);

/* Runs fn(args...) on a worker: fn is "module.function" (the module is
 * required in the worker) or a global function's name.  worker is 1..T,
 * or 0 for a random one.  cb may be NULL (fire and forget: an error is
 * logged).  args may be NULL.  On failure cb never runs. */
NSHOST_EXTERN int nshost_call(nshost_client_t *c, int worker,
                              const char *fn, const nshost_args_t *args,
                              nshost_result_cb cb, void *ud);

/* Like nshost_call for a chunk of Lua source: the chunk runs with the
 * arguments as `...`, and its return values are the results.  Each
 * worker keeps the chunks it has compiled (up to 256). */
NSHOST_EXTERN int nshost_eval(nshost_client_t *c, int worker,
                              const char *chunk, const nshost_args_t *args,
                              nshost_result_cb cb, void *ud);

/* Waits for the client's jobs (polling, or turning its loop), then
 * frees it.  Free clients before their runtime. */
NSHOST_EXTERN void nshost_client_free(nshost_client_t *c);

#ifdef __cplusplus
}
#endif
#endif /* NSHOST_H */
