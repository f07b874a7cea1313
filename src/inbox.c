/*
 * inbox.c - the queue every context reads its messages from.
 *
 * A mutex-guarded list with a batch take: producers hold the lock for a
 * pointer swap, and the consumer empties the list in one go, so the lock
 * is taken once per batch on the reading side.
 */
#include <stdlib.h>

#include "nsh.h"


struct nsh_msg *nsh_msg_new(int kind, size_t len) {
  struct nsh_msg *m;

  m = malloc(sizeof(*m) + len);
  if (m == NULL)
    return NULL;
  m->next = NULL;
  m->kind = kind;
  m->status = 0;
  m->worker = 0;
  m->job = NULL;
  m->len = len;
  return m;
}


int nsh_inbox_init(struct nsh_inbox *ib, uv_loop_t *loop, uv_async_cb cb) {
  int err;

  ib->head = NULL;
  ib->tail = NULL;
  ib->closed = 0;
  err = uv_mutex_init(&ib->lock);
  if (err != 0)
    return err;
  err = uv_async_init(loop, &ib->async, cb);
  if (err != 0) {
    uv_mutex_destroy(&ib->lock);
    return err;
  }
  return 0;
}


int nsh_inbox_push(struct nsh_inbox *ib, struct nsh_msg *m) {
  int was_empty;

  m->next = NULL;
  uv_mutex_lock(&ib->lock);
  if (ib->closed) {
    uv_mutex_unlock(&ib->lock);
    return -1;
  }
  was_empty = ib->head == NULL;
  if (was_empty)
    ib->head = m;
  else
    ib->tail->next = m;
  ib->tail = m;

  /* A non-empty list means a wake-up is already on its way: the consumer
   * empties the list only after it has been woken.  The send happens
   * under the lock so that it cannot race with closing the handle. */
  if (was_empty)
    uv_async_send(&ib->async);
  uv_mutex_unlock(&ib->lock);
  return 0;
}


struct nsh_msg *nsh_inbox_take(struct nsh_inbox *ib) {
  struct nsh_msg *m;

  uv_mutex_lock(&ib->lock);
  m = ib->head;
  ib->head = NULL;
  ib->tail = NULL;
  uv_mutex_unlock(&ib->lock);
  return m;
}


struct nsh_msg *nsh_inbox_close(struct nsh_inbox *ib) {
  struct nsh_msg *m;

  uv_mutex_lock(&ib->lock);
  ib->closed = 1;
  m = ib->head;
  ib->head = NULL;
  ib->tail = NULL;
  uv_mutex_unlock(&ib->lock);
  return m;
}


void nsh_inbox_wake(struct nsh_inbox *ib) {
  uv_mutex_lock(&ib->lock);
  if (!ib->closed)
    uv_async_send(&ib->async);
  uv_mutex_unlock(&ib->lock);
}


void nsh_inbox_destroy(struct nsh_inbox *ib) {
  uv_mutex_destroy(&ib->lock);
}
