/*
 * worker.c - a worker thread: its loop, its state, its jobs.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "nsh.h"

void nsh_runtime_worker_exited(nshost_runtime_t *rt);

/* The context this thread runs: a worker's, set when it starts and
 * cleared when it exits, or a script's while it runs. */
static _Thread_local struct nsh_ctx *tls_ctx;


struct nsh_ctx *nsh_worker_self(void) {
  return tls_ctx != NULL && tls_ctx->id > 0 ? tls_ctx : NULL;
}


struct nsh_ctx *nsh_ctx_self(void) {
  return tls_ctx;
}


struct nsh_ctx *nsh_ctx_enter(struct nsh_ctx *c) {
  struct nsh_ctx *prev = tls_ctx;

  tls_ctx = c;
  return prev;
}

/* ---- Outcomes ---------------------------------------------------------- */

/* A result message with the context's scratch buffer in it: the job's
 * own message when the result fits and does not leave much of it unused
 * (a result is kept until its job handle goes: a number must not hold
 * on to the kilobytes its job came with), else a new one. */
#define MAX_UNUSED 256

static struct nsh_msg *scratch_msg(struct nsh_ctx *c, struct nsh_task *t,
                                   int status) {
  struct nsh_msg *m = t->msg;

  if (m != NULL && m->cap >= c->scratch.len &&
      m->cap - c->scratch.len <= MAX_UNUSED) {
    t->msg = NULL;
    m->next = NULL;
    m->kind = NSH_MSG_RESULT;
    m->job = NULL;
    m->len = c->scratch.len;
  } else {
    m = nsh_msg_new(NSH_MSG_RESULT, c->scratch.len);
    if (m == NULL)
      return NULL;
  }
  memcpy(m->data, c->scratch.data, c->scratch.len);
  m->status = status;
  m->worker = c->id;
  return m;
}


/* A FAILED outcome with a fixed text, made without Lua: for when the
 * state has no memory left to describe the error. */
static struct nsh_msg *text_failure(struct nsh_ctx *c, const char *text) {
  size_t n = strlen(text);
  struct nsh_msg *m = nsh_msg_new(NSH_MSG_RESULT, 2 + n + 1);

  if (m == NULL)
    return NULL;
  m->data[0] = (char)(n | 0x80);
  m->data[1] = (char)(n >> 7);
  memcpy(m->data + 2, text, n);
  m->data[2 + n] = 0;
  m->status = NSH_JOB_FAILED;
  m->worker = c->id;
  return m;
}


/* Sends j's outcome m home; m NULL means the job was cancelled. */
static void reply(struct nsh_ctx *c, struct nsh_job *j, struct nsh_msg *m) {
  if (m == NULL) {
    m = nsh_msg_new(NSH_MSG_RESULT, 0);
    /* Without even these few bytes the awaiter would wait for ever. */
    if (m == NULL)
      abort();
    m->status = NSH_JOB_CANCELLED;
    m->worker = c->id;
  }
  m->job = j;
  c->finished++;
  nsh_job_reply(c->rt, m);
}


struct fail_args {
  struct nsh_ctx *c;
  const char *prefix;
  lua_State *co;            /* for a traceback when none was taken */
  struct nsh_msg *out;
};

/* Builds a FAILED outcome from an error value and a traceback string (or
 * nil) passed as arguments 2 and 3.  Layout: varint length, the text
 * (message and traceback), a flag byte, then the value itself encoded
 * when it is not a string, so error({code = 7}) arrives as a table. */
/* Describes an error value as text.  Run protected: a __tostring
 * metamethod may fail too. */
static int describe_p(lua_State *L) {
  if (luaL_callmeta(L, 1, "__tostring") && lua_isstring(L, -1))
    return 1;
  if (lua_isstring(L, 1))
    lua_pushvalue(L, 1);
  else if (lua_isnil(L, 1))
    lua_pushliteral(L, "(error object is nil)");
  else
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  return 1;
}


/* Pushes prefix, the description at index desc (kept whole: it may hold
 * zero bytes), the reason at index why (if not 0) that the error value
 * stays behind, and what follows "stack traceback:" in tb (if not NULL)
 * under a heading that names the worker. */
static void push_failure_text(lua_State *L, struct nsh_ctx *c,
                              const char *prefix, int desc, int why,
                              const char *tb) {
  int n = 2;

  lua_pushstring(L, prefix);
  lua_pushvalue(L, desc);
  if (why != 0) {
    lua_pushliteral(L, " (the error value stays in the worker: ");
    lua_pushvalue(L, why);
    lua_pushliteral(L, ")");
    n += 3;
  }
  if (tb != NULL) {
    lua_pushfstring(L, "\nstack traceback (worker %d):%s", c->id, tb + 16);
    n++;
  }
  lua_concat(L, n);
}


