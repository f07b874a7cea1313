/*
 * runtime.c - the pool: lazy start, placement, shutdown.
 *
 * The workers are created on first use.  A caller first does an acquire
 * load of the published worker array; only when it is still NULL does it
 * take the mutex, look again and create the workers, publishing them
 * with a release store.  So the threads are made exactly once and never
 * made only to be thrown away.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nsh.h"

struct nshost_runtime_s {
  nshost_config_t cfg;
  char name[32];
  int threads;
  _Atomic(struct nsh_ctx *) workers;   /* published once, then constant */
  uv_mutex_t start_lock;
  atomic_int started;                  /* threads created so far */
  atomic_int stopping;
  atomic_long jobs;                    /* spawned and not yet finished */
  atomic_long unhandled;
  struct nsh_ctx *home;                /* woken when jobs reaches 0 */
  uv_mutex_t home_lock;                /* so home is not freed mid-wake */
  uv_mutex_t exit_lock;                /* guards nexited, with exit_cond */
  uv_cond_t exit_cond;
  int nexited;
  int shut;                            /* shutdown has completed */
  atomic_int stuck;                    /* workers left running in a job */
  uv_mutex_t paths_lock;               /* guards the two paths */
  char *path, *cpath;                  /* the scripts' package paths */
  atomic_int paths_version;
  struct nsh_load *loads;              /* p2c: one per worker */
};

/* p2c's count of a worker's jobs, queued or running.  Each on a cache
 * line of its own: spawners add to it and read it all the time, and its
 * worker takes off what it finished, a batch at a time. */
struct nsh_load {
  _Alignas(64) atomic_long n;
};

void nsh_worker_main(void *arg);

/* ---- Errors and version ----------------------------------------------- */

const char *nshost_strerror(int err) {
  switch (err) {
#define X(name, code, text) case code: return text;
    NSHOST_ERRNO_MAP(X)
#undef X
  case 0: return "success";
  default: return err < 0 && err > -1000 ? strerror(-err) : "unknown error";
  }
}


const char *nshost_err_name(int err) {
  switch (err) {
#define X(name, code, text) case code: return #name;
    NSHOST_ERRNO_MAP(X)
#undef X
  case 0: return "OK";
  default: return "UNKNOWN";
  }
}


const char *nshost_version_string(void) {
  return NSHOST_VERSION_STRING;
}


unsigned nshost_version(void) {
  return NSHOST_VERSION_HEX;
}

/* ---- Logging ----------------------------------------------------------- */

void nsh_log(nshost_runtime_t *rt, int level, const char *fmt, ...) {
  char line[2048];
  va_list ap;

  /* Filter before formatting: an unseen line costs nothing. */
  if (rt->cfg.log == NULL || level > rt->cfg.log_level)
    return;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  rt->cfg.log(level, line, rt->cfg.log_ud);
}

/* ---- Creation ---------------------------------------------------------- */

void nshost_config_init(nshost_config_t *cfg) {
  if (cfg == NULL)
    return;
  memset(cfg, 0, sizeof(*cfg));
  cfg->threads = 0;
  cfg->name = "nshost";
  cfg->shutdown_timeout_ms = 5000;
  cfg->log_level = NSHOST_LOG_WARN;
}


static int cpu_count(void) {
  uv_cpu_info_t *info;
  int n;

  if (uv_cpu_info(&info, &n) != 0 || n < 1)
    return 1;
  uv_free_cpu_info(info, n);
  return n;
}


