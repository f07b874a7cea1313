/*
 * ctx.c - one loop and one Lua state: the scheduler that workers and
 * script states share.
 *
 * Lua code never runs inside a libuv callback.  Callbacks only mark
 * tasks ready; tasks are resumed between turns of the loop.  That is
 * what lets a task that cannot yield (inside require, a sort comparator,
 * a metamethod) wait by turning the loop in place: uv_run is never
 * entered twice on one loop.
 */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "nsh.h"

static char key_ctx;

void nsh_worker_start_job(struct nsh_ctx *c, struct nsh_msg *m);
void nsh_worker_job_done(struct nsh_ctx *c, struct nsh_task *t, int status);
static void free_spare(struct nsh_ctx *c);


static void on_inbox(struct nsh_inbox *ib) {
  struct nsh_ctx *c = ib->data;
  struct nsh_msg *m, *next;

  for (m = nsh_inbox_take(&c->inbox); m != NULL; m = next) {
    next = m->next;
    if (m->kind == NSH_MSG_JOB) {
      /* Started from run_ready, one at a time, so that a job that ends
       * at once hands its function on to the next (see codec.c). */
      m->next = NULL;
      if (c->jobs == NULL)
        c->jobs = m;
      else
        c->jobs_tail->next = m;
      c->jobs_tail = m;
    } else {
      nsh_job_finish(c, m);
    }
  }
}


/* Runs just before the loop polls.  When this turn may wait, the inbox
 * is told, so that pushes wake it from now on; messages that came in
 * since the last look are handled now, and the poll does not wait. */
static void on_before_poll(uv_prepare_t *p) {
  struct nsh_ctx *c = p->data;

  if (!c->may_wait)
    return;
  if (nsh_inbox_sleep(&c->inbox)) {
    on_inbox(&c->inbox);
    uv_stop(&c->loop);
  }
}


int nsh_ctx_init(struct nsh_ctx *c, nshost_runtime_t *rt, int id) {
  int err;

  memset(c, 0, sizeof(*c));
  c->rt = rt;
  c->id = id;
  c->tasks_ref = LUA_NOREF;
  c->children_ref = LUA_NOREF;
  c->put_numbers_ref = LUA_NOREF;
  c->get_numbers_ref = LUA_NOREF;
  if ((err = uv_loop_init(&c->loop)) != 0)
    return err;
  if ((err = nsh_inbox_init(&c->inbox, &c->loop, on_inbox, c)) != 0) {
    uv_loop_close(&c->loop);
    return err;
  }
  /* Never fails on Unix; unreferenced, as it keeps nothing alive. */
  uv_prepare_init(&c->loop, &c->before_poll);
  c->before_poll.data = c;
  uv_prepare_start(&c->before_poll, on_before_poll);
  uv_unref((uv_handle_t *)&c->before_poll);
  c->inbox.watched = 1;
  return 0;
}


struct nsh_ctx *nsh_ctx_of(lua_State *L) {
  struct nsh_ctx *c;

  lua_pushlightuserdata(L, &key_ctx);
  lua_rawget(L, LUA_REGISTRYINDEX);
  c = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return c;
}


/* The allocator of a worker with a memory limit: past the limit an
 * allocation fails, and Lua raises "not enough memory" in the job that
 * asked, which its awaiter then gets; the worker goes on. */
static void *limited_alloc(void *ud, void *p, size_t osize, size_t nsize) {
  struct nsh_ctx *c = ud;
  void *q;

  if (nsize == 0) {
    free(p);
    c->mem_used -= osize;
    return NULL;
  }
  if (nsize > osize && c->mem_used + (nsize - osize) > c->mem_limit)
    return NULL;
  q = realloc(p, nsize);
  if (q != NULL)
    c->mem_used = c->mem_used - osize + nsize;
  return q;
}


/* A Lua error with no protected call around it ends the process; say
 * why first (a state with our own allocator has no default message). */
static int on_panic(lua_State *L) {
  struct nsh_ctx *c = nsh_ctx_of(L);
  const char *msg = lua_tostring(L, -1);

  if (c != NULL)
    nsh_log(c->rt, NSHOST_LOG_ERROR, "worker %d: unprotected Lua error, "
            "the process ends: %s", c->id, msg != NULL ? msg : "?");
  return 0;
}