static int fail_p(lua_State *L) {
  struct fail_args *a = lua_touserdata(L, 1);
  struct nsh_ctx *c = a->c;
  const char *s, *tb;
  size_t n, vlen = 0;
  int has_value, ti, desc;
  char *p;

  lua_settop(L, 3);
  if (lua_isnil(L, 3) && a->co != NULL) {
    luaL_traceback(L, a->co, NULL, 0);
    lua_replace(L, 3);
  }
  lua_pushcfunction(L, describe_p);
  lua_pushvalue(L, 2);
  if (lua_pcall(L, 1, 1, 0) != 0) {
    s = lua_tostring(L, -1);
    lua_pushfstring(L, "(error object is a %s value whose __tostring "
                    "failed: %s)", luaL_typename(L, 2), s ? s : "?");
    lua_remove(L, -2);
  }
  desc = lua_gettop(L);
  tb = lua_tostring(L, 3);
  if (tb != NULL)
    tb = strstr(tb, "stack traceback:");
  push_failure_text(L, c, a->prefix, desc, 0, tb);
  ti = lua_gettop(L);

  /* A value that is not a string travels too, when it can: error({code
   * = 7}) arrives as a table.  When it cannot, the text says why.  The
   * encoding comes last: an allocation after it could run a finalizer
   * that spawns over the scratch buffer. */
  has_value = 0;
  if (!lua_isstring(L, 2) && !lua_isnil(L, 2)) {
    has_value = nsh_codec_encode(c, L, 2, 1, "error value", 0) == 0;
    if (!has_value) {
      push_failure_text(L, c, a->prefix, desc, lua_gettop(L), tb);
      lua_replace(L, ti);
    }
  }
  lua_settop(L, ti);
  if (has_value)
    vlen = c->scratch.len;
  s = lua_tolstring(L, ti, &n);
  a->out = nsh_msg_new(NSH_MSG_RESULT, 10 + n + 1 + vlen);
  if (a->out == NULL)
    return 0;
  p = a->out->data;
  do {
    *p++ = (char)((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
  } while ((n >>= 7) != 0);
  s = lua_tolstring(L, ti, &n);
  memcpy(p, s, n);
  p += n;
  *p++ = (char)has_value;
  if (has_value)
    memcpy(p, c->scratch.data, vlen);
  a->out->len = (size_t)(p - a->out->data) + vlen;
  a->out->status = NSH_JOB_FAILED;
  a->out->worker = c->id;
  return 0;
}


static int collect_p(lua_State *L) {
  lua_gc(L, LUA_GCCOLLECT, 0);
  return 0;
}


/* A full collection, protected: finalizers run in it, and an error one
 * raises would otherwise end the process.  collect_p was made when the
 * worker started, so this allocates nothing: it runs when memory is out
 * too. */
static void collect(struct nsh_ctx *c) {
  lua_rawgeti(c->L, LUA_REGISTRYINDEX, c->collect_ref);
  if (lua_pcall(c->L, 0, 0, 0) != 0)
    lua_pop(c->L, 1);
}


/* The error value and a traceback (or nil) are the two values on top of
 * c->L; pops them. */
static struct nsh_msg *failed_msg(struct nsh_ctx *c, const char *prefix,
                                  lua_State *co) {
  struct fail_args a = { c, prefix, co, NULL };

  /* fail_p was made when the worker started: pushing it allocates
   * nothing, so this works when memory has run out too. */
  lua_rawgeti(c->L, LUA_REGISTRYINDEX, c->fail_ref);
  lua_pushlightuserdata(c->L, &a);
  lua_pushvalue(c->L, -4);
  lua_pushvalue(c->L, -4);
  if (lua_pcall(c->L, 3, 0, 0) != 0) {
    lua_pop(c->L, 1);
    c->encoding = 0;          /* an encoding there may have been cut short */
  }
  lua_pop(c->L, 2);
  /* Once shutdown has begun, its interrupt (a hook that raises errors in
   * any Lua code) is what stopped the description: the job is
   * cancelled, not out of memory. */
  if (a.out == NULL && atomic_load(&c->stopping))
    return NULL;
  if (a.out == NULL) {
    /* Most likely out of memory: say so rather than lose the job. */
    collect(c);
    a.out = text_failure(c, "not enough memory (and too little left to "
                            "describe the job's error)");
  }
  return a.out;
}


/* ---- Jobs -------------------------------------------------------------- */

struct start_args {
  struct nsh_ctx *c;
  struct nsh_msg *m;
  struct nsh_task *t;
};

/* Takes the package paths a script published since the last job. */
static void take_paths(struct nsh_ctx *c, lua_State *L) {
  char *path, *cpath;

  c->paths_version = nsh_runtime_get_paths(c->rt, &path, &cpath);
  lua_getglobal(L, "package");
  if (lua_istable(L, -1) && path != NULL && cpath != NULL) {
    lua_pushstring(L, path);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, cpath);
    lua_setfield(L, -2, "cpath");
  }
  lua_pop(L, 1);
  free(path);
  free(cpath);
}


/* Decodes a job onto a fresh task.  Runs protected, on c->L, so that
 * running out of memory is an error the job's awaiter gets. */
static int start_p(lua_State *L) {
  struct start_args *a = lua_touserdata(L, 1);
  int n;

  lua_settop(L, 0);
  if (nsh_runtime_paths_version(a->c->rt) != a->c->paths_version)
    take_paths(a->c, L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, a->c->runner_ref);
  n = nsh_codec_decode(a->c, L, a->m->data, a->m->len);
  if (n < 0)
    return lua_error(L);
  a->t = nsh_task_new(a->c, n);
  if (a->t == NULL)
    return luaL_error(L, "not enough memory");
  if (a->c->decoded_pool.slot >= 0) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->c->tasks_ref);
    lua_pushvalue(a->t->co, 2);
    lua_xmove(a->t->co, L, 1);
    a->t->fn_ref = luaL_ref(L, -2);
    a->t->pool = a->c->decoded_pool;
    lua_pop(L, 1);
  }
  return 0;
}