int nshost_runtime_new(nshost_runtime_t **out, const nshost_config_t *cfg) {
  nshost_runtime_t *rt;
  nshost_config_t def;

  if (out == NULL)
    return NSHOST_EINVAL;
  *out = NULL;
  if (cfg == NULL) {
    nshost_config_init(&def);
    cfg = &def;
  }
  rt = calloc(1, sizeof(*rt));
  if (rt == NULL)
    return NSHOST_ENOMEM;

  rt->cfg = *cfg;
  snprintf(rt->name, sizeof(rt->name), "%s",
           cfg->name != NULL && cfg->name[0] != '\0' ? cfg->name : "nshost");
  rt->cfg.name = rt->name;
  if (rt->cfg.shutdown_timeout_ms < 0)
    rt->cfg.shutdown_timeout_ms = 0;
  rt->threads = cfg->threads > 0 ? cfg->threads : cpu_count();
  if (rt->cfg.placement == NSHOST_PLACE_P2C) {
    rt->loads = aligned_alloc(_Alignof(struct nsh_load),
                              (size_t)rt->threads * sizeof(*rt->loads));
    if (rt->loads == NULL) {
      free(rt);
      return NSHOST_ENOMEM;
    }
    for (int i = 0; i < rt->threads; i++)
      atomic_init(&rt->loads[i].n, 0);
  }

  /* A mutex or condition that cannot be made leaves nothing to go on
   * with; libuv's own thread pool aborts in the same place. */
  if (uv_mutex_init(&rt->start_lock) != 0 ||
      uv_mutex_init(&rt->exit_lock) != 0 ||
      uv_mutex_init(&rt->home_lock) != 0 ||
      uv_mutex_init(&rt->paths_lock) != 0 ||
      uv_cond_init(&rt->exit_cond) != 0)
    abort();
  *out = rt;
  return 0;
}


int nshost_runtime_threads(const nshost_runtime_t *rt) {
  return rt != NULL ? rt->threads : NSHOST_EINVAL;
}


int nshost_runtime_started_threads(const nshost_runtime_t *rt) {
  return rt != NULL ? atomic_load(&((nshost_runtime_t *)rt)->started) : 0;
}


long nshost_runtime_unhandled_errors(const nshost_runtime_t *rt) {
  return rt != NULL ? atomic_load(&((nshost_runtime_t *)rt)->unhandled) : 0;
}


const nshost_config_t *nsh_runtime_config(nshost_runtime_t *rt) {
  return &rt->cfg;
}

/* ---- Start ------------------------------------------------------------- */

static void tell_workers(struct nsh_ctx *w, int n, int cancel) {
  int i;

  for (i = 0; i < n; i++) {
    atomic_store(&w[i].stopping, 1);
    if (cancel)
      atomic_store(&w[i].cancel, 1);
    nsh_inbox_wake(&w[i].inbox);
  }
}


/* Creates every worker, or none: on failure the threads already made
 * are stopped and joined.  Called with start_lock held. */
static struct nsh_ctx *create_workers(nshost_runtime_t *rt, int *err) {
  struct nsh_ctx *w;
  uv_thread_options_t opt;
  int i, k;

  w = calloc((size_t)rt->threads, sizeof(*w));
  if (w == NULL) {
    *err = NSHOST_ENOMEM;
    return NULL;
  }
  for (i = 0; i < rt->threads; i++) {
    int r = nsh_ctx_init(&w[i], rt, i + 1);
    if (r != 0) {
      nsh_log(rt, NSHOST_LOG_ERROR, "cannot set up worker %d of %d: %s",
              i + 1, rt->threads, uv_strerror(r));
      *err = r == UV_ENOMEM ? NSHOST_ENOMEM : NSHOST_ETHREAD;
      goto fail;
    }
  }

  /* The codec recurses once per nesting level; give it room. */
  opt.flags = UV_THREAD_HAS_STACK_SIZE;
  opt.stack_size = 8u << 20;
  for (k = 0; k < rt->threads; k++) {
    if (uv_thread_create_ex(&w[k].thread, &opt, nsh_worker_main,
                            &w[k]) != 0) {
      *err = NSHOST_ETHREAD;
      goto fail_threads;
    }
    atomic_fetch_add(&rt->started, 1);
  }
  return w;

fail_threads:
  tell_workers(w, k, 1);
  for (i = 0; i < k; i++)
    uv_thread_join(&w[i].thread);
  rt->nexited = 0;
  for (i = k; i < rt->threads; i++) {
    nsh_inbox_close(&w[i].inbox);
    nsh_ctx_close(&w[i]);
  }
  for (i = 0; i < rt->threads; i++) {
    nsh_inbox_destroy(&w[i].inbox);
    nsh_msgpool_free(&w[i].msgs);
  }
  free(w);
  return NULL;

fail:
  while (i-- > 0) {
    nsh_ctx_close(&w[i]);
    nsh_inbox_destroy(&w[i].inbox);
  }
  free(w);
  return NULL;
}


