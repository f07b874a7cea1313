/*
 * lruntime.c - the `runtime` table: spawn, await, sleep and friends.
 *
 * The C functions here are the primitives; lua/runtime.lua builds the
 * API on them (await and sleep read better in Lua, since they yield).
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <luajit.h>

#include "nsh.h"

#define JOB_MT "nshost.job"

struct nsh_lua_source {
  const char *name;
  const char *code;
  size_t len;
};
extern const struct nsh_lua_source nsh_lua_sources[];

const char *nsh_job_error_text(struct nsh_msg *m, size_t *len,
                               const char **rest, size_t *restlen);

struct handle {
  struct nsh_job *job;
};


static struct nsh_ctx *ctx(lua_State *L) {
  return lua_touserdata(L, lua_upvalueindex(1));
}


/* The functions here have the job metatable as upvalue 2: comparing
 * with it is cheaper than luaL_checkudata's lookup by name. */
#define MT_UPVALUE lua_upvalueindex(2)

static struct handle *to_handle(lua_State *L, int idx) {
  struct handle *h = lua_touserdata(L, idx);
  int r;

  if (h == NULL || !lua_getmetatable(L, idx))
    return NULL;
  r = lua_rawequal(L, -1, MT_UPVALUE);
  lua_pop(L, 1);
  return r ? h : NULL;
}


static struct nsh_job *check_job(lua_State *L, int idx) {
  struct handle *h = to_handle(L, idx);

  if (h == NULL)
    luaL_typerror(L, idx, JOB_MT);
  return h->job;
}

/* ---- spawn ------------------------------------------------------------- */

/* The first Lua frame above spawn: where the user called it, even
 * through pcall.  Kept raw; formatted only for a report. */
static void spawn_site(lua_State *L, struct nsh_job *j) {
  lua_Debug ar;
  int level;

  for (level = 1; lua_getstack(L, level, &ar); level++) {
    if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
      memcpy(j->site, ar.short_src, sizeof(j->site));
      j->site[sizeof(j->site) - 1] = '\0';
      j->line = ar.currentline;
      return;
    }
  }
  memcpy(j->site, "?", 2);
}


/* A script publishes its package paths when they have changed since its
 * last spawn, so that jobs require what the script would.  spawn's
 * upvalues 3 to 7 are the package table (the one require reads), the
 * keys "path" and "cpath", and the values last published. */
static void publish_paths(lua_State *L, struct nsh_ctx *c) {
  lua_pushvalue(L, lua_upvalueindex(4));
  lua_rawget(L, lua_upvalueindex(3));
  lua_pushvalue(L, lua_upvalueindex(5));
  lua_rawget(L, lua_upvalueindex(3));
  if (lua_rawequal(L, -2, lua_upvalueindex(6)) &&
      lua_rawequal(L, -1, lua_upvalueindex(7))) {
    lua_pop(L, 2);
    return;
  }
  if (lua_isstring(L, -2) && lua_isstring(L, -1))
    nsh_runtime_set_paths(c->rt, lua_tostring(L, -2), lua_tostring(L, -1));
  lua_replace(L, lua_upvalueindex(7));
  lua_replace(L, lua_upvalueindex(6));
}


static int lspawn(lua_State *L) {
  struct nsh_ctx *c = ctx(L);
  struct handle *h;
  struct nsh_job *j;
  struct nsh_msg *m;
  int err, n;

  if (!lua_isfunction(L, 1))
    return luaL_error(L, "bad argument #1 to 'spawn' (function expected, "
                         "got %s)", luaL_typename(L, 1));
  if (nsh_runtime_stopping(c->rt))
    return luaL_error(L, "runtime.spawn: the runtime is shut down and "
                         "takes no new jobs");
  /* The handle first: a Lua allocation can run finalizers, and one that
   * spawns would overwrite c->scratch if it came between the encoding
   * and the copy below.  The values to send are those under it. */
  n = lua_gettop(L);
  h = lua_newuserdata(L, sizeof(*h));
  h->job = NULL;
  lua_pushvalue(L, MT_UPVALUE);
  lua_setmetatable(L, -2);

  if (nsh_codec_encode(c, L, 1, n, "argument", 1) != 0) {
    /* "script.lua:7: runtime.spawn: argument #2 > ...", as luaL_error
     * would place it. */
    luaL_where(L, 1);
    lua_pushstring(L, "runtime.spawn: ");
    lua_pushvalue(L, -3);
    lua_concat(L, 3);
    return lua_error(L);
  }
  j = calloc(1, sizeof(*j));
  m = nsh_msgpool_take(&c->msgs, NSH_MSG_JOB, c->scratch.len);
  if (j == NULL || m == NULL) {
    free(j);
    free(m);
    return luaL_error(L, "runtime.spawn: not enough memory");
  }
  memcpy(m->data, c->scratch.data, c->scratch.len);
  if (c->id == 0)
    publish_paths(L, c);
  atomic_init(&j->refs, 2);
  j->origin = c;
  j->has_handle = 1;
  spawn_site(L, j);
  m->job = j;

  nsh_runtime_job_added(c->rt);
  err = nsh_runtime_post(c->rt, m, 0);
  if (err != 0) {
    nsh_runtime_job_ended(c->rt);
    free(m);
    free(j);
    return luaL_error(L, "runtime.spawn: cannot queue the job: %s",
                      nshost_strerror(err));
  }
  c->inflight++;
  h->job = j;
  return 1;
}