static void link_task(struct nsh_ctx *c, struct nsh_task *t) {
  t->prev = NULL;
  t->next = c->tasks;
  if (c->tasks != NULL)
    c->tasks->prev = t;
  c->tasks = t;
  c->ntasks++;
}


static void unlink_task(struct nsh_ctx *c, struct nsh_task *t) {
  if (t->prev != NULL)
    t->prev->next = t->next;
  else
    c->tasks = t->next;
  if (t->next != NULL)
    t->next->prev = t->prev;
  c->ntasks--;
}


static void cancel_msg(struct nsh_ctx *c, struct nsh_msg *m) {
  struct nsh_job *j = m->job;

  free(m);
  reply(c, j, NULL);
}


/* Calls one of the worker's protected steps (start_p, done_p) with ud.
 * Not lua_cpcall: that makes a new C closure every time, and without a
 * GC check, so a worker whose jobs allocate nothing else never collects
 * those. */
static int call_p(struct nsh_ctx *c, int ref, void *ud) {
  lua_rawgeti(c->L, LUA_REGISTRYINDEX, ref);
  lua_pushlightuserdata(c->L, ud);
  return lua_pcall(c->L, 1, 0, 0);
}


void nsh_worker_start_job(struct nsh_ctx *c, struct nsh_msg *m) {
  struct start_args a = { c, m, NULL };
  int status;

  if (atomic_load(&c->cancel) || c->L == NULL) {
    cancel_msg(c, m);
    return;
  }
  status = call_p(c, c->start_ref, &a);
  if (status != 0) {
    lua_pushnil(c->L);
    reply(c, m->job, failed_msg(c, "cannot start the job: ", NULL));
    free(m);
    return;
  }
  a.t->job = m->job;
  a.t->msg = m;
  link_task(c, a.t);
  nsh_task_resume(c, a.t);
}


struct done_args {
  struct nsh_ctx *c;
  struct nsh_task *t;
  struct nsh_msg *out;
};

/* Encodes the results of a job that returned: the job ran under the
 * runner (an xpcall), so they follow its `true`. */
static int done_p(lua_State *L) {
  struct done_args *a = lua_touserdata(L, 1);
  lua_State *co = a->t->co;
  int n = lua_gettop(co);

  lua_settop(L, 0);
  luaL_checkstack(L, n + 1, "too many results");
  lua_xmove(co, L, n);
  if (nsh_codec_encode(a->c, L, 2, n - 1, "result", 0) != 0)
    return lua_error(L);
  a->out = scratch_msg(a->c, a->t, NSH_JOB_OK);
  return 0;
}