int nsh_ctx_open_lua(struct nsh_ctx *c) {
  const nshost_config_t *cfg = nsh_runtime_config(c->rt);
  lua_State *L = NULL;

  c->mem_limit = c->id > 0 ? cfg->worker_memory : 0;
  if (c->mem_limit > 0) {
    L = lua_newstate(limited_alloc, c);
    if (L == NULL)
      nsh_log(c->rt, NSHOST_LOG_WARN, "worker %d: this LuaJIT cannot take "
              "a custom allocator; running without the memory limit",
              c->id);
  }
  if (L == NULL)
    L = luaL_newstate();
  if (L == NULL)
    return NSHOST_ENOMEM;
  c->L = L;
  lua_atpanic(L, on_panic);
  luaL_openlibs(L);
  lua_pushlightuserdata(L, &key_ctx);
  lua_pushlightuserdata(L, c);
  lua_rawset(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  c->tasks_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  nsh_lruntime_open(c, L);
  if (cfg->setup != NULL && cfg->setup(L, c->id, cfg->setup_ud) != 0)
    nsh_log(c->rt, NSHOST_LOG_WARN, "worker %d: the setup hook failed; "
            "the state is used as it is", c->id);
  lua_settop(L, 0);
  /* After setup, so the embedder's functions cross by name too. */
  nsh_codec_open(L);
  atomic_store(&c->hook_L, L);
  return 0;
}


static void close_cb(uv_handle_t *h) {
  /* The inbox's poll handle and before_poll are part of the context;
   * the rest (timers) were allocated one by one. */
  if (h->type == UV_TIMER)
    free(h);
}


static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, close_cb);
}


static void stop_hook(lua_State *L, lua_Debug *ar) {
  struct nsh_ctx *c = nsh_ctx_of(L);

  (void)ar;
  if (c != NULL && c->id == 0)
    luaL_error(L, "interrupted by signal %d", atomic_load(&c->interrupted));
  luaL_error(L, "job cancelled: the runtime shut down and the job ran past "
                "the shutdown timeout");
}


void nsh_ctx_interrupt(struct nsh_ctx *c) {
  lua_State *L;

  /* The state's owner may be closing it right now (a worker leaving
   * at the moment shutdown interrupts it): it clears hook_L, then waits
   * for hook_users to drop to 0 before closing, so the L seen here
   * stays open until this is done.  Atomics only: a signal handler
   * calls this. */
  atomic_fetch_add(&c->hook_users, 1);
  L = atomic_load(&c->hook_L);
  if (L != NULL)
    lua_sethook(L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT,
                1000);
  atomic_fetch_sub(&c->hook_users, 1);
}


void nsh_ctx_uninterrupt(struct nsh_ctx *c) {
  if (c->L != NULL)
    lua_sethook(c->L, NULL, 0, 0);
}


/* Closes the state, then the loop with every handle left on it. */
void nsh_ctx_close(struct nsh_ctx *c) {
  atomic_store(&c->hook_L, NULL);
  while (atomic_load(&c->hook_users) > 0)
    uv_sleep(0);
  free_spare(c);
  if (c->L != NULL) {
    lua_close(c->L);
    c->L = NULL;
  }
  uv_walk(&c->loop, close_walk, NULL);
  uv_run(&c->loop, UV_RUN_DEFAULT);
  uv_loop_close(&c->loop);
  nsh_buf_free(&c->scratch);
  nsh_codec_free(c);
  free(c->ready);
  c->ready = NULL;
}

/* ---- Tasks ------------------------------------------------------------- */

/* Finished tasks kept, with their coroutines, for the next jobs:
 * making a coroutine and anchoring it costs more than most jobs. */
#define MAX_SPARE 16

struct nsh_task *nsh_task_new(struct nsh_ctx *c, int nargs) {
  lua_State *L = c->L;
  struct nsh_task *t = c->spare;

  if (t != NULL) {
    /* A coroutine that returned is as good as new once its stack is
     * empty; only its globals may have been changed (setfenv(0, ...)). */
    c->spare = t->next;
    c->nspare--;
    lua_pushvalue(L, LUA_GLOBALSINDEX);
    lua_xmove(L, t->co, 1);
    lua_replace(t->co, LUA_GLOBALSINDEX);
  } else {
    t = malloc(sizeof(*t));
    if (t == NULL)
      return NULL;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->tasks_ref);
    t->co = lua_newthread(L);
    t->ref = luaL_ref(L, -2);
    lua_pop(L, 1);
  }
  t->job = NULL;
  t->msg = NULL;
  t->waiting = t->started = t->status = t->abandoned = 0;
  t->fn_ref = LUA_NOREF;
  t->wnext = t->prev = t->next = NULL;
  if (nargs >= 0)
    lua_xmove(L, t->co, nargs + 1);
  return t;
}


