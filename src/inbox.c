/*
 * inbox.c - the queue every context reads its messages from.
 *
 * A mutex-guarded list with a batch take: producers hold the lock for a
 * pointer swap, and the consumer empties the list in one go, so the lock
 * is taken once per batch on the reading side.
 *
 * The consumer sleeps in its libuv loop on an eventfd.  libuv's own
 * uv_async_t would do, but in libuv 1.44 (Debian 12) a woken loop spins
 * while the sender finishes its write, which costs tens of microseconds
 * per wake-up whenever both threads share a CPU.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

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
  m->len = m->cap = len;
  return m;
}


/* Bounds on what a pool keeps: 64 messages of up to 16 KiB, 1 MiB. */
#define POOL_MAX_MSGS 64
#define POOL_MAX_BYTES (16 * 1024)

struct nsh_msg *nsh_msgpool_take(struct nsh_msgpool *p, int kind,
                                 size_t len) {
  struct nsh_msg *m = p->own;

  if (m == NULL && atomic_load_explicit(&p->given, memory_order_relaxed))
    m = atomic_exchange_explicit(&p->given, NULL, memory_order_acquire);
  if (m == NULL)
    return nsh_msg_new(kind, len);
  p->own = m->next;
  atomic_fetch_sub_explicit(&p->ngiven, 1, memory_order_relaxed);
  /* Messages of one function have one size; another size is a miss. */
  if (m->cap < len || m->cap > 2 * len + 256) {
    free(m);
    return nsh_msg_new(kind, len);
  }
  m->next = NULL;
  m->kind = kind;
  m->status = 0;
  m->worker = 0;
  m->job = NULL;
  m->len = len;
  return m;
}


void nsh_msgpool_give(struct nsh_msgpool *p, struct nsh_msg *m) {
  struct nsh_msg *head;

  if (m->cap > POOL_MAX_BYTES) {
    free(m);
    return;
  }
  if (atomic_fetch_add_explicit(&p->ngiven, 1, memory_order_relaxed) >=
      POOL_MAX_MSGS) {
    atomic_fetch_sub_explicit(&p->ngiven, 1, memory_order_relaxed);
    free(m);
    return;
  }
  /* Only the owner pops, and it takes the whole stack at once, so a
   * push cannot be fooled by a head that was popped and pushed again. */
  head = atomic_load_explicit(&p->given, memory_order_relaxed);
  do
    m->next = head;
  while (!atomic_compare_exchange_weak_explicit(&p->given, &head, m,
                                                memory_order_release,
                                                memory_order_relaxed));
}


void nsh_msgpool_free(struct nsh_msgpool *p) {
  struct nsh_msg *m, *next;

  for (m = atomic_exchange(&p->given, NULL); m != NULL; m = next) {
    next = m->next;
    free(m);
  }
  for (m = p->own; m != NULL; m = next) {
    next = m->next;
    free(m);
  }
  p->own = NULL;
  atomic_store(&p->ngiven, 0);
}


static void on_readable(uv_poll_t *p, int status, int events) {
  struct nsh_inbox *ib = p->data;
  uint64_t n;

  (void)status;
  (void)events;
  /* Reset the counter first: a push after this read writes again. */
  while (read(ib->fd, &n, sizeof(n)) < 0 && errno == EINTR)
    ;
  ib->cb(ib);
}


int nsh_inbox_init(struct nsh_inbox *ib, uv_loop_t *loop, nsh_inbox_cb cb,
                   void *data) {
  int err;

  ib->head = NULL;
  ib->tail = NULL;
  ib->closed = 0;
  ib->watched = 0;
  atomic_init(&ib->sleeping, 0);
  ib->cb = cb;
  ib->data = data;
  ib->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (ib->fd < 0)
    return -errno;
  err = uv_mutex_init(&ib->lock);
  if (err == 0) {
    err = uv_poll_init(loop, &ib->poll, ib->fd);
    if (err != 0)
      uv_mutex_destroy(&ib->lock);
  }
  if (err != 0) {
    close(ib->fd);
    return err;
  }
  ib->poll.data = ib;
  uv_poll_start(&ib->poll, UV_READABLE, on_readable);
  return 0;
}


void nsh_inbox_signal(struct nsh_inbox *ib) {
  uint64_t one = 1;

  /* Async-signal-safe.  A full counter (EAGAIN) is already a wake-up. */
  while (write(ib->fd, &one, sizeof(one)) < 0 && errno == EINTR)
    ;
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
   * empties the list only after it has been woken, or when it looks
   * before sleeping.  A watched consumer that is not about to sleep
   * will look before it does.  The write happens under the lock so that
   * it cannot race with closing the inbox, nor with nsh_inbox_sleep. */
  if (was_empty && (!ib->watched ||
                    atomic_load_explicit(&ib->sleeping,
                                         memory_order_relaxed)))
    nsh_inbox_signal(ib);
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


int nsh_inbox_sleep(struct nsh_inbox *ib) {
  int queued;

  /* Set before looking, under the lock that pushes take: a push either
   * comes before the look (and is seen) or sees the flag (and wakes). */
  atomic_store_explicit(&ib->sleeping, 1, memory_order_relaxed);
  uv_mutex_lock(&ib->lock);
  queued = ib->head != NULL;
  if (queued)
    atomic_store_explicit(&ib->sleeping, 0, memory_order_relaxed);
  uv_mutex_unlock(&ib->lock);
  return queued;
}


void nsh_inbox_awake(struct nsh_inbox *ib) {
  atomic_store_explicit(&ib->sleeping, 0, memory_order_relaxed);
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
    nsh_inbox_signal(ib);
  uv_mutex_unlock(&ib->lock);
}


/* After the poll handle has been closed. */
void nsh_inbox_destroy(struct nsh_inbox *ib) {
  uv_mutex_destroy(&ib->lock);
  if (ib->fd >= 0)
    close(ib->fd);
  ib->fd = -1;
}
