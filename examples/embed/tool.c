/*
 * tool.c - tooling-style use of libnshost: a C program that runs one Lua
 * chunk over many inputs on the worker pool and prints the results in
 * the order of the inputs, whatever order they finish in.
 *
 *   tool FILE...
 *
 * For each file: its lines, words (runs of letters) and bytes, like
 * wc, and its most frequent word.  The workers read and count the
 * files.  Exit status 1 if a file could not be counted.
 */
#ifndef _POSIX_C_SOURCE
# define _POSIX_C_SOURCE 200809L   /* strndup */
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nshost.h"

/* Runs on a worker with the file name as `...`. */
static const char count_chunk[] =
  "local path = ...\n"
  "local f, err = io.open(path, 'rb')\n"
  "if not f then error(err, 0) end\n"
  "local text = f:read('*a')\n"
  "f:close()\n"
  "local _, lines = text:gsub('\\n', '')\n"
  "local words, seen, top, most = 0, {}, '', 0\n"
  "for w in text:gmatch('%a+') do\n"
  "  w = w:lower()\n"
  "  words = words + 1\n"
  "  local k = (seen[w] or 0) + 1\n"
  "  seen[w] = k\n"
  "  -- ties go to the word first in alphabetical order\n"
  "  if k > most or (k == most and w < top) then top, most = w, k end\n"
  "end\n"
  "return lines, words, #text, top, most\n";

struct row {
  int status;                   /* 0, or the job's error code */
  double n[3];                  /* lines, words, bytes */
  char top[64];
  int most;
  char *error;                  /* the message, without the traceback */
};


/* Runs inside nshost_client_poll.  The result is valid only here, so
 * what we keep is copied out. */
static void on_counted(const nshost_result_t *r, void *ud) {
  struct row *row = ud;
  const char *top, *e = nshost_result_error(r);
  size_t len = 0;
  int i;

  row->status = nshost_result_status(r);
  if (row->status != 0) {
    if (e == NULL)
      e = nshost_strerror(row->status);
    row->error = strndup(e, strcspn(e, "\n"));
    return;
  }
  for (i = 0; i < 3; i++)
    row->n[i] = nshost_result_number(r, i);
  top = nshost_result_string(r, 3, &len);
  snprintf(row->top, sizeof(row->top), "%.*s", (int)len, top ? top : "");
  row->most = (int)nshost_result_number(r, 4);
}


int main(int argc, char **argv) {
  nshost_runtime_t *rt = NULL;
  nshost_client_t *c = NULL;
  nshost_args_t *a = nshost_args_new();
  struct row *rows = calloc((size_t)argc, sizeof(*rows));
  double total[3] = { 0, 0, 0 };
  int i, k, err, status = 0;

  if (argc < 2) {
    fprintf(stderr, "usage: tool FILE...\n");
    return 2;
  }
  err = a != NULL && rows != NULL ? 0 : NSHOST_ENOMEM;
  if (err == 0)
    err = nshost_runtime_new(&rt, NULL);   /* a worker per CPU */
  if (err == 0)
    err = nshost_client_new(rt, NULL, &c); /* outcomes come by polling */
  for (i = 1; i < argc && err == 0; i++) {
    nshost_args_clear(a);
    nshost_args_string(a, argv[i], strlen(argv[i]));
    /* Each outcome goes to its own row, so the order is kept. */
    err = nshost_eval(c, 0, count_chunk, a, on_counted, &rows[i]);
  }
  if (err != 0) {
    fprintf(stderr, "tool: %s\n", nshost_strerror(err));
    return 1;
  }
  while (nshost_client_pending(c) > 0)
    nshost_client_poll(c, 1000);

  for (i = 1; i < argc; i++) {
    if (rows[i].status != 0) {
      fprintf(stderr, "tool: %s\n", rows[i].error != NULL ?
              rows[i].error : nshost_strerror(rows[i].status));
      free(rows[i].error);
      status = 1;
      continue;
    }
    for (k = 0; k < 3; k++)
      total[k] += rows[i].n[k];
    printf("%7.0f %7.0f %7.0f  %-12s %4d  %s\n", rows[i].n[0],
           rows[i].n[1], rows[i].n[2], rows[i].top, rows[i].most, argv[i]);
  }
  if (argc > 2)
    printf("%7.0f %7.0f %7.0f  total\n", total[0], total[1], total[2]);

  nshost_client_free(c);
  nshost_runtime_free(rt);
  nshost_args_free(a);
  free(rows);
  return status;
}