/* ---- Job handles ------------------------------------------------------- */

static int job_gc(lua_State *L) {
  struct handle *h = lua_touserdata(L, 1);
  struct nsh_job *j = h->job;

  if (j == NULL)
    return 0;
  h->job = NULL;
  j->has_handle = 0;
  nsh_job_report(ctx(L), j);
  nsh_job_release(j);
  return 0;
}


static int job_tostring(lua_State *L) {
  struct nsh_job *j = check_job(L, 1);
  static const char *const st[] = { "pending", "done", "failed",
                                    "cancelled" };

  lua_pushfstring(L, "job (%s, spawned at %s:%d)", st[j->status], j->site,
                  j->line);
  return 1;
}


/* in_task() -> true when the caller is the coroutine of a task (the
 * main script or a job) rather than a coroutine of the user's own. */
static int lin_task(lua_State *L) {
  struct nsh_task *t = ctx(L)->current;

  lua_pushboolean(L, t != NULL && t->co == L);
  return 1;
}


/* done(job) -> true once the outcome has arrived, false before, nil
 * if job is not a job handle of this state. */
static int ldone(lua_State *L) {
  struct handle *h = to_handle(L, 1);

  if (h == NULL)
    lua_pushnil(L);
  else
    lua_pushboolean(L, h->job->status != NSH_JOB_PENDING);
  return 1;
}


/* Parks the running task until the job ends.  False when L is not the
 * task the scheduler runs (a coroutine of the user's own): then the
 * caller must wait in place. */
static int lpark(lua_State *L) {
  struct nsh_job *j = check_job(L, 1);
  struct nsh_ctx *c = ctx(L);
  struct nsh_task *t = c->current;

  if (t == NULL || t->co != L || j->status != NSH_JOB_PENDING) {
    lua_pushboolean(L, 0);
    return 1;
  }
  t->waiting = 1;
  t->wnext = j->waiters;
  j->waiters = t;
  lua_pushboolean(L, 1);
  return 1;
}


/* Turns the loop in place until *flag is set: for callers that cannot
 * yield.  Other ready tasks run meanwhile, so a job placed on this very
 * worker still gets to run. */
/* Each wait in place may run a task that waits in place in turn, on the
 * same C stack; past this depth waiting fails instead of overflowing. */
#define MAX_WAIT_DEPTH 1000

/* Raises LuaJIT's "bad action while in __gc metamethod" when called
 * from inside a finalizer, and does nothing otherwise: LuaJIT refuses
 * every mode change there, and a trace mode without the flush flag is
 * refused right after that check, changing nothing. */
static int gc_probe_p(lua_State *L) {
  luaJIT_setmode(L, 0, LUAJIT_MODE_TRACE);
  return 0;
}


static int in_finalizer(lua_State *L) {
  lua_pushcfunction(L, gc_probe_p);
  if (lua_pcall(L, 0, 0, 0) == 0)
    return 0;
  lua_pop(L, 1);
  return 1;
}


