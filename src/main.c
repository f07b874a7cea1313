/*
 * main.c - the nshost program.  It runs a Lua script the way `luajit`
 * does, with `runtime` in its globals, and owns the exit status.  It uses
 * only the public API (nshost.h) and Lua's.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>

#include "nshost.h"

static const char usage_text[] =
  "usage: nshost [options] [script [args]]\n"
  "Runs a Lua script with `runtime` to spread work over worker threads.\n"
  "\n"
  "  -e chunk             run the string 'chunk'\n"
  "  -l name              require library 'name'\n"
  "  -v                   print version information\n"
  "  -t, --threads N      number of worker threads (default: one per CPU,\n"
  "                       or NSHOST_THREADS)\n"
  "  --shutdown-timeout MS  how long jobs still running at exit may take\n"
  "                       before they are cancelled (default 5000)\n"
  "  --allow-unhandled    exit 0 even if a job failed and nobody awaited it\n"
  "  -h, --help           print this help\n"
  "  --                   stop handling options\n"
  "  -                    run the script from standard input\n";

struct options {
  int threads;
  int shutdown_ms;
  int allow_unhandled;
  int version;
  int first_arg;      /* argv index of the script, or argc */
  int has_exec;       /* some -e or -l was given */
};


static void log_stderr(int level, const char *line, void *ud) {
  size_t n = strlen(line);
  char *buf = malloc(n + 10);

  (void)level;
  (void)ud;
  if (buf == NULL)
    return;
  /* One write per line, so lines from several workers do not mix. */
  memcpy(buf, "nshost: ", 8);
  memcpy(buf + 8, line, n);
  buf[n + 8] = '\n';
  if (write(STDERR_FILENO, buf, n + 9) < 0)
    errno = 0;
  free(buf);
}


static int parse_count(const char *what, const char *s, int lo, int hi) {
  char *end;
  long v;

  errno = 0;
  v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
    fprintf(stderr, "nshost: bad value for %s: '%s' (expected a whole "
            "number from %d to %d)\n", what, s, lo, hi);
    exit(1);
  }
  return (int)v;
}


/* First pass: nshost's own options.  -e and -l are only checked here;
 * they run in order later, once the state exists. */
