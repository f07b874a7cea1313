/*
 * game_server.c - a game-server-like host for libnshost.
 *
 * A fixed-rate tick loop (20 ticks a second) owns the world: a grid
 * with walls and entities walking to goals.  Each tick it hands the
 * entities' path-finding to the Lua workers in batches (ai.think in
 * ai.lua) and applies the moves they chose on the next tick.  The
 * workers read the world through host functions that the setup hook
 * puts in every Lua state: game.map(), game.entity(id), game.tick().
 *
 * The server has no libuv loop: its client is polled, and polling is
 * also how the loop sleeps until the next tick.
 *
 *   game_server [-n entities] [-t ticks] [-w workers] [-d dir of ai.lua]
 *
 * With -t 0 (the default) it runs until SIGINT.  Then it prints how long
 * each tick waited for Lua and how many ticks ran late.
 */
#ifndef _POSIX_C_SOURCE
# define _POSIX_C_SOURCE 200809L
#endif
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "nshost.h"

#ifndef GAME_AI_DIR
# define GAME_AI_DIR "."
#endif

#define TICK_HZ 20
#define BATCHES 16               /* jobs per tick */
#define BUDGET 32                /* cells A* may expand per entity */
#define MAP_W 128
#define MAP_H 128

struct entity { int x, y, gx, gy; };   /* where it is, where it goes */

/* Workers read the world during a tick; the tick loop writes it only
 * while no job is out, so nobody reads a half-written entity. */
struct world {
  char map[MAP_W * MAP_H];       /* '#' wall, '.' floor; never changes */
  struct entity *e;
  int n;
  long tick;
  uint64_t rng;
  const char *dir;               /* where ai.lua is */
};

/* A slice of the entities: one job per tick thinks about it. */
struct batch {
  int first, count;
  unsigned char *moves;          /* the answer: one byte per entity */
  int answered;
};

static volatile sig_atomic_t stop;
static int failed;

static void on_sigint(int sig) {
  (void)sig;
  stop = 1;
}


static void *must(void *p) {
  if (p == NULL) {
    fprintf(stderr, "game_server: out of memory\n");
    exit(1);
  }
  return p;
}


static uint64_t now_ns(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}


/* A random floor cell (xorshift: the same world every run). */
static void random_floor(struct world *w, int *x, int *y) {
  do {
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    *x = (int)(w->rng % MAP_W);
    *y = (int)(w->rng / MAP_W % MAP_H);
  } while (w->map[*y * MAP_W + *x] == '#');
}


static void make_world(struct world *w, int n) {
  int x, y, i;

  w->rng = 0x9e3779b97f4a7c15u;
  for (i = 0; i < MAP_W * MAP_H; i++) {
    x = i % MAP_W;
    y = i / MAP_W;
    w->map[i] = x == 0 || y == 0 || x == MAP_W - 1 || y == MAP_H - 1 ||
                (x * 7 + y * 13) % 11 == 0 ? '#' : '.';
  }
  w->e = must(calloc((size_t)n, sizeof(*w->e)));
  w->n = n;
  for (i = 0; i < n; i++) {
    random_floor(w, &w->e[i].x, &w->e[i].y);
    random_floor(w, &w->e[i].gx, &w->e[i].gy);
  }
}

/* ---- Host functions: `game` in every Lua state -------------------------- */

/* game.map() -> width, height, the cells as a string */
static int l_map(lua_State *L) {
  struct world *w = lua_touserdata(L, lua_upvalueindex(1));

  lua_pushinteger(L, MAP_W);
  lua_pushinteger(L, MAP_H);
  lua_pushlstring(L, w->map, sizeof(w->map));
  return 3;
}


/* game.entity(id) -> x, y, goal x, goal y; ids from 1 */
static int l_entity(lua_State *L) {
  struct world *w = lua_touserdata(L, lua_upvalueindex(1));
  lua_Integer id = luaL_checkinteger(L, 1);
  const struct entity *e;

  luaL_argcheck(L, id >= 1 && id <= w->n, 1, "no such entity");
  e = &w->e[id - 1];
  lua_pushinteger(L, e->x);
  lua_pushinteger(L, e->y);
  lua_pushinteger(L, e->gx);
  lua_pushinteger(L, e->gy);
  return 4;
}


