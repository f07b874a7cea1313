/*
 * check.h - the checks the C tests share.  Each failure prints both
 * values as a TAP comment and is counted; main() reads the counts.
 */
#ifndef NSH_CHECK_H
#define NSH_CHECK_H

#include <stdio.h>
#include <string.h>

static int failures, count;

#define CHECK(x) check_int(__FILE__, __LINE__, #x, (long)!!(x), 1)
#define CHECK_INT(a, b) check_int(__FILE__, __LINE__, #a, (long)(a), (long)(b))
#define CHECK_STR(a, b) check_str(__FILE__, __LINE__, #a, (a), (b))
#define CHECK_HAS(a, b) check_has(__FILE__, __LINE__, #a, (a), (b))

static inline void check_int(const char *file, int line, const char *what,
                      long got, long want) {
  count++;
  if (got == want)
    return;
  failures++;
  printf("# %s:%d: %s: got %ld, want %ld\n", file, line, what, got, want);
}


static inline void check_str(const char *file, int line, const char *what,
                      const char *got, const char *want) {
  count++;
  if (got != NULL && want != NULL && strcmp(got, want) == 0)
    return;
  if (got == NULL && want == NULL)
    return;
  failures++;
  printf("# %s:%d: %s: got \"%s\", want \"%s\"\n", file, line, what,
         got != NULL ? got : "(null)", want != NULL ? want : "(null)");
}


/* got contains want. */
static inline void check_has(const char *file, int line, const char *what,
                      const char *got, const char *want) {
  count++;
  if (got != NULL && strstr(got, want) != NULL)
    return;
  failures++;
  printf("# %s:%d: %s: \"%s\" does not contain \"%s\"\n", file, line,
         what, got != NULL ? got : "(null)", want);
}

/* A test: its name, its function, and a known bug it shows (or NULL:
 * then a failure counts). */
struct check_test {
  const char *name;
  void (*fn)(void);
  const char *todo;
};

/* Runs the n tests, printing TAP; returns the exit status. */
static inline int run_tests(const struct check_test *tests, int n) {
  int i, before, bad = 0;

  printf("1..%d\n", n);
  for (i = 0; i < n; i++) {
    before = failures;
    tests[i].fn();
    printf("%s %d - %s", failures == before ? "ok" : "not ok", i + 1,
           tests[i].name);
    if (tests[i].todo != NULL)
      printf(" # TODO %s", tests[i].todo);
    else
      bad += failures != before;
    printf("\n");
  }
  printf("# %d checks, %d failed\n", count, failures);
  return bad == 0 ? 0 : 1;
}

#endif