void nsh_task_free(struct nsh_ctx *c, struct nsh_task *t) {
  int keep = t->status == 0 && lua_status(t->co) == 0 &&
             c->nspare < MAX_SPARE;

  free(t->msg);
  t->msg = NULL;
  if (t->fn_ref != LUA_NOREF || !keep) {
    lua_rawgeti(c->L, LUA_REGISTRYINDEX, c->tasks_ref);
    if (t->fn_ref != LUA_NOREF) {
      /* The job is over: its function may serve the next one. */
      lua_rawgeti(c->L, -1, t->fn_ref);
      nsh_codec_pool_put(c, c->L, lua_gettop(c->L), t->pool);
      lua_pop(c->L, 1);
      luaL_unref(c->L, -1, t->fn_ref);
    }
    if (!keep)
      luaL_unref(c->L, -1, t->ref);
    lua_pop(c->L, 1);
  }
  if (!keep) {
    free(t);
    return;
  }
  lua_settop(t->co, 0);
  t->next = c->spare;
  c->spare = t;
  c->nspare++;
}


/* Lets the spare tasks go (their coroutines go with the state). */
static void free_spare(struct nsh_ctx *c) {
  struct nsh_task *t;

  while ((t = c->spare) != NULL) {
    c->spare = t->next;
    free(t);
  }
  c->nspare = 0;
}


void nsh_task_ready(struct nsh_ctx *c, struct nsh_task *t) {
  struct nsh_task **r;
  size_t cap, i;

  t->waiting = 0;
  if (c->rlen == c->rcap) {
    cap = c->rcap ? c->rcap * 2 : 64;
    r = malloc(cap * sizeof(*r));
    /* A ready task that cannot be queued would be lost for good. */
    if (r == NULL)
      abort();
    for (i = 0; i < c->rlen; i++)
      r[i] = c->ready[(c->rhead + i) % c->rcap];
    free(c->ready);
    c->ready = r;
    c->rcap = cap;
    c->rhead = 0;
  }
  c->ready[(c->rhead + c->rlen) % c->rcap] = t;
  c->rlen++;
}


void nsh_task_done(struct nsh_ctx *c, struct nsh_task *t, int status) {
  t->status = status;
  if (t->job != NULL)
    nsh_worker_job_done(c, t, status);
  else
    c->main_done = 1;
}


void nsh_task_resume(struct nsh_ctx *c, struct nsh_task *t) {
  struct nsh_task *prev = c->current;
  int nargs, status;

  if (t->abandoned)
    return;
  nargs = t->started ? 0 : lua_gettop(t->co) - 1;
  t->started = 1;
  c->current = t;
  if (t->job != NULL)
    atomic_store_explicit(&c->running, t->job, memory_order_relaxed);
  status = lua_resume(t->co, nargs);
  atomic_store_explicit(&c->running, prev != NULL ? prev->job : NULL,
                        memory_order_relaxed);
  c->current = prev;
  if (status != LUA_YIELD) {
    nsh_task_done(c, t, status);
    return;
  }
  /* Parked tasks were put on a wait list by await or sleep.  Any other
   * yield just gives way to the other ready tasks. */
  lua_settop(t->co, 0);
  if (!t->waiting)
    nsh_task_ready(c, t);
}


/* New jobs started per pass, so that the loop still gets its turn when
 * thousands are queued. */
#define START_BATCH 256

void nsh_ctx_run_ready(struct nsh_ctx *c) {
  struct nsh_task *t;
  struct nsh_msg *m;
  size_t n;

  /* No encoding or decoding is under way out here; one that a Lua error
   * cut short (out of memory, a failing finalizer) left its mark. */
  if (c->wait_depth == 0) {
    c->encoding = 0;
    atomic_store_explicit(&c->fin_wait, 0, memory_order_relaxed);
    c->dec_top = 0;
  }
  /* Only the tasks ready now: one that keeps yielding must not starve
   * the loop. */
  for (n = c->rlen; n > 0 && c->rlen > 0; n--) {
    t = c->ready[c->rhead];
    c->rhead = (c->rhead + 1) % c->rcap;
    c->rlen--;
    nsh_task_resume(c, t);
  }
  for (n = 0; n < START_BATCH && (m = c->jobs) != NULL; n++) {
    c->jobs = m->next;
    nsh_worker_start_job(c, m);
  }
}


/* One turn that may wait for an event, ready tasks or not (for when
 * they are not to run now). */
static void turn(struct nsh_ctx *c, int may_wait) {
  c->may_wait = may_wait;
  uv_run(&c->loop, may_wait ? UV_RUN_ONCE : UV_RUN_NOWAIT);
  c->may_wait = 0;
  nsh_inbox_awake(&c->inbox);
}


void nsh_ctx_turn(struct nsh_ctx *c) {
  turn(c, c->rlen == 0 && c->jobs == NULL);
}


void nsh_ctx_turn_waiting(struct nsh_ctx *c) {
  turn(c, 1);
}
