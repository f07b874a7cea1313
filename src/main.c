/*
 * main.c - the nshost program.  It runs a Lua script the way `luajit`
 * does, with `runtime` in its globals, and owns the exit status.  It uses
 * only the public API (nshost.h) and Lua's.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
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
  "  --placement P        random (default): each job to a random worker;\n"
  "                       p2c: to the less busy of two random workers\n"
  "  --worker-memory MB   limit each worker's Lua memory; a job that goes\n"
  "                       past it fails with \"not enough memory\"\n"
  "  -h, --help           print this help\n"
  "  --                   stop handling options\n"
  "  -                    run the script from standard input\n";

struct options {
  int placement;
  int worker_mb;
  int threads;
  int shutdown_ms;
  int allow_unhandled;
  int version;
  int first_arg;      /* argv index of the script, or argc */
  int nexec;          /* -e and -l, in the order given */
  char kind[64];
  const char *exec[64];
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
    { "worker-memory", required_argument, NULL, 'M' },
    { "placement", required_argument, NULL, 'P' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  const char *env = getenv("NSHOST_THREADS");
  int ch;

  opterr = 0;
  /* "+": stop at the script name, as luajit does. */
  while ((ch = getopt_long(argc, argv, "+:e:l:vt:h", longs, NULL)) != -1) {
    switch (ch) {
    case 'e':
    case 'l':
      if (o->nexec == (int)(sizeof(o->exec) / sizeof(o->exec[0]))) {
        fputs("nshost: too many -e and -l options (at most 64)\n", stderr);
        exit(1);
      }
      o->kind[o->nexec] = (char)ch;
      o->exec[o->nexec++] = optarg;
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
    case 'M':
      o->worker_mb = parse_count("--worker-memory", optarg, 1, 1 << 20);
      break;
    case 'P':
      if (strcmp(optarg, "random") == 0)
        o->placement = NSHOST_PLACE_RANDOM;
      else if (strcmp(optarg, "p2c") == 0)
        o->placement = NSHOST_PLACE_P2C;
      else {
        fprintf(stderr, "nshost: bad value for --placement: '%s' (expected "
                "random or p2c)\n", optarg);
        exit(1);
      }
      break;
    case 'h':
      fputs(usage_text, stdout);
      exit(0);
    case ':':
      fprintf(stderr, "nshost: option '%s' needs a value\n",
              argv[optind - 1]);
      fputs(usage_text, stderr);
      exit(1);
    default:
      fprintf(stderr, "nshost: unknown option '%s'\n", argv[optind - 1]);
      fputs(usage_text, stderr);
      exit(1);
    }
  }
  /* The command line wins over the environment. */
  if (o->threads == 0 && env != NULL && env[0] != '\0')
    o->threads = parse_count("NSHOST_THREADS", env, 1, 4096);
  o->first_arg = optind;
}


/* A closed standard descriptor would be reused by the next open file
 * (libuv's own, among others) and written to by mistake: point it at
 * /dev/null instead, as daemons do. */
static void keep_std_fds(void) {
  int fd;

  for (fd = 0; fd <= 2; fd++)
    if (fcntl(fd, F_GETFD) == -1 && errno == EBADF &&
        open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY) != fd)
      _exit(127);
}


/* The text of an error value; a __tostring that fails is caught. */
static int describe(lua_State *L) {
  if (luaL_callmeta(L, 1, "__tostring") && lua_isstring(L, -1))
    return 1;
  if (lua_isstring(L, 1))
    lua_pushvalue(L, 1);
  else
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  return 1;
}


