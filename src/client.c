/*
 * client.c - work from C: argument builders, clients that receive the
 * outcomes of jobs in callbacks, nshost_call and nshost_eval.
 *
 * A client is a context without a Lua state: its inbox receives the
 * outcomes, and each one goes to the callback given with the job.
 */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "nsh.h"

#define MAX_NESTING 64

struct nshost_args_s {
  struct nsh_buf b;
  int count;                   /* values at the top level */
  int depth;                   /* tables open */
  char want_value[MAX_NESTING];  /* per open table: a key was given */
};

struct nshost_result_s {
  struct nsh_msg *m;
  char *error;                 /* NUL-terminated copy, when it failed */
  int n;                       /* values, or -1: the message is bad */
  const char **at;
};

struct nshost_client_s {
  struct nsh_ctx c;
  uv_loop_t *loop;             /* the embedder's, or NULL: c.loop */
  uv_thread_t owner;
  long delivered;
};

/* ---- Arguments --------------------------------------------------------- */

nshost_args_t *nshost_args_new(void) {
  return calloc(1, sizeof(nshost_args_t));
}


void nshost_args_clear(nshost_args_t *a) {
  if (a == NULL)
    return;
  a->b.len = 0;
  a->count = 0;
  a->depth = 0;
}


void nshost_args_free(nshost_args_t *a) {
  if (a == NULL)
    return;
  nsh_buf_free(&a->b);
  free(a);
}


/* Counts a value at the top, or flips key/value in the open table.
 * is_key_ok: the value may stand as a key (not nil). */
static int add(nshost_args_t *a, int kind, const void *p, size_t n,
               int is_key_ok) {
  char *want;
  int err;

  if (a == NULL)
    return NSHOST_EINVAL;
  want = a->depth > 0 ? &a->want_value[a->depth - 1] : NULL;
  if (want != NULL && !*want && !is_key_ok)
    return NSHOST_EINVAL;
  err = nsh_wire_put(&a->b, kind, p, n);
  if (err != 0)
    return err;
  if (want != NULL)
    *want = !*want;
  else
    a->count++;
  return 0;
}


int nshost_args_nil(nshost_args_t *a) {
  return add(a, NSHOST_TNIL, NULL, 0, 0);
}


int nshost_args_boolean(nshost_args_t *a, int b) {
  return add(a, NSHOST_TBOOLEAN, NULL, b != 0, 1);
}


int nshost_args_number(nshost_args_t *a, double x) {
  lua_Number v = x;

  /* NaN cannot be a key in Lua. */
  return add(a, NSHOST_TNUMBER, &v, sizeof(v), x == x);
}


int nshost_args_string(nshost_args_t *a, const char *s, size_t len) {
  if (s == NULL && len > 0)
    return NSHOST_EINVAL;
  return add(a, NSHOST_TSTRING, s != NULL ? s : "", len, 1);
}


int nshost_args_table(nshost_args_t *a) {
  int err;

  if (a == NULL || a->depth == MAX_NESTING)
    return NSHOST_EINVAL;
  err = add(a, NSHOST_TTABLE, NULL, 0, 1);
  if (err != 0)
    return err;
  /* The table counts as one value; its contents are its own. */
  a->want_value[a->depth++] = 0;
  return 0;
}


int nshost_args_end(nshost_args_t *a) {
  int err;

  if (a == NULL || a->depth == 0 || a->want_value[a->depth - 1])
    return NSHOST_EINVAL;
  err = nsh_wire_put(&a->b, NSHOST_TOTHER, NULL, 0);
  if (err == 0)
    a->depth--;
  return err;
}

/* ---- Results ----------------------------------------------------------- */

const char *nsh_job_error_text(struct nsh_msg *m, size_t *len,
                               const char **rest, size_t *restlen);


int nshost_result_status(const nshost_result_t *r) {
  if (r == NULL)
    return NSHOST_EINVAL;
  switch (r->m->status) {
  case NSH_JOB_OK: return r->n >= 0 ? 0 : NSHOST_EMALFORMED;
  case NSH_JOB_FAILED: return NSHOST_ELUA;
  default: return NSHOST_ESHUTDOWN;
  }
}


const char *nshost_result_error(const nshost_result_t *r) {
  return r != NULL ? r->error : NULL;
}


int nshost_result_worker(const nshost_result_t *r) {
  return r != NULL ? r->m->worker : NSHOST_EINVAL;
}


int nshost_result_count(const nshost_result_t *r) {
  return r != NULL && r->n > 0 ? r->n : 0;
}


int nshost_result_type(const nshost_result_t *r, int i) {
  return r != NULL && i >= 0 && i < r->n ? nsh_wire_type(r->at[i])
                                         : NSHOST_TNIL;
}


int nshost_result_boolean(const nshost_result_t *r, int i) {
  return nshost_result_type(r, i) == NSHOST_TBOOLEAN &&
         nsh_wire_true(r->at[i]);
}