/* game.tick() -> the number of the tick being thought about */
static int l_tick(lua_State *L) {
  struct world *w = lua_touserdata(L, lua_upvalueindex(1));

  lua_pushinteger(L, (lua_Integer)w->tick);
  return 1;
}


/* Runs once in each new Lua state, on the thread that owns it. */
static int setup(lua_State *L, int worker_id, void *ud) {
  static const luaL_Reg fns[] = {
    { "map", l_map }, { "entity", l_entity }, { "tick", l_tick },
    { NULL, NULL }
  };
  struct world *w = ud;
  const luaL_Reg *f;

  (void)worker_id;
  lua_newtable(L);
  for (f = fns; f->name != NULL; f++) {
    lua_pushlightuserdata(L, w);
    lua_pushcclosure(L, f->func, 1);
    lua_setfield(L, -2, f->name);
  }
  lua_setglobal(L, "game");
  /* So that require("ai") finds ai.lua. */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s", w->dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 2);
  return 0;
}


static void log_line(int level, const char *line, void *ud) {
  (void)level;
  (void)ud;
  fprintf(stderr, "nshost: %s\n", line);
}

/* ---- The tick loop ------------------------------------------------------ */

/* Runs inside nshost_client_poll, on the tick loop's thread. */
static void on_moves(const nshost_result_t *r, void *ud) {
  struct batch *b = ud;
  size_t len;
  const char *s = nshost_result_string(r, 0, &len);

  if (nshost_result_status(r) == 0 && s != NULL && len == (size_t)b->count) {
    memcpy(b->moves, s, len);
    b->answered = 1;
    return;
  }
  /* The first failure tells the story; the rest would repeat it. */
  if (!failed)
    fprintf(stderr, "game_server: ai.think: %s\n",
            nshost_result_error(r) != NULL ? nshost_result_error(r)
            : "a bad answer");
  failed = 1;
}


/* Moves the entities as last tick's answers say (0 stay, 1..4 north,
 * east, south, west); returns how many reached their goals. */
static long apply_moves(struct world *w, struct batch *bs, int nb) {
  static const int dx[] = { 0, 0, 1, 0, -1 }, dy[] = { 0, -1, 0, 1, 0 };
  long arrived = 0;
  int b, k, d, at;

  for (b = 0; b < nb; b++) {
    for (k = 0; bs[b].answered && k < bs[b].count; k++) {
      struct entity *e = &w->e[bs[b].first + k];

      d = bs[b].moves[k] <= 4 ? bs[b].moves[k] : 0;
      at = (e->y + dy[d]) * MAP_W + e->x + dx[d];
      if (w->map[at] != '#') {
        e->x += dx[d];
        e->y += dy[d];
      }
      if (e->x == e->gx && e->y == e->gy) {
        random_floor(w, &e->gx, &e->gy);
        arrived++;
      }
    }
    bs[b].answered = 0;
  }
  return arrived;
}


/* One job per batch: ai.think({id, id, ...}, budget). */
static int send_batches(nshost_client_t *c, nshost_args_t *a,
                        struct batch *bs, int nb) {
  int b, k, err = 0;

  for (b = 0; b < nb && err == 0; b++) {
    nshost_args_clear(a);
    nshost_args_table(a);
    for (k = 0; k < bs[b].count; k++) {
      nshost_args_number(a, k + 1);
      nshost_args_number(a, bs[b].first + k + 1);
    }
    nshost_args_end(a);
    nshost_args_number(a, BUDGET);
    err = nshost_call(c, 0, "ai.think", a, on_moves, &bs[b]);
  }
  return err;
}


static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

  return (x > y) - (x < y);
}


static void print_stats(uint64_t *wait, long ticks, long late) {
  uint64_t sum = 0;
  long i;

  for (i = 0; i < ticks; i++)
    sum += wait[i];
  qsort(wait, (size_t)ticks, sizeof(wait[0]), cmp_u64);
  if (ticks > 0)
    printf("lua wait per tick: mean %.3f ms, p50 %.3f ms, p99 %.3f ms, "
           "max %.3f ms\n", (double)sum / 1e6 / (double)ticks,
           wait[(ticks - 1) * 50 / 100] / 1e6,
           wait[(ticks - 1) * 99 / 100] / 1e6, wait[ticks - 1] / 1e6);
  printf("late ticks: %ld of %ld\n", late, ticks);
}