/* Prints an error the way lua.c does; nil prints nothing. */
static void report(lua_State *L, int has_traceback) {
  int e = lua_gettop(L) - has_traceback;
  const char *msg;

  if (lua_isnil(L, e))
    return;
  /* No collection while the error is described: a finalizer it ran
   * could raise an error here, outside any protected call. */
  lua_gc(L, LUA_GCSTOP, 0);
  lua_pushcfunction(L, describe);
  lua_pushvalue(L, e);
  if (lua_pcall(L, 1, 1, 0) != 0)
    msg = lua_pushfstring(L, "(error object is a %s value whose "
                          "__tostring failed: %s)", luaL_typename(L, e),
                          lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
  else
    msg = lua_tostring(L, -1);
  fprintf(stderr, "nshost: %s\n", msg);
  if (has_traceback)
    fprintf(stderr, "%s\n", lua_tostring(L, e + 1));
  fflush(stderr);
  lua_gc(L, LUA_GCRESTART, 0);
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


/* -e and -l, in the order given. */
static int run_execs(nshost_script_t *s, const struct options *o) {
  lua_State *L = nshost_script_lua(s);
  const char *val;
  int i;

  for (i = 0; i < o->nexec; i++) {
    val = o->exec[i];
    if (o->kind[i] == 'e') {
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
  if (argc - script - 1 > 7000) {
    /* LuaJIT passes at most about 8000 values in one call. */
    fprintf(stderr, "nshost: too many arguments to the script (%d; at "
            "most 7000 can be passed as '...')\n", argc - script - 1);
    return 1;
  }
  luaL_checkstack(L, argc - script, "too many arguments to script");
  for (i = script + 1; i < argc; i++)
    lua_pushstring(L, argv[i]);
  return run(s, argc - script - 1);
}


/* ---- Signals ----------------------------------------------------------- */

/* The script a first SIGINT or SIGTERM interrupts; NULL once it is being
 * freed.  Workers block these signals, so the handler runs here. */
static nshost_script_t *volatile interrupt_target;
static volatile sig_atomic_t got_signal;
static int grace_s = 6;     /* the shutdown timeout and a second, rounded up */


/* Code compiled by LuaJIT does not see the interrupt; if the program is
 * still here well past the shutdown timeout, it ends anyway. */
static void on_alarm(int sig) {
  static const char msg[] = "nshost: still running after the shutdown "
                            "timeout; exiting\n";

  (void)sig;
  if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
    got_signal = got_signal;
  _exit(128 + (got_signal != 0 ? got_signal : SIGALRM));
}


static void on_signal(int sig) {
  nshost_script_t *s = interrupt_target;

  if (got_signal != 0 || s == NULL) {
    /* The second one ends the process at once, with the status the
     * shell expects of a death by this signal. */
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  got_signal = sig;
  signal(SIGALRM, on_alarm);
  alarm((unsigned)grace_s);
  nshost_script_interrupt(s, sig);
}


static void catch_signals(nshost_script_t *s) {
  struct sigaction sa;

  interrupt_target = s;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}


static void print_version(void) {
  printf("nshost %s -- %s\n", nshost_version_string(), LUAJIT_VERSION);
}


int main(int argc, char **argv) {
  struct options o;
  nshost_config_t cfg;
  nshost_runtime_t *rt;
  nshost_script_t *s;
  int status, err, script;

  memset(&o, 0, sizeof(o));
  o.shutdown_ms = 5000;
  keep_std_fds();
  parse(argc, argv, &o);
  script = o.first_arg;
  if (o.version)
    print_version();
  if (script >= argc && o.nexec == 0 && isatty(STDIN_FILENO)) {
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
  cfg.worker_memory = (size_t)o.worker_mb << 20;
  cfg.placement = o.placement;
  err = nshost_runtime_new(&rt, &cfg);
  if (err == 0)
    err = nshost_script_new(rt, &s);
  if (err != 0) {
    fprintf(stderr, "nshost: cannot start: %s\n", nshost_strerror(err));
    return 1;
  }

  grace_s = o.shutdown_ms / 1000 + 2;
  catch_signals(s);
  set_arg(nshost_script_lua(s), argc, argv, script);
  status = run_init(s);
  if (status == 0)
    status = run_execs(s, &o);
  if (status == 0 && script < argc)
    status = run_script(s, argc, argv, script);
  else if (status == 0 && o.nexec == 0 && !o.version) {
    /* No script and no -e: read the script from standard input. */
    if (luaL_loadfile(nshost_script_lua(s), NULL) != 0)
      status = load_failed(nshost_script_lua(s));
    else
      status = run(s, 0);
  }

  if (nshost_runtime_shutdown(rt, o.shutdown_ms) == NSHOST_ETIMEDOUT) {
    fflush(stdout);
    /* A worker is stuck in a job: it cannot be freed. */
    _exit(got_signal != 0 ? 128 + got_signal : 1);
  }
  interrupt_target = NULL;
  nshost_script_free(s);
  if (got_signal != 0)
    status = 128 + got_signal;
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