double nshost_result_number(const nshost_result_t *r, int i) {
  lua_Number x;

  if (nshost_result_type(r, i) != NSHOST_TNUMBER)
    return 0;
  memcpy(&x, r->at[i] + 1, sizeof(x));
  return x;
}


const char *nshost_result_string(const nshost_result_t *r, int i,
                                 size_t *len) {
  size_t n;

  if (nshost_result_type(r, i) != NSHOST_TSTRING)
    return NULL;
  return nsh_wire_string(r->at[i], r->m->data + r->m->len,
                         len != NULL ? len : &n);
}


int nshost_result_push(const nshost_result_t *r, lua_State *L) {
  struct nsh_ctx *c, plain;
  int n;

  if (r == NULL || L == NULL)
    return NSHOST_EINVAL;
  if (r->m->status != NSH_JOB_OK)
    return nshost_result_status(r);
  c = nsh_ctx_of(L);
  if (c == NULL) {
    /* A state of the embedder's own: it lacks the standard names and
     * the 64-bit integer maker, which only matters if those came. */
    memset(&plain, 0, sizeof(plain));
    plain.new_int64_ref = LUA_NOREF;
    plain.children_ref = LUA_NOREF;
    plain.put_numbers_ref = LUA_NOREF;
    plain.get_numbers_ref = LUA_NOREF;
    c = &plain;
  }
  n = nsh_codec_decode(c, L, r->m->data, r->m->len);
  if (n < 0) {
    lua_pop(L, 1);
    return NSHOST_EMALFORMED;
  }
  return n;
}


/* Called on the client's thread for each outcome that arrives. */
void nsh_client_deliver(struct nsh_ctx *c, struct nsh_msg *m) {
  struct nshost_client_s *cl = (struct nshost_client_s *)c;
  struct nsh_job *j = m->job;
  nshost_result_t r;
  const char *text, *rest;
  size_t len, restlen;

  memset(&r, 0, sizeof(r));
  r.m = m;
  j->status = m->status;
  j->result = m;
  c->inflight--;
  if (m->status == NSH_JOB_OK) {
    r.n = nsh_wire_index(m->data, m->len, &r.at);
  } else if (m->status == NSH_JOB_FAILED) {
    text = nsh_job_error_text(m, &len, &rest, &restlen);
    r.error = malloc(len + 1);
    if (r.error != NULL) {
      memcpy(r.error, text, len);
      r.error[len] = '\0';
    }
  }
  if (j->cb != NULL) {
    j->awaited = 1;
    j->cb(&r, j->cb_ud);
  } else {
    nsh_job_report(c, j);
  }
  cl->delivered++;
  free(r.error);
  free(r.at);
  nsh_job_release(j);
  nsh_runtime_job_ended(c->rt);
}

/* ---- Clients ----------------------------------------------------------- */

static void on_client_inbox(struct nsh_inbox *ib) {
  struct nsh_ctx *c = ib->data;
  struct nsh_msg *m, *next;

  for (m = nsh_inbox_take(&c->inbox); m != NULL; m = next) {
    next = m->next;
    nsh_client_deliver(c, m);
  }
}


int nshost_client_new(nshost_runtime_t *rt, uv_loop_t *loop,
                      nshost_client_t **out) {
  nshost_client_t *cl;

  if (rt == NULL || out == NULL)
    return NSHOST_EINVAL;
  *out = NULL;
  cl = calloc(1, sizeof(*cl));
  if (cl == NULL)
    return NSHOST_ENOMEM;
  cl->c.rt = rt;
  cl->c.id = -1;
  cl->c.new_int64_ref = LUA_NOREF;
  cl->c.children_ref = LUA_NOREF;
  cl->c.put_numbers_ref = LUA_NOREF;
  cl->c.get_numbers_ref = LUA_NOREF;
  cl->loop = loop;
  cl->owner = uv_thread_self();
  if (loop == NULL && uv_loop_init(&cl->c.loop) != 0) {
    free(cl);
    return NSHOST_ENOMEM;
  }
  if (nsh_inbox_init(&cl->c.inbox, loop != NULL ? loop : &cl->c.loop,
                     on_client_inbox, &cl->c) != 0) {
    if (loop == NULL)
      uv_loop_close(&cl->c.loop);
    free(cl);
    return NSHOST_ENOMEM;
  }
  *out = cl;
  return 0;
}


static int on_owner_thread(const nshost_client_t *cl) {
  uv_thread_t self = uv_thread_self();

  return uv_thread_equal(&cl->owner, &self);
}


long nshost_client_pending(const nshost_client_t *cl) {
  return cl != NULL ? cl->c.inflight : 0;
}


static void on_poll_timeout(uv_timer_t *t) {
  (void)t;
}