struct nsh_ctx *nsh_runtime_workers(nshost_runtime_t *rt, int *err) {
  struct nsh_ctx *w;

  w = atomic_load_explicit(&rt->workers, memory_order_acquire);
  if (w != NULL)
    return w;

  uv_mutex_lock(&rt->start_lock);
  w = atomic_load_explicit(&rt->workers, memory_order_relaxed);
  if (w == NULL) {
    if (atomic_load(&rt->stopping))
      *err = NSHOST_ESHUTDOWN;
    else {
      w = create_workers(rt, err);
      if (w != NULL)
        atomic_store_explicit(&rt->workers, w, memory_order_release);
    }
  }
  uv_mutex_unlock(&rt->start_lock);
  return w;
}


int nshost_runtime_start(nshost_runtime_t *rt) {
  int err = 0;

  if (rt == NULL)
    return NSHOST_EINVAL;
  if (atomic_load(&rt->stopping))
    return NSHOST_ESHUTDOWN;
  return nsh_runtime_workers(rt, &err) != NULL ? 0 : err;
}

/* ---- Placement --------------------------------------------------------- */

/* xorshift64*: a few instructions, and each thread has its own state, so
 * placement never touches shared memory. */
static _Thread_local uint64_t rng_state;

static uint32_t next_random(void) {
  uint64_t x = rng_state;

  if (x == 0)
    x = uv_hrtime() ^ (uint64_t)(uintptr_t)&rng_state ^ 0x9e3779b97f4a7c15u;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  rng_state = x;
  return (uint32_t)((x * 0x2545f4914f6cdd1du) >> 32);
}


/* Multiply-shift maps 32 random bits onto 0..threads-1 evenly. */
static uint32_t any_worker(nshost_runtime_t *rt) {
  return (uint32_t)(((uint64_t)next_random() * (uint32_t)rt->threads) >> 32);
}


static uint32_t pick(nshost_runtime_t *rt) {
  uint32_t a = any_worker(rt), b;

  if (rt->cfg.placement != NSHOST_PLACE_P2C || rt->threads < 2)
    return a;
  /* Power of two choices: a second pick among the other workers, and
   * the lighter one wins.  (Two picks that could land on one worker
   * would be no choice at all half the time with two workers.) */
  b = (a + 1 + (uint32_t)(((uint64_t)next_random() *
                           (uint32_t)(rt->threads - 1)) >> 32)) %
      (uint32_t)rt->threads;
  return atomic_load_explicit(&rt->loads[b].n, memory_order_relaxed) <
         atomic_load_explicit(&rt->loads[a].n, memory_order_relaxed) ? b : a;
}


int nsh_runtime_post(nshost_runtime_t *rt, struct nsh_msg *m, int worker) {
  struct nsh_ctx *w;
  uint32_t i;
  int err = NSHOST_ESHUTDOWN;

  if (worker < 0 || worker > rt->threads)
    return NSHOST_EINVAL;
  if (atomic_load_explicit(&rt->stopping, memory_order_relaxed))
    return NSHOST_ESHUTDOWN;
  w = nsh_runtime_workers(rt, &err);
  if (w == NULL)
    return err;
  if (worker > 0)
    i = (uint32_t)worker - 1;
  else
    i = pick(rt);
  if (rt->loads != NULL)
    atomic_fetch_add_explicit(&rt->loads[i].n, 1, memory_order_relaxed);
  if (m->job != NULL)
    m->job->worker = (int)i + 1;      /* before the worker can see it */
  if (nsh_inbox_push(&w[i].inbox, m) != 0) {
    if (rt->loads != NULL)
      atomic_fetch_sub_explicit(&rt->loads[i].n, 1, memory_order_relaxed);
    return NSHOST_ESHUTDOWN;
  }
  return 0;
}