static int wait_in_place(lua_State *L, struct nsh_ctx *c, int *flag,
                         int pending) {
  /* Waiting in place on a worker runs the worker's other jobs meanwhile.
   * Inside a __gc finalizer LuaJIT cannot take that (its compiler can
   * loop for ever, results get mixed up), and an error raised there
   * can crash it when the collection ran inside compiled code: so there
   * the worker only turns its loop, running no Lua, until the sleep is
   * over or the result is in.  (A job placed on this same worker then
   * waits until the finalizer is done: see README, Known limitations.)
   * A script's state has no other jobs to run. */
  int run_others = c->id == 0 || !in_finalizer(L);

  if (c->wait_depth >= MAX_WAIT_DEPTH)
    return luaL_error(L, "too many waits nested on one thread (%d): await "
                         "or sleep where the code can yield, such as the "
                         "job's own body", MAX_WAIT_DEPTH);
  c->wait_depth++;
  while (*flag == pending) {
    if (run_others)
      nsh_ctx_run_ready(c);
    if (*flag != pending)
      break;
    if (atomic_load(&c->cancel)) {
      c->wait_depth--;
      return luaL_error(L, "the runtime shut down while this job waited");
    }
    /* A script interrupted by a signal while it waits here runs no Lua
     * for the hook to stop: stop it here, with the error the hook would
     * raise.  The hook goes, so that the traceback can be taken. */
    if (c->id == 0 && atomic_load(&c->interrupted) != 0) {
      c->wait_depth--;
      nsh_ctx_uninterrupt(c);
      return luaL_error(L, "interrupted by signal %d",
                        atomic_load(&c->interrupted));
    }
    if (run_others)
      nsh_ctx_turn(c);
    else
      nsh_ctx_turn_waiting(c);
  }
  c->wait_depth--;
  return 0;
}


/* The worker that the chain of finalizer waits starting at worker
 * `from` comes back to c, or 0 if it ends: c waiting on `from` would
 * then close a cycle of workers each waiting, inside a finalizer, for a
 * job that only another of them could run. */
static int finalizer_cycle(struct nsh_ctx *c, int from) {
  struct nsh_ctx *w = nsh_runtime_workers(c->rt, &(int){0});
  int id = from, n = nshost_runtime_threads(c->rt);

  for (int k = 0; w != NULL && id > 0 && k < n; k++) {
    int next = atomic_load(&w[id - 1].fin_wait);
    if (next == c->id)
      return id;
    id = next;
  }
  return 0;
}


static int lwait(lua_State *L) {
  struct nsh_job *j = check_job(L, 1);
  struct nsh_ctx *c = ctx(L);
  int other;

  if (c->id == 0 || j->status != NSH_JOB_PENDING || !in_finalizer(L))
    return wait_in_place(L, c, &j->status, NSH_JOB_PENDING);

  /* In a finalizer a worker runs no other job while it waits (see
   * wait_in_place): one placed on this very worker would never run, nor
   * would one placed on a worker that waits, in a finalizer too, for a
   * job on this one.  The wait is published before the cycle is looked
   * for, so of two workers closing one at once, at least one sees it. */
  if (j->worker == c->id)
    return luaL_error(L, "cannot await, inside a __gc finalizer, a job "
                         "placed on this same worker (%d): it could not "
                         "run until the finalizer ends", c->id);
  atomic_store(&c->fin_wait, j->worker);
  if ((other = finalizer_cycle(c, j->worker)) != 0) {
    atomic_store(&c->fin_wait, 0);
    return luaL_error(L, "cannot await, inside a __gc finalizer, a job "
                         "placed on worker %d: worker %d waits in a "
                         "finalizer too, for a job on this worker (%d), "
                         "and waits in finalizers run no jobs, so both "
                         "would wait for ever", j->worker, other, c->id);
  }
  wait_in_place(L, c, &j->status, NSH_JOB_PENDING);
  atomic_store(&c->fin_wait, 0);
  return 0;
}


/* result(job) -> the job's results, or raises its error. */
static int lresult(lua_State *L) {
  struct nsh_job *j = check_job(L, 1);
  struct nsh_ctx *c = ctx(L);
  const char *text, *rest;
  size_t len, restlen;
  int n;

  nsh_job_seen(c, j);
  switch (j->status) {
  case NSH_JOB_OK:
    /* The handle stays on the stack, so the outcome stays alive. */
    n = nsh_codec_decode(c, L, j->result->data, j->result->len);
    return n >= 0 ? n : lua_error(L);
  case NSH_JOB_FAILED:
    text = nsh_job_error_text(j->result, &len, &rest, &restlen);
    if (restlen > 1 && rest[0] == 1) {
      /* The error value was not a string: raise the value itself. */
      if (nsh_codec_decode(c, L, rest + 1, restlen - 1) < 0)
        return lua_error(L);
      return lua_error(L);
    }
    lua_pushlstring(L, text, len);
    return lua_error(L);
  case NSH_JOB_CANCELLED:
    return luaL_error(L, "job cancelled: the runtime shut down before "
                         "the job spawned at %s:%d finished", j->site,
                      j->line);
  default:
    return luaL_error(L, "job spawned at %s:%d has not finished", j->site,
                      j->line);
  }
}