int nshost_client_poll(nshost_client_t *cl, int timeout_ms) {
  uv_timer_t timer;
  long before;

  if (cl == NULL || cl->loop != NULL)
    return NSHOST_EINVAL;
  if (!on_owner_thread(cl))
    return NSHOST_EWRONGTHREAD;
  before = cl->delivered;
  if (timeout_ms > 0) {
    /* A timer bounds the wait; an outcome ends it sooner. */
    uv_timer_init(&cl->c.loop, &timer);
    uv_timer_start(&timer, on_poll_timeout, (uint64_t)timeout_ms, 0);
    uv_run(&cl->c.loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&timer, NULL);
  }
  uv_run(&cl->c.loop, UV_RUN_NOWAIT);
  return (int)(cl->delivered - before);
}


/* Builds [helper, name, args...] and queues it. */
static int submit(nshost_client_t *cl, int worker, const char *helper,
                  const char *text, const nshost_args_t *args,
                  nshost_result_cb cb, void *ud) {
  struct nsh_buf b = { NULL, 0, 0 };
  struct nsh_msg *m;
  struct nsh_job *j;
  int n = args != NULL ? args->count : 0, err;
  unsigned char head[10];
  size_t k = 0;
  uint64_t v = (uint64_t)n + 2;

  if (cl == NULL || text == NULL || (args != NULL && args->depth != 0))
    return NSHOST_EINVAL;
  if (!on_owner_thread(cl))
    return NSHOST_EWRONGTHREAD;
  do {
    head[k] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    k++;
  } while ((v >>= 7) != 0);
  if (nsh_buf_reserve(&b, k) != 0)
    return NSHOST_ENOMEM;
  memcpy(b.data, head, k);
  b.len = k;
  err = nsh_wire_put(&b, NSH_WIRE_STD, helper, strlen(helper));
  if (err == 0)
    err = nsh_wire_put(&b, NSHOST_TSTRING, text, strlen(text));
  m = err == 0 ? nsh_msgpool_take(&cl->c.msgs, NSH_MSG_JOB,
                                  b.len + (args ? args->b.len : 0))
               : NULL;
  j = m != NULL ? calloc(1, sizeof(*j)) : NULL;
  if (j == NULL) {
    free(m);
    nsh_buf_free(&b);
    return err != 0 ? err : NSHOST_ENOMEM;
  }
  memcpy(m->data, b.data, b.len);
  if (args != NULL && args->b.len > 0)
    memcpy(m->data + b.len, args->b.data, args->b.len);
  nsh_buf_free(&b);

  atomic_init(&j->refs, 1);    /* only the message: no Lua handle */
  j->origin = &cl->c;
  j->cb = cb;
  j->cb_ud = ud;
  snprintf(j->site, sizeof(j->site), "C: %.54s", text);
  m->job = j;
  nsh_runtime_job_added(cl->c.rt);
  err = nsh_runtime_post(cl->c.rt, m, worker);
  if (err != 0) {
    nsh_runtime_job_ended(cl->c.rt);
    free(m);
    free(j);
    return err;
  }
  cl->c.inflight++;
  return 0;
}


int nshost_call(nshost_client_t *cl, int worker, const char *fn,
                const nshost_args_t *args, nshost_result_cb cb, void *ud) {
  return submit(cl, worker, "nshost.call", fn, args, cb, ud);
}


int nshost_eval(nshost_client_t *cl, int worker, const char *chunk,
                const nshost_args_t *args, nshost_result_cb cb, void *ud) {
  return submit(cl, worker, "nshost.eval", chunk, args, cb, ud);
}


static void free_client(uv_handle_t *h) {
  struct nshost_client_s *cl = h->data;

  nsh_inbox_destroy(&cl->c.inbox);
  free(cl);
}


void nshost_client_free(nshost_client_t *cl) {
  struct nsh_msg *m, *next;

  if (cl == NULL)
    return;
  /* Outcomes still on their way would land in freed memory. */
  while (cl->c.inflight > 0 && !nsh_runtime_stopping(cl->c.rt))
    uv_run(cl->loop != NULL ? cl->loop : &cl->c.loop, UV_RUN_ONCE);
  if (cl->c.inflight > 0 && nsh_runtime_stuck(cl->c.rt) > 0)
    return;   /* a stuck worker may still answer: keep the inbox */
  for (m = nsh_inbox_close(&cl->c.inbox); m != NULL; m = next) {
    next = m->next;
    nsh_client_deliver(&cl->c, m);
  }
  nsh_msgpool_free(&cl->c.msgs);
  if (cl->loop != NULL) {
    /* The embedder's loop frees the client when it closes the handle. */
    cl->c.inbox.poll.data = cl;
    uv_close((uv_handle_t *)&cl->c.inbox.poll, free_client);
    return;
  }
  uv_close((uv_handle_t *)&cl->c.inbox.poll, NULL);
  uv_run(&cl->c.loop, UV_RUN_DEFAULT);
  uv_loop_close(&cl->c.loop);
  nsh_inbox_destroy(&cl->c.inbox);
  free(cl);
}