void nsh_runtime_jobs_done(nshost_runtime_t *rt, int worker, long n) {
  if (rt->loads != NULL && n > 0)
    atomic_fetch_sub_explicit(&rt->loads[worker - 1].n, n,
                              memory_order_relaxed);
}

/* ---- Job accounting ---------------------------------------------------- */

void nsh_runtime_job_added(nshost_runtime_t *rt) {
  atomic_fetch_add_explicit(&rt->jobs, 1, memory_order_relaxed);
}


void nsh_runtime_job_ended(nshost_runtime_t *rt) {
  struct nsh_ctx *home;

  if (atomic_fetch_sub(&rt->jobs, 1) != 1)
    return;
  uv_mutex_lock(&rt->home_lock);
  home = rt->home;
  /* Home checks the count after every turn; waking itself would cost a
   * write to its own eventfd. */
  if (home != NULL && home != nsh_ctx_self())
    nsh_inbox_wake(&home->inbox);
  uv_mutex_unlock(&rt->home_lock);
}


long nsh_runtime_jobs(nshost_runtime_t *rt) {
  return atomic_load(&rt->jobs);
}


void nsh_runtime_set_home(nshost_runtime_t *rt, struct nsh_ctx *c) {
  uv_mutex_lock(&rt->home_lock);
  rt->home = c;
  uv_mutex_unlock(&rt->home_lock);
}


void nsh_runtime_clear_home(nshost_runtime_t *rt, struct nsh_ctx *c) {
  uv_mutex_lock(&rt->home_lock);
  if (rt->home == c)
    rt->home = NULL;
  uv_mutex_unlock(&rt->home_lock);
}


void nsh_runtime_unhandled(nshost_runtime_t *rt) {
  atomic_fetch_add(&rt->unhandled, 1);
}


int nsh_runtime_stuck(nshost_runtime_t *rt) {
  return atomic_load(&rt->stuck);
}


int nsh_runtime_stopping(nshost_runtime_t *rt) {
  return atomic_load_explicit(&rt->stopping, memory_order_relaxed);
}


/* Called by each worker thread as the very last thing it does. */
void nsh_runtime_worker_exited(nshost_runtime_t *rt) {
  uv_mutex_lock(&rt->exit_lock);
  rt->nexited++;
  uv_cond_signal(&rt->exit_cond);
  uv_mutex_unlock(&rt->exit_lock);
}

/* ---- Search paths ------------------------------------------------------ */

/* Scripts publish package.path and package.cpath when they change, and
 * workers take them before their next job, so `require` in a job finds
 * what the script would. */
void nsh_runtime_set_paths(nshost_runtime_t *rt, const char *path,
                           const char *cpath) {
  char *p = strdup(path), *cp = strdup(cpath);

  if (p == NULL || cp == NULL) {
    free(p);
    free(cp);
    return;
  }
  uv_mutex_lock(&rt->paths_lock);
  free(rt->path);
  free(rt->cpath);
  rt->path = p;
  rt->cpath = cp;
  atomic_fetch_add(&rt->paths_version, 1);
  uv_mutex_unlock(&rt->paths_lock);
}


int nsh_runtime_paths_version(nshost_runtime_t *rt) {
  return atomic_load_explicit(&rt->paths_version, memory_order_acquire);
}


/* Copies the paths out (the caller frees them); returns the version.
 * Both are NULL until a script has published. */
int nsh_runtime_get_paths(nshost_runtime_t *rt, char **path, char **cpath) {
  int v;

  uv_mutex_lock(&rt->paths_lock);
  v = atomic_load(&rt->paths_version);
  *path = rt->path != NULL ? strdup(rt->path) : NULL;
  *cpath = rt->cpath != NULL ? strdup(rt->cpath) : NULL;
  uv_mutex_unlock(&rt->paths_lock);
  return v;
}

/* ---- Shutdown ---------------------------------------------------------- */

/* Waits until every worker has left its loop or the deadline (in
 * uv_hrtime nanoseconds) has passed.  Returns how many have exited. */
