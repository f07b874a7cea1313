/*
 * nsh.h - what the files of libnshost share.  Never installed.
 */
#ifndef NSH_H
#define NSH_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>
#include <lua.h>

#include "nshost.h"

/* ---- Messages and the inbox ------------------------------------------ */

enum nsh_msg_kind {
  NSH_MSG_JOB,       /* run data (function, args) as a job */
  NSH_MSG_RESULT     /* the job finished: data holds its outcome */
};

enum nsh_job_status {
  NSH_JOB_PENDING,
  NSH_JOB_OK,        /* data: the results */
  NSH_JOB_FAILED,    /* data: error value, traceback string */
  NSH_JOB_CANCELLED  /* the runtime shut down first; no data */
};

struct nsh_job;

/* One allocation: header and payload.  Moves between threads whole. */
struct nsh_msg {
  struct nsh_msg *next;
  int kind;
  int status;               /* results: an nsh_job_status */
  int worker;               /* results: the worker that ran the job */
  struct nsh_job *job;
  size_t len;
  size_t cap;               /* bytes of data allocated */
  char data[];
};

/* Multi-producer, single-consumer.  Producers append under the lock and
 * wake the consumer only when the list was empty, so a burst of pushes
 * costs one wake-up; the consumer takes the whole list at once.  A
 * consumer that says when it is about to sleep (nsh_inbox_sleep) is
 * woken only then: while it works, pushes cost no system call. */
struct nsh_inbox;
typedef void (*nsh_inbox_cb)(struct nsh_inbox *ib);

struct nsh_inbox {
  uv_mutex_t lock;
  struct nsh_msg *head;
  struct nsh_msg *tail;
  int closed;
  int watched;              /* the consumer says when it sleeps */
  atomic_int sleeping;      /* it is about to wait, or waiting */
  int fd;                   /* an eventfd: readable means "look" */
  uv_poll_t poll;
  nsh_inbox_cb cb;          /* runs on the loop when woken */
  void *data;
};

struct nsh_msg *nsh_msg_new(int kind, size_t len);

/* Job messages that have served, sent back by the workers to the context
 * that made them, for its next spawns.  The spawning thread would
 * otherwise take fresh memory for every job while the workers free the
 * old, and an allocator does both slowly across threads.  Any thread
 * gives; only the owner takes. */
struct nsh_msgpool {
  _Atomic(struct nsh_msg *) given;  /* a stack, pushed by any thread */
  atomic_int ngiven;
  struct nsh_msg *own;              /* taken from given, owner only */
};

/* A message of len bytes, from the pool when one there fits. */
struct nsh_msg *nsh_msgpool_take(struct nsh_msgpool *p, int kind,
                                 size_t len);
/* Gives m back, or frees it when it is large or the pool is full. */
void nsh_msgpool_give(struct nsh_msgpool *p, struct nsh_msg *m);
/* Frees what the pool holds; no thread may give any more (a worker's
 * pool goes with its inbox, once every worker has stopped). */
void nsh_msgpool_free(struct nsh_msgpool *p);

int nsh_inbox_init(struct nsh_inbox *ib, uv_loop_t *loop, nsh_inbox_cb cb,
                   void *data);
/* Wakes the consumer; async-signal-safe.  Callers that may race with
 * closing use nsh_inbox_wake instead. */
void nsh_inbox_signal(struct nsh_inbox *ib);
/* 0, or -1 if the inbox is closed (the message stays the caller's). */
int nsh_inbox_push(struct nsh_inbox *ib, struct nsh_msg *m);
/* Takes every queued message, oldest first; NULL when empty. */
struct nsh_msg *nsh_inbox_take(struct nsh_inbox *ib);
/* The consumer is about to wait for a wake-up: from now on, pushes wake
 * it.  Returns 1 (and stays awake) if messages are already queued. */
int nsh_inbox_sleep(struct nsh_inbox *ib);
/* The consumer is awake again: pushes need not wake it. */
void nsh_inbox_awake(struct nsh_inbox *ib);
/* Refuses later pushes and returns what was still queued. */
struct nsh_msg *nsh_inbox_close(struct nsh_inbox *ib);
void nsh_inbox_wake(struct nsh_inbox *ib);
/* Frees the lock and the eventfd, once the poll handle is closed. */
void nsh_inbox_destroy(struct nsh_inbox *ib);