/* ---- sleep ------------------------------------------------------------- */

struct sleeper {
  uv_timer_t timer;
  struct nsh_task *task;    /* parked task, or NULL when in place */
  int fired;
};


static void free_handle(uv_handle_t *h) {
  free(h);
}


static void on_wake(uv_timer_t *tm) {
  struct sleeper *s = tm->data;

  s->fired = 1;
  if (s->task != NULL) {
    nsh_task_ready(tm->loop->data, s->task);
    uv_close((uv_handle_t *)tm, free_handle);
  }
  /* Timers run before the loop polls: without this, a turn that may
   * wait would go on to wait for something else, with the sleeper's
   * flag already set (a sleep shorter than the loop's clock tick, or
   * one whose time had passed when the turn began, hung so). */
  uv_stop(tm->loop);
}


static struct sleeper *start_sleep(lua_State *L, struct nsh_ctx *c,
                                   struct nsh_task *t) {
  lua_Number ms = luaL_checknumber(L, 1);
  struct sleeper *s;

  luaL_argcheck(L, ms >= 0 && ms < 1e12, 1, "milliseconds from 0 to 1e12");
  s = malloc(sizeof(*s));
  if (s == NULL) {
    luaL_error(L, "runtime.sleep: not enough memory");
    return NULL;
  }
  s->task = t;
  s->fired = 0;
  uv_timer_init(&c->loop, &s->timer);
  s->timer.data = s;
  /* The loop's clock is read once per turn; a task that has worked for
   * a while since would otherwise sleep too short. */
  uv_update_time(&c->loop);
  uv_timer_start(&s->timer, on_wake, (uint64_t)ms, 0);
  return s;
}


/* Parks the running task for ms milliseconds; false if it cannot. */
static int lsleep_park(lua_State *L) {
  struct nsh_ctx *c = ctx(L);
  struct nsh_task *t = c->current;

  if (t == NULL || t->co != L) {
    lua_pushboolean(L, 0);
    return 1;
  }
  start_sleep(L, c, t);
  t->waiting = 1;
  lua_pushboolean(L, 1);
  return 1;
}


static int sleep_wait_p(lua_State *L) {
  struct sleeper *s = lua_touserdata(L, 1);

  return wait_in_place(L, nsh_ctx_of(L), &s->fired, 0);
}


static int lsleep_wait(lua_State *L) {
  struct nsh_ctx *c = ctx(L);
  struct sleeper *s;
  int err;

  luaL_checknumber(L, 1);
  s = start_sleep(L, c, NULL);
  err = lua_cpcall(L, sleep_wait_p, s);
  uv_close((uv_handle_t *)&s->timer, free_handle);
  return err == 0 ? 0 : lua_error(L);
}

/* ---- Small things ------------------------------------------------------ */

static int lworker_id(lua_State *L) {
  lua_pushinteger(L, ctx(L)->id);
  return 1;
}


static int lthreads(lua_State *L) {
  lua_pushinteger(L, nshost_runtime_threads(ctx(L)->rt));
  return 1;
}


/* os.exit in a script: stop the workers first, then leave.  Jobs still
 * running are cancelled at once, as the process is going away. */
static int los_exit(lua_State *L) {
  nshost_runtime_shutdown(ctx(L)->rt, 0);
  nsh_job_report_all(ctx(L));
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 0);
  return 0;
}


static int los_exit_worker(lua_State *L) {
  return luaL_error(L, "os.exit cannot be called in a job on worker %d; "
                       "return from the job, or call os.exit in the main "
                       "script", ctx(L)->id);
}

/* print that writes each line with one call, so lines printed by jobs
 * on several workers at once do not mix. */
static int lprint(lua_State *L) {
  int n = lua_gettop(L), i;
  luaL_Buffer b;
  const char *s;
  size_t len;

  lua_getglobal(L, "tostring");
  luaL_buffinit(L, &b);
  for (i = 1; i <= n; i++) {
    lua_pushvalue(L, n + 1);
    lua_pushvalue(L, i);
    lua_call(L, 1, 1);
    if (!lua_isstring(L, -1))
      return luaL_error(L, "'tostring' must return a string to 'print'");
    if (i > 1)
      luaL_addchar(&b, '\t');
    luaL_addvalue(&b);
  }
  luaL_addchar(&b, '\n');
  luaL_pushresult(&b);
  s = lua_tolstring(L, -1, &len);
  fwrite(s, 1, len, stdout);
  return 0;
}

/* ---- Opening ----------------------------------------------------------- */

