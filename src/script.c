/*
 * script.c - a script state: a Lua state on the embedder's (or the
 * nshost program's) own thread, where the main script runs as a task.
 */
#include <stdlib.h>

#include <lauxlib.h>

#include "nsh.h"

struct nshost_script_s {
  struct nsh_ctx c;
};


int nshost_script_new(nshost_runtime_t *rt, nshost_script_t **out) {
  nshost_script_t *s;
  int err;

  if (rt == NULL || out == NULL)
    return NSHOST_EINVAL;
  *out = NULL;
  s = calloc(1, sizeof(*s));
  if (s == NULL)
    return NSHOST_ENOMEM;
  err = nsh_ctx_init(&s->c, rt, 0);
  if (err != 0) {
    nsh_log(rt, NSHOST_LOG_ERROR, "cannot set up a script state: %s",
            uv_strerror(err));
    free(s);
    return err == UV_ENOMEM ? NSHOST_ENOMEM : NSHOST_ETHREAD;
  }
  err = nsh_ctx_open_lua(&s->c);
  if (err != 0) {
    nsh_inbox_close(&s->c.inbox);
    nsh_ctx_close(&s->c);
    nsh_inbox_destroy(&s->c.inbox);
    free(s);
    return err;
  }
  *out = s;
  return 0;
}


lua_State *nshost_script_lua(nshost_script_t *s) {
  return s != NULL ? s->c.L : NULL;
}


/* The main task was waiting when a signal came: it stays parked (a job
 * or timer may still point at it) until the script is freed. */
static int abandon(struct nsh_ctx *c, struct nsh_task *t) {
  lua_State *L = c->L;

  nsh_ctx_uninterrupt(c);
  t->abandoned = 1;
  t->next = c->tasks;
  c->tasks = t;
  lua_pushfstring(L, "interrupted by signal %d",
                  atomic_load(&c->interrupted));
  luaL_traceback(L, t->co, NULL, 0);
  return NSHOST_ELUA;
}


void nshost_script_interrupt(nshost_script_t *s, int signum) {
  if (s == NULL)
    return;
  atomic_store(&s->c.interrupted, signum != 0 ? signum : -1);
  nsh_ctx_interrupt(&s->c);
  nsh_inbox_signal(&s->c.inbox);
}


int nshost_script_interrupted(nshost_script_t *s) {
  return s != NULL ? atomic_load(&s->c.interrupted) : 0;
}


static int run(nshost_script_t *s, int nargs) {
  struct nsh_ctx *c;
  struct nsh_task *t;
  lua_State *L;

  c = &s->c;
  L = c->L;
  /* Under the same runner as jobs, so an error keeps the traceback of
   * where it happened, lines included. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->runner_ref);
  lua_insert(L, -(nargs + 2));
  t = nsh_task_new(c, nargs + 1);
  if (t == NULL)
    return NSHOST_ENOMEM;
  nsh_runtime_set_home(c->rt, c);
  c->main_done = 0;
  nsh_task_ready(c, t);

  /* Run until the script has returned and every job of the runtime has
   * ended; an error ends the run at once. */
  for (;;) {
    nsh_ctx_run_ready(c);
    /* The runner returns false when the script raised. */
    if (c->main_done && (t->status != 0 || !lua_toboolean(t->co, 1) ||
                         nsh_runtime_jobs(c->rt) == 0))
      break;
    if (atomic_load(&c->interrupted) != 0 && !c->main_done)
      return abandon(c, t);
    if (atomic_load(&c->interrupted) != 0)
      break;
    nsh_ctx_turn(c);
  }
  nsh_ctx_uninterrupt(c);

  if (t->status == 0 && lua_toboolean(t->co, 1)) {
    nsh_task_free(c, t);
    return 0;
  }
  if (t->status == 0 && lua_istable(t->co, 2)) {
    /* The runner caught it: {value, traceback}. */
    lua_rawgeti(t->co, 2, 1);
    lua_rawgeti(t->co, 2, 2);
    lua_xmove(t->co, L, 2);
  } else {
    lua_xmove(t->co, L, 1);
    luaL_traceback(L, t->co, NULL, 0);
  }
  nsh_task_free(c, t);
  return NSHOST_ELUA;
}


int nshost_script_run(nshost_script_t *s, int nargs) {
  struct nsh_ctx *prev;
  int err;

  if (s == NULL || nargs < 0 || lua_gettop(s->c.L) < nargs + 1)
    return NSHOST_EINVAL;
  prev = nsh_ctx_enter(&s->c);
  err = run(s, nargs);
  nsh_ctx_enter(prev);
  return err;
}


void nshost_script_free(nshost_script_t *s) {
  struct nsh_ctx *c;
  struct nsh_msg *m, *next;
  struct nsh_task *t;

  if (s == NULL)
    return;
  c = &s->c;

  /* Workers may still answer this state's jobs: wait for those answers,
   * unless the runtime has stopped (then they are all in). */
  while (c->inflight > 0 && !nsh_runtime_stopping(c->rt))
    nsh_ctx_turn(c);
  if (c->inflight > 0 && nsh_runtime_stuck(c->rt) > 0)
    return;   /* a stuck worker may still answer: keep the inbox */
  nsh_runtime_clear_home(c->rt, c);
  for (m = nsh_inbox_close(&c->inbox); m != NULL; m = next) {
    next = m->next;
    nsh_job_finish(c, m);
  }
  while ((t = c->tasks) != NULL) {
    c->tasks = t->next;
    nsh_task_free(c, t);
  }
  nsh_ctx_close(c);
  nsh_inbox_destroy(&c->inbox);
  nsh_msgpool_free(&c->msgs);
  free(s);
}