/* ---- Contexts: one loop, one Lua state, one thread ------------------- */

struct nsh_task;
struct nsh_ctx;
struct nsh_fncache;

/* Where a job's function goes back to when the job is over: an entry
 * of the worker's function cache (codec.c); slot -1 for nowhere. */
struct nsh_poolkey {
  int slot;
  uint32_t serial;
};

/* A job as its spawner sees it.  Owned by the spawner's context: only
 * that thread reads or writes it, except for refs. */
struct nsh_job {
  atomic_int refs;          /* the Lua handle, the message in flight */
  struct nsh_ctx *origin;
  int status;
  int awaited;              /* the outcome was seen by someone */
  int has_handle;
  struct nsh_msg *result;   /* NSH_MSG_RESULT, kept for await */
  int worker;               /* where it was placed, 1..T */
  struct nsh_task *waiters; /* tasks parked until it finishes */
  struct nsh_job *fprev, *fnext;  /* failed, unseen, handle alive */
  int listed;
  nshost_result_cb cb;      /* jobs from C: gets the outcome */
  void *cb_ud;
  char site[64];            /* where it was spawned: a short source, */
  int line;                 /* and a line, for reports */
};

/* A coroutine the scheduler runs: the main script or a job. */
struct nsh_task {
  lua_State *co;
  int ref;                  /* anchors co in the context's task table */
  struct nsh_job *job;      /* the job it runs (worker side), or NULL */
  struct nsh_msg *msg;      /* the job's message, reused for the result:
                             * then the spawner's thread both allocates
                             * and frees it, which malloc likes best */
  int waiting;              /* parked: on a job or a timer */
  int started;              /* resumed at least once */
  int status;               /* how the coroutine ended */
  int fn_ref;               /* in the task table: a poolable job fn */
  struct nsh_poolkey pool;  /* and where it goes back to */
  int abandoned;            /* a script's main task left by a signal */
  struct nsh_task *wnext;   /* next waiter on the same job */
  struct nsh_task *prev, *next;  /* a worker's live job tasks */
};

struct nsh_buf {
  char *data;
  size_t len;
  size_t cap;
};

/* The encoder's identity map (codec.c). */
struct nsh_idslot {
  const void *key;
  uint64_t val;
  uint32_t gen;             /* the message it belongs to */
};

struct nsh_idmap {
  struct nsh_idslot *slot;
  size_t cap, n;
  uint32_t gen;
};

struct nsh_ctx {
  nshost_runtime_t *rt;
  int id;                   /* 0: a script state, 1..T: a worker */
  uv_loop_t loop;
  lua_State *L;
  struct nsh_inbox inbox;
  struct nsh_msgpool msgs;  /* job messages back from the workers */
  uv_prepare_t before_poll; /* tells the inbox when the loop will wait */
  int may_wait;             /* this turn of the loop may wait */
  struct nsh_task *current; /* the task running now, if any */
  struct nsh_task **ready;  /* ring of tasks to resume */
  size_t rhead, rlen, rcap;
  struct nsh_msg *jobs;     /* workers: jobs not started yet, FIFO */
  struct nsh_msg *jobs_tail;
  struct nsh_task *tasks;   /* job tasks alive (workers) */
  struct nsh_task *spare;   /* finished tasks kept for reuse */
  int nspare;
  struct nsh_job *failed;   /* failures nobody has seen yet */
  int ntasks;
  struct nsh_buf scratch;   /* the encoder's buffer, reused */
  struct nsh_idmap ids;     /* the encoder's identity map, reused */
  struct nsh_idmap std;     /* the standard values: a set for the encoder */
  int objs_left;            /* encoder: objects an error left anchored */
  int encoding;             /* an encoding is under way (or was cut
                             * short by a Lua error: see run_ready) */
  int dec_top;              /* ids in use by decodes under way (codec.c) */
  int tasks_ref;            /* registry: task table (coroutines) */
  int runner_ref;           /* registry: runs a job under xpcall */
  int fail_ref;             /* workers: describes a failed job */
  int start_ref, done_ref;  /* workers: start and finish a job */
  int collect_ref;          /* workers: a protected full collection */
  int paths_version;        /* workers: package paths last taken */
  int children_ref;         /* registry: has a function inner ones? */
  int cdata_kind_ref;       /* registry: 1 int64, 2 uint64, else 0 */
  int new_int64_ref;        /* registry: a new 64-bit integer cdata */
  int put_numbers_ref;      /* registry: the codec's loops in Lua */
  int get_numbers_ref;
  struct nsh_poolkey decoded_pool;  /* the last decode's job fn's pool */
  struct nsh_fncache *fns;  /* functions loaded, per bytecode (codec.c) */
  int main_done;            /* scripts: the main task has ended */
  long inflight;            /* jobs spawned here, outcome not back */
  atomic_int stopping;      /* workers: finish, then leave the loop */
  atomic_int cancel;        /* workers: past the deadline */
  atomic_int exited;        /* workers: out of the loop */
  atomic_int interrupted;   /* scripts: the signal that stopped it */
  _Atomic(lua_State *) hook_L;          /* L, for other threads */
  atomic_int hook_users;    /* threads setting a hook on hook_L now */
  _Atomic(struct nsh_job *) running;    /* workers: job running now */
  atomic_int fin_wait;      /* workers: awaiting, inside a finalizer, a
                             * job on this worker (its id), else 0 */
  long finished;            /* workers: jobs done, not yet told to p2c */
  int wait_depth;           /* waits in place on the C stack now */
  int tabs[5];              /* registry refs of the codec's tables */
  size_t mem_used;          /* bytes in L, when there is a limit */
  size_t mem_limit;
  uv_thread_t thread;
};