/* Sets the table at t's name to f with the upvalues c and the job
 * metatable (at mt). */
static void set_fn(lua_State *L, struct nsh_ctx *c, int t, int mt,
                   const char *name, lua_CFunction f) {
  lua_pushlightuserdata(L, c);
  lua_pushvalue(L, mt);
  lua_pushcclosure(L, f, 2);
  lua_setfield(L, t, name);
}


/* spawn has five more upvalues: see publish_paths. */
static void set_spawn(lua_State *L, struct nsh_ctx *c, int t, int mt) {
  lua_pushlightuserdata(L, c);
  lua_pushvalue(L, mt);
  lua_getglobal(L, "package");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
  }
  lua_pushliteral(L, "path");
  lua_pushliteral(L, "cpath");
  lua_pushnil(L);
  lua_pushnil(L);
  lua_pushcclosure(L, lspawn, 7);
  lua_setfield(L, t, "spawn");
}


static void load_module(lua_State *L, const char *name) {
  const struct nsh_lua_source *s;
  char chunk[64];

  for (s = nsh_lua_sources; s->name != NULL; s++)
    if (strcmp(s->name, name) == 0)
      break;
  /* The sources are compiled in: a missing one is a build error. */
  if (s->name == NULL)
    abort();
  snprintf(chunk, sizeof(chunk), "=[nshost %s]", name);
  if (luaL_loadbuffer(L, s->code, s->len, chunk) != 0)
    lua_error(L);
}


void nsh_lruntime_open(struct nsh_ctx *c, lua_State *L) {
  static const struct { const char *name; lua_CFunction f; } core[] = {
    { "done", ldone }, { "park", lpark },
    { "wait", lwait }, { "result", lresult },
    { "sleep_park", lsleep_park }, { "sleep_wait", lsleep_wait },
    { "worker_id", lworker_id }, { "threads", lthreads },
    { "in_task", lin_task },
    { NULL, NULL }
  };
  /* What lua/runtime.lua gives the C side: the job runner, the codec's
   * helpers. */
  static const struct { const char *name; size_t ref; } helpers[] = {
    { "run_job", offsetof(struct nsh_ctx, runner_ref) },
    { "has_children", offsetof(struct nsh_ctx, children_ref) },
    { "cdata_kind", offsetof(struct nsh_ctx, cdata_kind_ref) },
    { "new_int64", offsetof(struct nsh_ctx, new_int64_ref) },
    { "put_numbers", offsetof(struct nsh_ctx, put_numbers_ref) },
    { "get_numbers", offsetof(struct nsh_ctx, get_numbers_ref) },
    { NULL, 0 }
  };
  int i, mt;

  c->loop.data = c;
  load_module(L, "runtime");
  lua_newtable(L);
  luaL_newmetatable(L, JOB_MT);          /* module core mt */
  mt = lua_gettop(L);
  for (i = 0; core[i].name != NULL; i++)
    set_fn(L, c, mt - 1, mt, core[i].name, core[i].f);
  set_spawn(L, c, mt - 1, mt);
  set_fn(L, c, mt, mt, "__gc", job_gc);
  set_fn(L, c, mt, mt, "__tostring", job_tostring);
  lua_newtable(L);
  lua_setfield(L, -2, "__index");
  lua_setfield(L, -2, "job_mt");
  lua_pushvalue(L, -1);
  lua_insert(L, -3);                     /* core module core */
  lua_call(L, 1, 1);                     /* core runtime */
  for (i = 0; helpers[i].name != NULL; i++) {
    lua_getfield(L, -2, helpers[i].name);
    *(int *)((char *)c + helpers[i].ref) = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lua_getfield(L, -2, "call_named");
  lua_setfield(L, LUA_REGISTRYINDEX, "nshost.call");
  lua_getfield(L, -2, "eval_chunk");
  lua_setfield(L, LUA_REGISTRYINDEX, "nshost.eval");
  lua_remove(L, -2);

  lua_pushvalue(L, -1);
  lua_setglobal(L, "runtime");
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaded");
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "runtime");
  lua_pop(L, 3);

  lua_pushcfunction(L, lprint);
  lua_setglobal(L, "print");

  lua_getglobal(L, "os");
  if (c->id == 0) {
    lua_pushlightuserdata(L, c);
    lua_getfield(L, -2, "exit");
    lua_pushcclosure(L, los_exit, 2);
  } else {
    lua_pushlightuserdata(L, c);
    lua_pushcclosure(L, los_exit_worker, 1);
  }
  lua_setfield(L, -2, "exit");
  lua_pop(L, 1);
}
