/*
 * job.c - a job's life on its spawner's side: the outcome arrives,
 * waiters wake, and an error nobody saw is reported, never lost.
 */
#include <stdlib.h>
#include <string.h>

#include "nsh.h"


void nsh_job_release(struct nsh_job *j) {
  if (atomic_fetch_sub(&j->refs, 1) != 1)
    return;
  free(j->result);
  free(j);
}


/* The text of a FAILED outcome: message and traceback. */
const char *nsh_job_error_text(struct nsh_msg *m, size_t *len,
                               const char **rest, size_t *restlen) {
  const unsigned char *p = (const unsigned char *)m->data;
  const unsigned char *end = p + m->len;
  size_t n = 0;
  int shift = 0;

  while (p < end) {
    n |= (size_t)(*p & 0x7f) << shift;
    shift += 7;
    if (!(*p++ & 0x80))
      break;
  }
  if (n > (size_t)(end - p))
    n = (size_t)(end - p);
  *len = n;
  *rest = (const char *)p + n;
  *restlen = (size_t)(end - p) - n;
  return (const char *)p;
}


void nsh_job_seen(struct nsh_ctx *c, struct nsh_job *j) {
  j->awaited = 1;
  if (!j->listed)
    return;
  j->listed = 0;
  if (j->fprev != NULL)
    j->fprev->fnext = j->fnext;
  else
    c->failed = j->fnext;
  if (j->fnext != NULL)
    j->fnext->fprev = j->fprev;
}


void nsh_job_report_all(struct nsh_ctx *c) {
  while (c->failed != NULL)
    nsh_job_report(c, c->failed);
}


void nsh_job_report(struct nsh_ctx *c, struct nsh_job *j) {
  const char *text, *rest;
  size_t len, restlen;

  if (j->status != NSH_JOB_FAILED || j->awaited)
    return;
  nsh_job_seen(c, j);
  text = nsh_job_error_text(j->result, &len, &rest, &restlen);
  nsh_runtime_unhandled(c->rt);
  nsh_log(c->rt, NSHOST_LOG_ERROR, "worker %d: a job spawned at %s:%d "
          "failed and nobody awaited it: %.*s", j->result->worker, j->site,
          j->line, (int)len, text);
}


void nsh_job_finish(struct nsh_ctx *c, struct nsh_msg *m) {
  struct nsh_job *j = m->job;
  struct nsh_task *t, *next;

  j->status = m->status;
  j->result = m;
  c->inflight--;
  for (t = j->waiters; t != NULL; t = next) {
    next = t->wnext;
    t->wnext = NULL;
    nsh_task_ready(c, t);
  }
  j->waiters = NULL;
  if (!j->has_handle) {
    nsh_job_report(c, j);
  } else if (j->status == NSH_JOB_FAILED) {
    /* Kept until someone awaits it or the handle goes, so that exit
     * can report it if neither happens. */
    j->listed = 1;
    j->fprev = NULL;
    j->fnext = c->failed;
    if (c->failed != NULL)
      c->failed->fprev = j;
    c->failed = j;
  }
  nsh_job_release(j);
  nsh_runtime_job_ended(c->rt);
}


void nsh_job_reply(nshost_runtime_t *rt, struct nsh_msg *m) {
  struct nsh_job *j = m->job;

  if (nsh_inbox_push(&j->origin->inbox, m) == 0)
    return;
  /* The spawner has closed: nobody is left to see the outcome. */
  free(m);
  nsh_job_release(j);
  nsh_runtime_job_ended(rt);
}