/* 0, or a negative libuv error code (an eventfd or a loop it could not
 * make: too many open files, most often). */
int nsh_ctx_init(struct nsh_ctx *c, nshost_runtime_t *rt, int id);
/* Creates c->L on the calling thread; runs the embedder's setup. */
int nsh_ctx_open_lua(struct nsh_ctx *c);
void nsh_ctx_close(struct nsh_ctx *c);
/* Resumes every ready task once (and those they make ready). */
void nsh_ctx_run_ready(struct nsh_ctx *c);
/* One turn of the loop: waits for an event unless tasks are ready. */
void nsh_ctx_turn(struct nsh_ctx *c);
/* One turn that waits for an event even if tasks are ready. */
void nsh_ctx_turn_waiting(struct nsh_ctx *c);
/* Creates a task for the function and nargs args on c->L's top;
 * pops them.  NULL if out of memory. */
struct nsh_task *nsh_task_new(struct nsh_ctx *c, int nargs);
void nsh_task_ready(struct nsh_ctx *c, struct nsh_task *t);
/* Runs t until it yields or ends.  Never from a libuv callback. */
void nsh_task_resume(struct nsh_ctx *c, struct nsh_task *t);
/* Called when a task's coroutine returns or fails; the worker and the
 * script each have their own. */
void nsh_task_done(struct nsh_ctx *c, struct nsh_task *t, int status);
/* Frees t and unanchors its coroutine. */
void nsh_task_free(struct nsh_ctx *c, struct nsh_task *t);
/* The context of a Lua state created by nsh_ctx_open_lua. */
struct nsh_ctx *nsh_ctx_of(lua_State *L);

/* Makes the Lua code running in c raise msg soon (a count hook).
 * Callable from another thread or a signal handler.  Code compiled by
 * the JIT does not call hooks: a compiled loop runs on. */
void nsh_ctx_interrupt(struct nsh_ctx *c);
/* Removes that hook; on c's own thread. */
void nsh_ctx_uninterrupt(struct nsh_ctx *c);

/* The worker this thread runs, or NULL (a C thread-local). */
struct nsh_ctx *nsh_worker_self(void);
/* The context running on this thread now (a worker or a script). */
struct nsh_ctx *nsh_ctx_self(void);
/* Makes c this thread's context; returns the one before. */
struct nsh_ctx *nsh_ctx_enter(struct nsh_ctx *c);

/* ---- Jobs ------------------------------------------------------------ */

void nsh_job_release(struct nsh_job *j);
/* Handles an arrived result on the origin's thread. */
void nsh_job_finish(struct nsh_ctx *c, struct nsh_msg *m);
/* Sends a job's outcome home, or drops it if home has closed. */
void nsh_job_reply(nshost_runtime_t *rt, struct nsh_msg *m);
/* Logs a failed job whose outcome nobody saw. */
void nsh_job_report(struct nsh_ctx *c, struct nsh_job *j);
/* The outcome of j has been seen: it need not be reported. */
void nsh_job_seen(struct nsh_ctx *c, struct nsh_job *j);
/* Reports every failure of c's jobs that nobody has seen. */
void nsh_job_report_all(struct nsh_ctx *c);