static void parse(int argc, char **argv, struct options *o) {
  static const struct option longs[] = {
    { "threads", required_argument, NULL, 't' },
    { "shutdown-timeout", required_argument, NULL, 'S' },
    { "allow-unhandled", no_argument, NULL, 'U' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  const char *env = getenv("NSHOST_THREADS");
  int ch;

  if (env != NULL && env[0] != '\0')
    o->threads = parse_count("NSHOST_THREADS", env, 1, 4096);
  opterr = 0;
  /* "+": stop at the script name, as luajit does. */
  while ((ch = getopt_long(argc, argv, "+e:l:vt:h", longs, NULL)) != -1) {
    switch (ch) {
    case 'e':
    case 'l':
      o->has_exec = 1;
      break;
    case 'v':
      o->version = 1;
      break;
    case 't':
      o->threads = parse_count("--threads", optarg, 1, 4096);
      break;
    case 'S':
      o->shutdown_ms = parse_count("--shutdown-timeout", optarg, 0,
                                   86400000);
      break;
    case 'U':
      o->allow_unhandled = 1;
      break;
    case 'h':
      fputs(usage_text, stdout);
      exit(0);
    default:
      if (optopt != 0)
        fprintf(stderr, "nshost: unknown option '-%c' or missing value\n",
                optopt);
      else
        fprintf(stderr, "nshost: unknown option '%s'\n", argv[optind - 1]);
      fputs(usage_text, stderr);
      exit(1);
    }
  }
  o->first_arg = optind;
}


/* Prints an error the way lua.c does; nil prints nothing. */
static void report(lua_State *L, int has_traceback) {
  int e = lua_gettop(L) - has_traceback;
  const char *msg;

  if (lua_isnil(L, e))
    return;
  if (luaL_callmeta(L, e, "__tostring") && lua_isstring(L, -1))
    msg = lua_tostring(L, -1);
  else if (lua_isstring(L, e))
    msg = lua_tostring(L, e);
  else
    msg = lua_pushfstring(L, "(error object is a %s value)",
                          luaL_typename(L, e));
  fprintf(stderr, "nshost: %s\n", msg);
  if (has_traceback)
    fprintf(stderr, "%s\n", lua_tostring(L, e + 1));
  fflush(stderr);
}


/* Runs the function under nargs arguments as the main task. */
static int run(nshost_script_t *s, int nargs) {
  lua_State *L = nshost_script_lua(s);
  int err = nshost_script_run(s, nargs);

  if (err == 0)
    return 0;
  if (err == NSHOST_ELUA) {
    report(L, 1);
    lua_settop(L, 0);
  } else {
    fprintf(stderr, "nshost: %s\n", nshost_strerror(err));
  }
  return 1;
}


/* A chunk that failed to load: report it like an error. */
static int load_failed(lua_State *L) {
  report(L, 0);
  lua_settop(L, 0);
  return 1;
}


static int run_init(nshost_script_t *s) {
  lua_State *L = nshost_script_lua(s);
  const char *init = getenv("LUA_INIT");
  int st;

  if (init == NULL)
    return 0;
  if (init[0] == '@')
    st = luaL_loadfile(L, init + 1);
  else
    st = luaL_loadbuffer(L, init, strlen(init), "=LUA_INIT");
  return st != 0 ? load_failed(L) : run(s, 0);
}


/* Second pass over the options: -e and -l, in the order given. */
static int run_execs(nshost_script_t *s, int argc, char **argv) {
  lua_State *L = nshost_script_lua(s);
  int i;

  for (i = 1; i < argc && argv[i][0] == '-'; i++) {
    const char *o = argv[i], *val;
    if (strcmp(o, "--") == 0 || strcmp(o, "-") == 0)
      break;
    if (o[1] != 'e' && o[1] != 'l') {
      /* Skip the value of options that take one. */
      if (strcmp(o, "-t") == 0 || strcmp(o, "--threads") == 0 ||
          strcmp(o, "--shutdown-timeout") == 0)
        i++;
      continue;
    }
    val = o[2] != '\0' ? o + 2 : argv[++i];
    if (o[1] == 'e') {
      if (luaL_loadbuffer(L, val, strlen(val), "=(command line)") != 0)
        return load_failed(L);
      if (run(s, 0) != 0)
        return 1;
    } else {
      lua_getglobal(L, "require");
      lua_pushstring(L, val);
      if (run(s, 1) != 0)
        return 1;
    }
  }
  return 0;
}


static void set_arg(lua_State *L, int argc, char **argv, int script) {
  int i;

  lua_createtable(L, argc - script, script);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}


static int run_script(nshost_script_t *s, int argc, char **argv,
                      int script) {
  lua_State *L = nshost_script_lua(s);
  const char *name = argv[script];
  int i, st;

  if (strcmp(name, "-") == 0 && strcmp(argv[script - 1], "--") != 0)
    st = luaL_loadfile(L, NULL);
  else
    st = luaL_loadfile(L, name);
  if (st != 0)
    return load_failed(L);
  luaL_checkstack(L, argc - script, "too many arguments to script");
  for (i = script + 1; i < argc; i++)
    lua_pushstring(L, argv[i]);
  return run(s, argc - script - 1);
}


static void print_version(void) {
  printf("nshost %s -- %s\n", nshost_version_string(), LUAJIT_VERSION);
}


int main(int argc, char **argv) {
  struct options o = { 0, 5000, 0, 0, 0, 0 };
  nshost_config_t cfg;
  nshost_runtime_t *rt;
  nshost_script_t *s;
  int status, err, script;

  parse(argc, argv, &o);
  script = o.first_arg;
  if (o.version)
    print_version();
  if (script >= argc && !o.has_exec && isatty(STDIN_FILENO)) {
    if (o.version)
      return 0;
    fputs("nshost: no script given, and there is no interactive mode\n",
          stderr);
    fputs(usage_text, stderr);
    return 1;
  }

  nshost_config_init(&cfg);
  cfg.threads = o.threads;
  cfg.shutdown_timeout_ms = o.shutdown_ms;
  cfg.log = log_stderr;
  err = nshost_runtime_new(&rt, &cfg);
  if (err == 0)
    err = nshost_script_new(rt, &s);
  if (err != 0) {
    fprintf(stderr, "nshost: cannot start: %s\n", nshost_strerror(err));
    return 1;
  }

  set_arg(nshost_script_lua(s), argc, argv, script);
  status = run_init(s);
  if (status == 0)
    status = run_execs(s, script, argv);
  if (status == 0 && script < argc)
    status = run_script(s, argc, argv, script);
  else if (status == 0 && !o.has_exec && !o.version) {
    /* No script and no -e: read the script from standard input. */
    if (luaL_loadfile(nshost_script_lua(s), NULL) != 0)
      status = load_failed(nshost_script_lua(s));
    else
      status = run(s, 0);
  }

  if (nshost_runtime_shutdown(rt, o.shutdown_ms) == NSHOST_ETIMEDOUT) {
    fflush(stdout);
    _exit(1);   /* a worker is stuck in a job: it cannot be freed */
  }
  nshost_script_free(s);
  if (nshost_runtime_unhandled_errors(rt) > 0 && !o.allow_unhandled &&
      status == 0) {
    fprintf(stderr, "nshost: %ld job(s) failed and nobody awaited them; "
            "exiting with status 1 (--allow-unhandled to ignore)\n",
            nshost_runtime_unhandled_errors(rt));
    status = 1;
  }
  nshost_runtime_free(rt);
  return status;
}