int main(int argc, char **argv) {
  const uint64_t period = 1000000000u / TICK_HZ;
  static struct world w;
  struct batch bs[BATCHES];
  struct sigaction sa;
  nshost_config_t cfg;
  nshost_runtime_t *rt = NULL;
  nshost_client_t *c = NULL;
  nshost_args_t *a = must(nshost_args_new());
  uint64_t *wait, next, t0;
  long ticks = 0, tick, late = 0, arrived = 0, cap = 1024;
  int n = 2000, nb, workers = 0, opt, b, err;

  w.dir = GAME_AI_DIR;
  while ((opt = getopt(argc, argv, "n:t:w:d:")) != -1) {
    switch (opt) {
    case 'n': n = atoi(optarg); break;
    case 't': ticks = atol(optarg); break;
    case 'w': workers = atoi(optarg); break;
    case 'd': w.dir = optarg; break;
    default: n = 0; break;
    }
  }
  if (n < 1 || ticks < 0) {
    fprintf(stderr, "usage: game_server [-n entities] [-t ticks] "
            "[-w workers] [-d dir]\n");
    return 2;
  }
  make_world(&w, n);
  nb = n < BATCHES ? n : BATCHES;
  for (b = 0; b < nb; b++) {
    bs[b].first = (int)((long)n * b / nb);
    bs[b].count = (int)((long)n * (b + 1) / nb) - bs[b].first;
    bs[b].moves = must(malloc((size_t)bs[b].count));
    bs[b].answered = 0;
  }
  wait = must(malloc((size_t)cap * sizeof(*wait)));

  nshost_config_init(&cfg);
  cfg.threads = workers;
  cfg.name = "ai";
  cfg.log = log_line;
  cfg.setup = setup;
  cfg.setup_ud = &w;
  err = nshost_runtime_new(&rt, &cfg);
  if (err == 0)
    err = nshost_client_new(rt, NULL, &c);
  if (err == 0)
    err = nshost_runtime_start(rt);    /* now, not in the first tick */
  if (err != 0) {
    fprintf(stderr, "game_server: %s\n", nshost_strerror(err));
    return 1;
  }
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  printf("%d entities in %d batches, %d workers, %d ticks/s\n", n, nb,
         nshost_runtime_threads(rt), TICK_HZ);

  next = now_ns();
  for (tick = 0; !stop && (ticks == 0 || tick < ticks); tick++) {
    /* Last tick's answers: wait for those still out. */
    t0 = now_ns();
    while (nshost_client_pending(c) > 0 && !failed)
      nshost_client_poll(c, 1000);
    if (failed)
      break;
    if (tick == cap)
      wait = must(realloc(wait, (size_t)(cap *= 2) * sizeof(*wait)));
    wait[tick] = now_ns() - t0;

    arrived += apply_moves(&w, bs, nb);
    w.tick = tick + 1;
    err = send_batches(c, a, bs, nb);
    if (err != 0) {
      fprintf(stderr, "game_server: %s\n", nshost_strerror(err));
      failed = 1;
      break;
    }

    /* Sleep until the next tick, running callbacks as answers come.  A
     * late tick starts the next one at once, without catching up. */
    next += period;
    if (now_ns() > next) {
      late++;
      next = now_ns();
    }
    while (!stop && (t0 = now_ns()) < next)
      nshost_client_poll(c, (int)((next - t0 + 999999) / 1000000));
  }

  printf("ticks: %ld%s\n", tick, stop ? " (interrupted)" : "");
  print_stats(wait, tick, late);
  printf("goals reached: %ld\n", arrived);

  nshost_client_free(c);     /* waits for the jobs still out */
  nshost_runtime_free(rt);   /* stops the workers */
  nshost_args_free(a);
  for (b = 0; b < nb; b++)
    free(bs[b].moves);
  free(wait);
  free(w.e);
  return failed ? 1 : 0;
}