/* ---- The runtime ------------------------------------------------------ */

/* Starts the pool if needed; returns the workers or NULL with *err. */
struct nsh_ctx *nsh_runtime_workers(nshost_runtime_t *rt, int *err);
/* Queues m on worker 1..T, or a random one for 0.  0, NSHOST_EINVAL
 * or NSHOST_ESHUTDOWN (then m stays the caller's). */
int nsh_runtime_post(nshost_runtime_t *rt, struct nsh_msg *m, int worker);
/* Worker worker (1..T) finished n jobs: for p2c's counts. */
void nsh_runtime_jobs_done(nshost_runtime_t *rt, int worker, long n);
/* The count of jobs not yet finished, across the runtime. */
void nsh_runtime_job_added(nshost_runtime_t *rt);
void nsh_runtime_job_ended(nshost_runtime_t *rt);
long nsh_runtime_jobs(nshost_runtime_t *rt);
/* The script context woken when the last job ends. */
void nsh_runtime_set_home(nshost_runtime_t *rt, struct nsh_ctx *c);
/* Forgets c as home if it is; after it returns, nobody wakes c. */
void nsh_runtime_clear_home(nshost_runtime_t *rt, struct nsh_ctx *c);
void nsh_runtime_unhandled(nshost_runtime_t *rt);
void nsh_runtime_set_paths(nshost_runtime_t *rt, const char *path,
                           const char *cpath);
int nsh_runtime_paths_version(nshost_runtime_t *rt);
/* Copies the published paths (the caller frees them; NULL if none);
 * returns their version. */
int nsh_runtime_get_paths(nshost_runtime_t *rt, char **path, char **cpath);
int nsh_runtime_stopping(nshost_runtime_t *rt);
/* Workers a timed-out shutdown left running: they may still answer
 * jobs, so what their answers go to must not be freed. */
int nsh_runtime_stuck(nshost_runtime_t *rt);
const nshost_config_t *nsh_runtime_config(nshost_runtime_t *rt);
void nsh_log(nshost_runtime_t *rt, int level, const char *fmt, ...)
#if defined(__GNUC__)
  __attribute__((format(printf, 3, 4)))
#endif
  ;

/* ---- Codec ------------------------------------------------------------ */

/* Encodes the n values at L's index first.. into c->scratch.  The
 * function about to be spawned, if any, is the value at first and is
 * called "the function" in messages.  what names the values in messages
 * ("argument", "result").  On failure pushes a message and returns -1;
 * nothing else is left on the stack either way. */
int nsh_codec_encode(struct nsh_ctx *c, lua_State *L, int first, int n,
                     const char *what, int has_fn);
/* Decodes every value of data onto L; returns how many, or -1 with an
 * error message pushed. */
int nsh_codec_decode(struct nsh_ctx *c, lua_State *L, const char *data,
                     size_t len);
/* Gives the job function at idx back to the pool of its bytecode, the
 * one key names.  Allocates nothing, so it needs no protected call. */
void nsh_codec_pool_put(struct nsh_ctx *c, lua_State *L, int idx,
                        struct nsh_poolkey key);
/* Builds the per-state tables the codec needs (standard functions). */
void nsh_codec_open(lua_State *L);
/* Frees what the codec keeps in c outside the Lua state. */
void nsh_codec_free(struct nsh_ctx *c);

/* The wire format, for messages built and read in C (client.c). */
#define NSH_WIRE_STD 100
int nsh_wire_put(struct nsh_buf *b, int kind, const void *p, size_t n);
int nsh_wire_type(const char *p);
int nsh_wire_true(const char *p);
int nsh_wire_index(const char *data, size_t len, const char ***at);
const char *nsh_wire_string(const char *p, const char *end, size_t *len);

/* Hands a C job's outcome to its callback (client.c). */
void nsh_client_deliver(struct nsh_ctx *c, struct nsh_msg *m);

/* ---- Lua API ----------------------------------------------------------- */

/* Pushes the `runtime` table for c's state. */
void nsh_lruntime_open(struct nsh_ctx *c, lua_State *L);

/* ---- Buffers ---------------------------------------------------------- */

int nsh_buf_reserve(struct nsh_buf *b, size_t extra);
void nsh_buf_free(struct nsh_buf *b);

#endif /* NSH_H */