void nsh_worker_job_done(struct nsh_ctx *c, struct nsh_task *t, int status) {
  struct done_args a = { c, t, NULL };
  lua_State *L = c->L;
  struct nsh_msg *m;

  if (status == 0 && lua_toboolean(t->co, 1)) {
    if (call_p(c, c->done_ref, &a) == 0)
      m = a.out;
    else {
      c->encoding = 0;        /* as in failed_msg */
      lua_pushnil(L);
      m = failed_msg(c, "the job's results cannot be returned: ", NULL);
    }
  } else if (atomic_load(&c->cancel)) {
    /* Past the shutdown deadline the failure is the interrupt's own
     * error: the job was cancelled, and describing that would run Lua
     * code that the interrupt stops in turn. */
    m = NULL;
  } else if (status == 0) {
    /* The runner caught the error: {value, traceback}, or a bare value
     * if even the handler failed. */
    lua_xmove(t->co, L, 1);
    if (lua_istable(L, -1) && lua_type(L, -1) == LUA_TTABLE) {
      lua_rawgeti(L, -1, 1);
      lua_rawgeti(L, -2, 2);
      lua_remove(L, -3);
    } else {
      lua_pushnil(L);
    }
    m = failed_msg(c, "", NULL);
  } else {
    lua_xmove(t->co, L, 1);
    lua_pushnil(L);
    m = failed_msg(c, "", t->co);
  }
  /* Before the reply: once that is in, the spawner may close. */
  if (t->msg != NULL) {
    nsh_msgpool_give(&t->job->origin->msgs, t->msg);
    t->msg = NULL;
  }
  reply(c, t->job, m);
  unlink_task(c, t);
  nsh_task_free(c, t);
  /* LuaJIT does not collect when an allocation fails: after a job that
   * ran a limited worker out of memory, collect now, while the job's
   * garbage is garbage, so that the next job has room. */
  if (c->mem_limit > 0 && c->mem_used > c->mem_limit / 2)
    collect(c);
}


/* ---- The thread -------------------------------------------------------- */

static void name_thread(struct nsh_ctx *c) {
  char name[16];

  /* Linux keeps 15 characters; the index goes last so it survives. */
  snprintf(name, sizeof(name), "%.*s-%d", c->id < 10 ? 13 : 11,
           nsh_runtime_config(c->rt)->name, c->id);
  pthread_setname_np(pthread_self(), name);
}


/* After the loop: cancel what is queued and what is still running. */
static void drain(struct nsh_ctx *c) {
  struct nsh_msg *m, *next;
  struct nsh_task *t;

  for (m = nsh_inbox_close(&c->inbox); m != NULL; m = next) {
    next = m->next;
    if (m->kind == NSH_MSG_JOB)
      cancel_msg(c, m);
    else
      nsh_job_finish(c, m);
  }
  while ((m = c->jobs) != NULL) {
    c->jobs = m->next;
    cancel_msg(c, m);
  }
  while ((t = c->tasks) != NULL) {
    reply(c, t->job, NULL);
    unlink_task(c, t);
    nsh_task_free(c, t);
  }
}


void nsh_worker_main(void *arg) {
  struct nsh_ctx *c = arg;
  sigset_t set;

  /* Signals are the main thread's to handle. */
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  tls_ctx = c;
  name_thread(c);
  if (nsh_ctx_open_lua(c) != 0) {
    nsh_log(c->rt, NSHOST_LOG_ERROR, "worker %d: cannot create a Lua "
            "state (not enough memory); its jobs are cancelled", c->id);
    atomic_store(&c->cancel, 1);
  } else {
    lua_pushcfunction(c->L, fail_p);
    c->fail_ref = luaL_ref(c->L, LUA_REGISTRYINDEX);
    lua_pushcfunction(c->L, start_p);
    c->start_ref = luaL_ref(c->L, LUA_REGISTRYINDEX);
    lua_pushcfunction(c->L, done_p);
    c->done_ref = luaL_ref(c->L, LUA_REGISTRYINDEX);
    lua_pushcfunction(c->L, collect_p);
    c->collect_ref = luaL_ref(c->L, LUA_REGISTRYINDEX);
  }

  for (;;) {
    nsh_ctx_run_ready(c);
    /* Told once per pass rather than per job: the count is shared with
     * every spawning thread. */
    nsh_runtime_jobs_done(c->rt, c->id, c->finished);
    c->finished = 0;
    if (atomic_load(&c->cancel))
      break;
    if (atomic_load(&c->stopping) && c->ntasks == 0 && c->rlen == 0 &&
        c->jobs == NULL)
      break;
    nsh_ctx_turn(c);
  }

  /* Out of the loop is what shutdown waits for: what follows is
   * finite, though closing a big state can take a while. */
  atomic_store(&c->exited, 1);
  nsh_runtime_worker_exited(c->rt);
  nsh_ctx_uninterrupt(c);
  drain(c);
  nsh_ctx_close(c);
  tls_ctx = NULL;
}