static int wait_exits(nshost_runtime_t *rt, uint64_t deadline) {
  uint64_t now;
  int n;

  uv_mutex_lock(&rt->exit_lock);
  while (rt->nexited < rt->threads) {
    now = uv_hrtime();
    if (now >= deadline)
      break;
    if (uv_cond_timedwait(&rt->exit_cond, &rt->exit_lock,
                          deadline - now) != 0 && uv_hrtime() >= deadline)
      break;
  }
  n = rt->nexited;
  uv_mutex_unlock(&rt->exit_lock);
  return n;
}


int nshost_runtime_shutdown(nshost_runtime_t *rt, int timeout_ms) {
  struct nsh_ctx *w;
  uint64_t start;
  int i, stuck = 0;

  if (rt == NULL)
    return NSHOST_EINVAL;
  if (nsh_worker_self() != NULL)
    return NSHOST_EINVAL;

  /* Taking start_lock orders us after any start in progress: after it,
   * no new pool can appear, since starting checks `stopping`. */
  uv_mutex_lock(&rt->start_lock);
  atomic_store(&rt->stopping, 1);
  w = atomic_load(&rt->workers);
  uv_mutex_unlock(&rt->start_lock);
  if (w == NULL || rt->shut)
    return atomic_load(&rt->stuck) > 0 ? NSHOST_ETIMEDOUT : 0;
  if (timeout_ms < 0)
    timeout_ms = 0;

  /* Tell every worker before waiting for any, so the whole shutdown
   * takes one timeout, not one per worker. */
  start = uv_hrtime();
  tell_workers(w, rt->threads, 0);
  if (wait_exits(rt, start + (uint64_t)timeout_ms * 1000000u) <
      rt->threads) {
    tell_workers(w, rt->threads, 1);
    /* A job that never yields gets an error raised inside it. */
    for (i = 0; i < rt->threads; i++)
      if (!atomic_load(&w[i].exited))
        nsh_ctx_interrupt(&w[i]);
    /* Cancelling needs a turn of each loop, and the hook fires within
     * a thousand instructions: a worker not out by then is in a loop
     * the JIT compiled, and waiting longer would not help. */
    wait_exits(rt, uv_hrtime() + 100 * 1000000u);
  }

  for (i = 0; i < rt->threads; i++) {
    if (!atomic_load(&w[i].exited)) {
      struct nsh_job *j = atomic_load(&w[i].running);
      /* The job cannot be freed under us: its outcome is not sent. */
      nsh_log(rt, NSHOST_LOG_ERROR,
              "worker %d: the job spawned at %s:%d is still running %d ms "
              "after shutdown began and does not give way (a loop compiled "
              "by the JIT does not see the interrupt); leaving its thread "
              "behind", w[i].id, j != NULL ? j->site : "?",
              j != NULL ? j->line : 0, timeout_ms);
      stuck++;
      continue;
    }
    uv_thread_join(&w[i].thread);
  }
  /* Only now that no worker runs: a worker cancelling its queued jobs
   * replies into the inboxes of the workers that spawned them, and
   * gives their messages back to those workers' pools. */
  for (i = 0; i < rt->threads && stuck == 0; i++) {
    nsh_inbox_destroy(&w[i].inbox);
    nsh_msgpool_free(&w[i].msgs);
  }
  rt->shut = 1;
  atomic_store(&rt->stuck, stuck);
  if (stuck > 0) {
    /* The stuck threads still use their contexts: keep the memory. */
    return NSHOST_ETIMEDOUT;
  }
  free(w);
  atomic_store(&rt->workers, NULL);
  return 0;
}


void nshost_runtime_free(nshost_runtime_t *rt) {
  if (rt == NULL)
    return;
  if (nshost_runtime_shutdown(rt, rt->cfg.shutdown_timeout_ms) ==
      NSHOST_ETIMEDOUT)
    return;   /* stuck threads still point into rt */
  uv_cond_destroy(&rt->exit_cond);
  uv_mutex_destroy(&rt->exit_lock);
  uv_mutex_destroy(&rt->home_lock);
  uv_mutex_destroy(&rt->paths_lock);
  free(rt->path);
  free(rt->cpath);
  free(rt->loads);
  uv_mutex_destroy(&rt->start_lock);
  free(rt);
}
