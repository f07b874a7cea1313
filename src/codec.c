/*
 * codec.c - Lua values to one flat buffer and back, in another state.
 *
 * The format is a stream of tagged values.  Tables and Lua functions get
 * an id, in the order they are first met, so a later reference to the
 * same object is written as REF id and arrives as the same object: this
 * keeps sharing and cycles, and lets a local function refer to itself.
 * Both sides keep their id maps in reusable registry tables, so a
 * message allocates nothing for them once they have grown.
 *
 * Encoding never raises on a bad value: it records what and where, and
 * unwinds with -1, each level adding its step to the path.  Only running
 * out of memory inside the Lua API can raise, and the scratch buffer
 * belongs to the context, so nothing leaks then either.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "nsh.h"

/* xxHash from its header alone: nothing to link. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#define MAX_DEPTH 12000
#define PATH_INNER 8           /* innermost path steps kept */
#define PATH_OUTER 16          /* outermost path steps kept */
#define FRESH_AT 7000          /* stack slots before going on a new thread */
#define LUA_LOOP_MIN 16        /* array length worth a call into Lua */
#define LUA_TCDATA_JIT 10      /* LuaJIT's type number for cdata */
#define MAX_USED 16            /* shared closures one message can have */
#define SCRATCH_KEEP (1u << 20) /* the encoder's buffer kept between uses */

enum {
  T_NIL, T_FALSE, T_TRUE, T_NUM, T_STR, T_TABLE, T_REF, T_FUNC, T_STD,
  T_UPREF, T_I64, T_U64,
  T_NUMS     /* in a table's array only: a run of numbers, see below */
};

/* Flags of a T_FUNC. */
enum {
  FN_ENV = 1,      /* an environment table follows the upvalues */
  FN_REUSE = 2,    /* the job's own function, never referenced again */
  FN_SELF = 4      /* the job's own function; its upvalues are all itself */
};

/* Registry keys: the addresses of these are unique. */
static char key_stdname, key_stdfn, key_objs, key_refs;
static char key_dumps;

struct enc {
  struct nsh_ctx *c;
  lua_State *L;
  struct nsh_buf *b;
  struct nsh_idmap *ids;            /* object -> id, upvalue -> join */
  int objs, dumps;                  /* stack indices of the tables */
  int nobj;
  int nuv;                          /* upvalue ids met, in objs[-k] */
  int depth;
  int fn1_shared;                   /* object 1 is met again or joined */
  int fn1_self, fn1_nups;           /* its upvalues that are itself, all */
  size_t fn1_flags;                 /* where the job function's flags go */
  const char *what;
  /* On failure: the reason, then the path, innermost step first. */
  char why[160];
  char inner[PATH_INNER][72];       /* the steps nearest the value */
  char outer[PATH_OUTER][72];       /* a ring: the latest are outermost */
  int ninner, nouter;
};

struct dec {
  struct nsh_ctx *c;
  lua_State *L;
  const unsigned char *p, *end;
  int refs, stdfn;
  int base;                         /* refs slots used by outer decodes */
  int nobj;
  int depth;
  struct nsh_poolkey pool;          /* the job's function is poolable */
  int nused;                        /* shared closures handed out */
  const void *used[MAX_USED];
  uint64_t index;                   /* which top-level value */
  const char *err;
};

/* ---- The codec's tables ---------------------------------------------- */

static void push_registry_table(lua_State *L, void *key, const char *mode) {
  lua_pushlightuserdata(L, key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  if (!lua_isnil(L, -1))
    return;
  lua_pop(L, 1);
  lua_newtable(L);
  if (mode != NULL) {
    lua_createtable(L, 0, 1);
    lua_pushstring(L, mode);
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
  }
  lua_pushlightuserdata(L, key);
  lua_pushvalue(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);
}


/* The codec's tables, by number. */
enum {
  TB_OBJS, TB_STDNAME, TB_DUMPS, TB_REFS, TB_STDFN, TB_N
};
_Static_assert(TB_N == sizeof(((struct nsh_ctx *)0)->tabs) / sizeof(int),
               "struct nsh_ctx has a reference for each table");

static const struct { void *key; const char *mode; } tables[TB_N] = {
  { &key_objs, NULL }, { &key_stdname, NULL },
  { &key_dumps, "k" }, { &key_refs, NULL }, { &key_stdfn, NULL }
};

/* Pushes table k.  A context with a state of its own keeps a registry
 * reference to each, which is an array read instead of a hash lookup;
 * the tables are never replaced, only cleared, so it stays valid. */
static void push_tab(struct nsh_ctx *c, lua_State *L, int k) {
  int own = c != NULL && c->L != NULL;

  if (own && c->tabs[k] != 0) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->tabs[k]);
    return;
  }
  push_registry_table(L, tables[k].key, tables[k].mode);
  if (own) {
    lua_pushvalue(L, -1);
    c->tabs[k] = luaL_ref(L, LUA_REGISTRYINDEX);
  }
}


/* ---- Buffers ----------------------------------------------------------- */

int nsh_buf_reserve(struct nsh_buf *b, size_t extra) {
  size_t cap;
  char *d;

  if (b->cap - b->len >= extra)
    return 0;
  cap = b->cap ? b->cap : 256;
  while (cap - b->len < extra)
    cap *= 2;
  d = realloc(b->data, cap);
  if (d == NULL)
    return -1;
  b->data = d;
  b->cap = cap;
  return 0;
}


void nsh_buf_free(struct nsh_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* ---- Encoding ---------------------------------------------------------- */

static int fail(struct enc *e, const char *why) {
  snprintf(e->why, sizeof(e->why), "%s", why);
  return -1;
}


/* Adds one step to the path of a failure, as it unwinds. */
static int step(struct enc *e, const char *fmt, ...) {
  va_list ap;
  char *dst;

  if (e->ninner < PATH_INNER)
    dst = e->inner[e->ninner++];
  else
    dst = e->outer[e->nouter++ % PATH_OUTER];
  va_start(ap, fmt);
  vsnprintf(dst, sizeof(e->inner[0]), fmt, ap);
  va_end(ap);
  return -1;
}


static int put(struct enc *e, const void *p, size_t n) {
  struct nsh_buf *b = e->b;

  if (b->cap - b->len < n && nsh_buf_reserve(b, n) != 0)
    return fail(e, "not enough memory for the message");
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}


static int put_byte(struct enc *e, int tag) {
  unsigned char t = (unsigned char)tag;

  if (e->b->len < e->b->cap) {
    e->b->data[e->b->len++] = (char)t;
    return 0;
  }
  return put(e, &t, 1);
}


/* A number: its tag and its 8 bytes. */
static int put_number(struct enc *e, lua_Number d) {
  struct nsh_buf *b = e->b;

  if (b->cap - b->len < 1 + sizeof(d) &&
      nsh_buf_reserve(b, 1 + sizeof(d)) != 0)
    return fail(e, "not enough memory for the message");
  b->data[b->len] = T_NUM;
  memcpy(b->data + b->len + 1, &d, sizeof(d));
  b->len += 1 + sizeof(d);
  return 0;
}


static int put_varint(struct enc *e, uint64_t v) {
  unsigned char tmp[10];
  int n = 0;

  do {
    tmp[n] = (unsigned char)(v & 0x7f);
    v >>= 7;
    if (v != 0)
      tmp[n] |= 0x80;
    n++;
  } while (v != 0);
  return put(e, tmp, (size_t)n);
}


static int put_lstr(struct enc *e, const char *s, size_t n) {
  if (put_varint(e, n) != 0)
    return -1;
  return put(e, s, n);
}


/* The identity map of one message: pointers of the objects met (and of
 * the upvalues, from lua_upvalueid) to their ids.  Kept in C, since a
 * Lua table costs a hash insert, a lookup and two deletes per object.
 * Slots of older messages are told apart by a generation number, so
 * starting a message clears nothing. */
static uint64_t *ids_find(struct nsh_idmap *m, const void *p) {
  size_t mask, i;

  if (m->cap == 0)
    return NULL;
  mask = m->cap - 1;
  for (i = ((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15u >> 20 & mask;;
       i = (i + 1) & mask) {
    struct nsh_idslot *s = &m->slot[i];
    if (s->gen != m->gen)
      return NULL;
    if (s->key == p)
      return &s->val;
  }
}


static int ids_add(struct nsh_idmap *m, const void *p, uint64_t v) {
  size_t mask, i;

  if ((m->n + 1) * 2 > m->cap) {
    struct nsh_idmap big = { NULL, m->cap ? m->cap * 2 : 64, 0, 1 };
    big.slot = calloc(big.cap, sizeof(*big.slot));
    if (big.slot == NULL)
      return -1;
    for (i = 0; i < m->cap; i++)
      if (m->slot[i].gen == m->gen)
        ids_add(&big, m->slot[i].key, m->slot[i].val);
    free(m->slot);
    *m = big;
  }
  mask = m->cap - 1;
  for (i = ((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15u >> 20 & mask;
       m->slot[i].gen == m->gen; i = (i + 1) & mask)
    ;
  m->slot[i].key = p;
  m->slot[i].val = v;
  m->slot[i].gen = m->gen;
  m->n++;
  return 0;
}


/* Empties the map for the next message; a map grown big by one message
 * is given back rather than kept. */
static void ids_reset(struct nsh_idmap *m) {
  m->n = 0;
  if (m->cap > 4096 || ++m->gen == 0) {
    free(m->slot);
    m->slot = NULL;
    m->cap = 0;
    m->gen = 1;
  }
}


static void free_fns(struct nsh_ctx *c);

void nsh_codec_free(struct nsh_ctx *c) {
  free_fns(c);
  free(c->ids.slot);
  free(c->std.slot);
  memset(&c->ids, 0, sizeof(c->ids));
  memset(&c->std, 0, sizeof(c->std));
}


/* If the object at idx was met before, writes REF and returns 1;
 * otherwise gives it the next id and returns 0.  The object is anchored
 * in objs until the message is done: code that runs during encoding (a
 * finalizer, an __index) could otherwise free it and let another object
 * take its address. */
static int remember(struct enc *e, int idx) {
  const void *p = lua_topointer(e->L, idx);
  uint64_t *id = ids_find(e->ids, p);

  if (id != NULL) {
    if (*id == 1)
      e->fn1_shared = 1;
    if (put_byte(e, T_REF) != 0 || put_varint(e, *id) != 0)
      return -1;
    return 1;
  }
  if (ids_add(e->ids, p, (uint64_t)e->nobj + 1) != 0)
    return fail(e, "not enough memory for the message");
  e->nobj++;
  lua_pushvalue(e->L, idx);
  lua_rawseti(e->L, e->objs, e->nobj);
  return 0;
}


static int encode(struct enc *e, int idx);


/* A readable name for a table key in a path. */
static void key_step(struct enc *e, int kidx) {
  lua_State *L = e->L;

  switch (lua_type(L, kidx)) {
  case LUA_TSTRING:
    step(e, "key '%.48s'", lua_tostring(L, kidx));
    break;
  case LUA_TNUMBER:
    step(e, "key %.17g", lua_tonumber(L, kidx));
    break;
  case LUA_TBOOLEAN:
    step(e, "key %s", lua_toboolean(L, kidx) ? "true" : "false");
    break;
  default:
    step(e, "a key of type %s", luaL_typename(L, kidx));
    break;
  }
}


/* Is the key at kidx an integer in 1..n, so in the array run? */
static int in_run(lua_State *L, int kidx, size_t n) {
  lua_Number k;

  if (lua_type(L, kidx) != LUA_TNUMBER)
    return 0;
  k = lua_tonumber(L, kidx);
  return k >= 1 && k <= (lua_Number)n && k == (lua_Number)(size_t)k;
}


/* A run of numbers at the start of a table's array, written by a loop
 * in Lua that LuaJIT compiles (through the C API each number costs a few
 * hundred instructions; there, a few):
 *
 *   T_NUMS, count (a 5-byte varint), pad (a byte, 0-7), pad zero bytes,
 *   count doubles, aligned to 8 from the start of the message.
 *
 * The loop stops at the first value that is not a number; when it gets
 * to n, it also says whether the table has keys besides 1..n.  Sets *i
 * to the index after the run. */
static void put_numbers(struct enc *e, int idx, size_t n, size_t *i,
                        int *more) {
  lua_State *L = e->L;
  size_t start = e->b->len, at, count = 0;
  int pad;

  if (n >= (1u << 28) || nsh_buf_reserve(e->b, 16 + n * 8) != 0)
    return;
  at = start + 7;
  pad = (int)(-at & 7);
  at += (size_t)pad;
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->c->put_numbers_ref);
  lua_pushvalue(L, idx);
  lua_pushinteger(L, (lua_Integer)n);
  /* An address as a number: LuaJIT compiles that cast, not one from a
   * light userdata. */
  lua_pushnumber(L, (lua_Number)(uintptr_t)(e->b->data + at));
  if (lua_pcall(L, 3, 2, 0) == 0) {
    count = (size_t)lua_tointeger(L, -2);
    *more = count < n || lua_toboolean(L, -1);
    lua_pop(L, 2);
  } else {
    lua_pop(L, 1);           /* out of memory: the C loop does it all */
  }
  if (count == 0)
    return;
  e->b->data[start] = T_NUMS;
  for (int k = 0; k < 5; k++)
    e->b->data[start + 1 + k] = (char)(((count >> (7 * k)) & 0x7f) |
                                       (k < 4 ? 0x80 : 0));
  e->b->data[start + 6] = (char)pad;
  memset(e->b->data + start + 7, 0, (size_t)pad);
  e->b->len = at + count * 8;
  *i = count + 1;
}


/* A table is its run 1..#t as bare values, then every other key and
 * value, a nil, and the metatable. */
static int encode_table(struct enc *e, int idx) {
  lua_State *L = e->L;
  size_t n, i;
  int r, more;

  r = remember(e, idx);
  if (r != 0)
    return r < 0 ? -1 : 0;
  n = lua_objlen(L, idx);
  if (put_byte(e, T_TABLE) != 0 || put_varint(e, (uint64_t)n) != 0)
    return -1;
  i = 1;
  more = 1;
  if (n >= LUA_LOOP_MIN && e->c->put_numbers_ref != LUA_NOREF)
    put_numbers(e, idx, n, &i, &more);
  for (; i <= n; i++) {
    lua_rawgeti(L, idx, (int)i);
    r = encode(e, lua_gettop(L));
    lua_pop(L, 1);
    if (r != 0)
      return step(e, "key %d", (int)i);
  }

  /* Most long arrays have nothing else: then skip the C walk. */
  if (!more)
    goto metatable;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (in_run(L, -2, n)) {
      lua_pop(L, 1);
      continue;
    }
    if (encode(e, lua_gettop(L) - 1) != 0 ||
        encode(e, lua_gettop(L)) != 0) {
      key_step(e, lua_gettop(L) - 1);
      lua_pop(L, 2);
      return -1;
    }
    lua_pop(L, 1);
  }
metatable:
  if (put_byte(e, T_NIL) != 0)
    return -1;

  /* The raw metatable, even behind a __metatable field, so an object
   * arrives with its class. */
  if (!lua_getmetatable(L, idx))
    return put_byte(e, T_NIL);
  r = encode(e, lua_gettop(L));
  lua_pop(L, 1);
  return r != 0 ? step(e, "metatable") : 0;
}


static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  (void)L;
  return put(ud, p, n);
}


/* Writes the bytecode of the Lua function at idx.  A closure is dumped
 * once and its bytecode kept in a weak table, so spawning the same
 * function again costs a lookup. */
static int put_bytecode(struct enc *e, int idx) {
  lua_State *L = e->L;
  size_t n, start;
  const char *s;

  lua_pushvalue(L, idx);
  lua_rawget(L, e->dumps);
  s = lua_tolstring(L, -1, &n);
  if (s != NULL) {
    lua_pop(L, 1);
    return put_lstr(e, s, n);
  }
  lua_pop(L, 1);

  /* Reserve room for the length, dump, then fill it in. */
  start = e->b->len;
  lua_pushvalue(L, idx);
  if (put(e, "\0\0\0\0\0", 5) != 0 || lua_dump(L, dump_writer, e) != 0) {
    lua_pop(L, 1);
    return fail(e, "cannot dump the function's bytecode");
  }
  lua_pop(L, 1);
  n = e->b->len - start - 5;
  lua_pushvalue(L, idx);
  lua_pushlstring(L, e->b->data + start + 5, n);
  lua_rawset(L, e->dumps);
  /* A fixed-width varint: five 7-bit groups hold any length < 32 GiB. */
  for (int i = 0; i < 5; i++)
    e->b->data[start + i] = (char)(((n >> (7 * i)) & 0x7f) |
                                   (i < 4 ? 0x80 : 0));
  return 0;
}


/* Writes upvalue i of the function at idx, which has id fid; its value
 * is on top, and its name is name.  Pops the value.  An upvalue that an
 * earlier function of the message shares (two closures over one local)
 * is written as a join to that function's upvalue. */
static int put_upvalue(struct enc *e, int idx, int fid, int i,
                       const char *name) {
  lua_State *L = e->L;
  void *uid = lua_upvalueid(L, idx, i);
  uint64_t *code = ids_find(e->ids, uid);
  int r;

  if (code != NULL) {
    lua_pop(L, 1);
    if (fid == 1 || *code >> 8 == 1)
      e->fn1_shared = 1;
    return put_byte(e, T_UPREF) || put_varint(e, *code >> 8) ||
           put_byte(e, (int)(*code & 0xff)) ? -1 : 0;
  }
  if (ids_add(e->ids, uid, (uint64_t)fid * 256 + (uint64_t)i) != 0) {
    lua_pop(L, 1);
    return fail(e, "not enough memory for the message");
  }
  if (fid == 1 && lua_rawequal(L, -1, idx)) {
    /* The job's function calling itself (see nsh_codec_encode). */
    lua_pop(L, 1);
    e->fn1_self++;
    return put_byte(e, T_REF) || put_varint(e, 1) ? -1 : 0;
  }
  r = encode(e, lua_gettop(L));
  lua_pop(L, 1);
  return r != 0 ? step(e, "upvalue '%.48s'", name) : 0;
}


static int get_G(lua_State *L) {
  lua_getfield(L, 1, "_G");
  return 1;
}


/* Pushes the environment a function takes along and returns 1, or
 * returns 0 when it needs none: its environment is the global table,
 * or stands for it, its _G (looked up through __index, protected) being
 * the global table, as in busted's per-file environments.  Such a
 * function runs with the worker's globals; any other environment is
 * copied like a table. */
static int push_env(lua_State *L, int idx) {
  int top = lua_gettop(L);

  lua_getfenv(L, idx);
  if (!lua_istable(L, -1) || lua_rawequal(L, -1, LUA_GLOBALSINDEX)) {
    lua_settop(L, top);
    return 0;
  }
  lua_pushcfunction(L, get_G);
  lua_pushvalue(L, top + 1);
  if (lua_pcall(L, 1, 1, 0) == 0 && lua_rawequal(L, -1, LUA_GLOBALSINDEX)) {
    lua_settop(L, top);
    return 0;
  }
  lua_settop(L, top + 1);
  return 1;
}


static int encode_function(struct enc *e, int idx) {
  lua_State *L = e->L;
  const char *name;
  size_t flagpos, nuppos;
  int r, i, fid, flags = 0;

  r = remember(e, idx);
  if (r != 0)
    return r < 0 ? -1 : 0;
  fid = e->nobj;
  flagpos = e->b->len + 1;
  if (put_byte(e, T_FUNC) != 0 || put_byte(e, 0) != 0 ||
      put_bytecode(e, idx) != 0)
    return -1;
  /* The upvalue count is one byte (a varint below 128; LuaJIT allows
   * 60), written once the upvalues have been counted. */
  nuppos = e->b->len;
  if (put_byte(e, 0) != 0)
    return -1;
  for (i = 1; (name = lua_getupvalue(L, idx, i)) != NULL; i++) {
    if (i > 127) {
      lua_pop(L, 1);
      return fail(e, "a function with more than 127 upvalues");
    }
    if (put_upvalue(e, idx, fid, i, name) != 0)
      return -1;
  }
  e->b->data[nuppos] = (char)(i - 1);
  if (fid == 1)
    e->fn1_nups = i - 1;

  if (push_env(L, idx)) {
    flags |= FN_ENV;
    if (fid == 1)
      e->fn1_shared = 1;
    r = encode(e, lua_gettop(L));
    lua_pop(L, 1);
    if (r != 0)
      return step(e, "environment");
  }
  e->b->data[flagpos] = (char)flags;
  return 0;
}


/* Standard functions, io.stdout and io.stderr (and the runtime's own
 * functions) cross by name and arrive as the receiver's.  Returns 1 if
 * the value at idx was written so, 0 if it has no name, -1 on error. */
static int put_std(struct enc *e, int idx) {
  lua_State *L = e->L;
  const char *name;
  int r;

  /* Most values are not standard ones: the set in C says so quickly. */
  if (ids_find(&e->c->std, lua_topointer(L, idx)) == NULL)
    return 0;
  push_tab(e->c, L, TB_STDNAME);
  lua_pushvalue(L, idx);
  lua_rawget(L, -2);
  name = lua_tostring(L, -1);
  r = name == NULL ? 0 :
      put_byte(e, T_STD) || put_lstr(e, name, strlen(name)) ? -1 : 1;
  lua_pop(L, 2);
  return r;
}


/* 64-bit integer cdata (1LL, 1ULL) cross with all 64 bits; any other
 * cdata is refused.  The kind comes from a helper in lua/runtime.lua
 * that asks the FFI. */
static int encode_cdata(struct enc *e, int idx) {
  lua_State *L = e->L;
  int kind, r;

  lua_rawgeti(L, LUA_REGISTRYINDEX, e->c->cdata_kind_ref);
  lua_pushvalue(L, idx);
  lua_call(L, 1, 1);
  kind = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (kind != 1 && kind != 2)
    return fail(e, "a cdata (only the 64-bit integers int64_t and "
                   "uint64_t cross; other FFI data is not copied)");
  /* A boxed integer is an object: used twice, it arrives as one. */
  r = remember(e, idx);
  if (r != 0)
    return r < 0 ? -1 : 0;
  if (put_byte(e, kind == 1 ? T_I64 : T_U64) != 0)
    return -1;
  return put(e, lua_topointer(L, idx), 8);
}


/* A new thread, left on L's stack, with copies of the n tables at
 * L's first..first+n-1 in its slots 1..n.  NULL if it has no room. */
static lua_State *fresh_thread(lua_State *L, int first, int n) {
  lua_State *T = lua_newthread(L);
  int i;

  if (!lua_checkstack(T, n + 16)) {
    lua_pop(L, 1);
    return NULL;
  }
  for (i = 0; i < n; i++)
    lua_pushvalue(L, first + i);
  lua_xmove(L, T, n);
  return T;
}


/* LuaJIT lets one C call use about 8000 stack slots; a value nested
 * deeper than that goes on being encoded on a new thread. */
static int encode_fresh(struct enc *e, int idx) {
  lua_State *L = e->L, *T;
  int r, objs = e->objs;

  T = fresh_thread(L, objs, 2);
  if (T == NULL)
    return fail(e, "a value nested too deeply for the Lua stack");
  lua_pushvalue(L, idx);
  lua_xmove(L, T, 1);
  e->L = T;
  e->objs = 1, e->dumps = 2;
  r = encode(e, lua_gettop(T));
  e->L = L;
  e->objs = objs, e->dumps = objs + 1;
  lua_pop(L, 1);
  return r;
}


static int encode(struct enc *e, int idx) {
  lua_State *L = e->L;
  size_t n;
  const char *s;
  int r;

  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    return put_byte(e, T_NIL);
  case LUA_TBOOLEAN:
    return put_byte(e, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
  case LUA_TNUMBER:
    return put_number(e, lua_tonumber(L, idx));
  case LUA_TSTRING:
    s = lua_tolstring(L, idx, &n);
    if (put_byte(e, T_STR) != 0)
      return -1;
    return put_lstr(e, s, n);
  case LUA_TFUNCTION:
    r = put_std(e, idx);
    if (r != 0)
      return r < 0 ? -1 : 0;
    if (lua_iscfunction(L, idx))
      return fail(e, "a C function that is not from the standard library "
                     "(only standard functions cross, by name)");
    /* fall through */
  case LUA_TTABLE:
    if (lua_istable(L, idx) && (r = put_std(e, idx)) != 0)
      return r < 0 ? -1 : 0;
    if (e->depth >= MAX_DEPTH)
      return fail(e, "a value nested more than 12000 levels deep");
    if (lua_gettop(L) > FRESH_AT)
      return encode_fresh(e, idx);
    if (!lua_checkstack(L, 8))
      return fail(e, "a value nested too deeply for the Lua stack");
    e->depth++;
    r = lua_istable(L, idx) ? encode_table(e, idx) : encode_function(e, idx);
    e->depth--;
    return r;
  case LUA_TTHREAD:
    return fail(e, "a thread (a coroutine belongs to the Lua state "
                   "that made it)");
  case LUA_TUSERDATA:
    r = put_std(e, idx);
    if (r != 0)
      return r < 0 ? -1 : 0;
    /* fall through */
  case LUA_TLIGHTUSERDATA:
    if (lua_getmetatable(L, idx)) {
      luaL_getmetatable(L, "nshost.job");
      r = lua_rawequal(L, -1, -2);
      lua_pop(L, 2);
      if (r)
        return fail(e, "a job handle (await the job and send its "
                       "results instead)");
    }
    return fail(e, "a userdata (C data that only its own state knows)");
  case LUA_TCDATA_JIT:
    return encode_cdata(e, idx);
  default:
    return fail(e, "a value of an unknown type");
  }
}


/* Forgets the objects of this message; the tables stay for the next. */
static void forget(struct enc *e) {
  int n = e->nobj;

  if (e->objs != 0) {       /* else plain values: no table, no objects */
    if (e->c->objs_left > n)
      n = e->c->objs_left;
    e->c->objs_left = 0;
  }
  for (int i = 1; i <= n; i++) {
    lua_pushnil(e->L);
    lua_rawseti(e->L, e->objs, i);
  }
  ids_reset(e->ids);
}


/* Runs when nsh_codec_encode's frame goes, also when a Lua error unwinds
 * it (LuaJIT raises errors as C++-style exceptions, and this file is
 * built with -fexceptions): an allocation failing or a finalizer raising
 * an error in the middle of an encoding must not leave the context
 * marked as encoding, or every later spawn from it would be refused.
 * Only C state can be reset here; the objects the encoding anchored are
 * let go by the next one (objs_left). */
static void encode_unwound(struct enc **ep) {
  struct enc *e = *ep;

  if (!e->c->encoding)
    return;                 /* it ended normally */
  if (e->nobj > e->c->objs_left)
    e->c->objs_left = e->nobj;
  ids_reset(e->ids);
  e->c->encoding = 0;
}


/* "argument #2 > key 'a' > ...: cannot send ...", outermost first;
 * a long path keeps its two ends. */
static void push_error(struct enc *e) {
  luaL_Buffer b;
  int i, n = e->nouter < PATH_OUTER ? e->nouter : PATH_OUTER;

  luaL_buffinit(e->L, &b);
  for (i = 0; i < n; i++) {
    luaL_addstring(&b, e->outer[(e->nouter - 1 - i) % PATH_OUTER]);
    luaL_addstring(&b, " > ");
  }
  if (e->nouter > PATH_OUTER)
    luaL_addstring(&b, "... > ");
  for (i = e->ninner - 1; i >= 0; i--) {
    luaL_addstring(&b, e->inner[i]);
    if (i > 0)
      luaL_addstring(&b, " > ");
  }
  luaL_addstring(&b, ": cannot send ");
  luaL_addstring(&b, e->why);
  luaL_pushresult(&b);
}


/* Only nil, booleans, numbers and strings: no object can be met. */
static int all_plain(lua_State *L, int first, int n) {
  for (int i = 0; i < n; i++)
    if (lua_type(L, first + i) > LUA_TSTRING)
      return 0;
  return 1;
}


int nsh_codec_encode(struct nsh_ctx *c, lua_State *L, int first, int n,
                     const char *what, int has_fn) {
  struct enc e;
  int base, i, r = 0;

  if (first < 0)
    first = lua_gettop(L) + first + 1;
  if (c->encoding) {
    lua_pushstring(L, "cannot send values while other values are being "
                      "sent (a finalizer or metamethod that ran during a "
                      "spawn spawned again)");
    return -1;
  }
  luaL_checkstack(L, 16, "too many values to send");
  /* Marked before the first call that can allocate (making the codec's
   * tables, the first time): a collection there can run a finalizer
   * that spawns, and that spawn must be refused, not write its message
   * into the buffer this one is about to fill. */
  c->encoding = 1;
  /* A buffer that one big message grew is given back, not kept. */
  if (c->scratch.cap > SCRATCH_KEEP)
    nsh_buf_free(&c->scratch);
  /* Not all of e: the failure path's buffers are set only when used. */
  e.c = c;
  e.L = L;
  e.b = &c->scratch;
  e.b->len = 0;
  e.ids = &c->ids;
  e.nobj = e.depth = e.fn1_shared = e.fn1_self = e.fn1_nups = 0;
  e.fn1_flags = 0;
  e.what = what;
  e.why[0] = '\0';
  e.ninner = e.nouter = 0;
  struct enc *guard __attribute__((cleanup(encode_unwound))) = &e;
  (void)guard;
  base = lua_gettop(L);
  e.objs = e.dumps = 0;
  if (!all_plain(L, first, n)) {
    push_tab(c, L, TB_OBJS);
    push_tab(c, L, TB_DUMPS);
    e.objs = base + 1;
    e.dumps = base + 2;
  }

  if (put_varint(&e, (uint64_t)n) != 0)
    r = -1;
  if (has_fn)
    e.fn1_flags = e.b->len + 1;
  for (i = 0; i < n && r == 0; i++) {
    if (encode(&e, first + i) != 0) {
      if (has_fn && i == 0)
        step(&e, "the function");
      else
        step(&e, "%s #%d", what, i + (has_fn ? 0 : 1));
      r = -1;
    }
  }
  /* The job's own function may be reused by the worker when nothing else
   * in the message refers to it: given new upvalues for the next job of
   * the same code.  Not when it refers to itself and has other upvalues:
   * it could keep itself somewhere (a global, a table) and would then
   * see the next job's upvalues.  One whose upvalues are all itself has
   * nothing that differs between jobs, and is shared like a function
   * without upvalues. */
  if (r == 0 && has_fn && e.b->data[e.fn1_flags - 1] == T_FUNC &&
      !e.fn1_shared) {
    if (e.fn1_self == 0)
      e.b->data[e.fn1_flags] |= FN_REUSE;
    else if (e.fn1_self == e.fn1_nups)
      e.b->data[e.fn1_flags] |= FN_SELF;
  }
  forget(&e);
  c->encoding = 0;
  lua_settop(L, base);
  if (r != 0)
    push_error(&e);
  return r;
}

/* ---- Decoding ---------------------------------------------------------- */

static int bad(struct dec *d, const char *why) {
  d->err = why;
  return -1;
}


static int get_varint(struct dec *d, uint64_t *v) {
  uint64_t x = 0;
  int shift = 0;

  while (d->p < d->end && shift < 64) {
    unsigned char b = *d->p++;
    x |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = x;
      return 0;
    }
    shift += 7;
  }
  return bad(d, "a truncated number");
}


static int get_lstr(struct dec *d, const char **s, size_t *n) {
  uint64_t len;

  if (get_varint(d, &len) != 0)
    return -1;
  if (len > (uint64_t)(d->end - d->p))
    return bad(d, "a truncated string");
  *s = (const char *)d->p;
  *n = (size_t)len;
  d->p += len;
  return 0;
}


static int decode(struct dec *d);


/* Gives the value on top the next id of the message.  The ids of a
 * decode start past those of any decode it runs inside (a finalizer or
 * metamethod that awaits a job while a message is being read), and the
 * context keeps the high mark for such an inner decode to start from. */
static void add_ref(struct dec *d) {
  d->nobj++;
  lua_pushvalue(d->L, -1);
  lua_rawseti(d->L, d->refs, d->base + d->nobj);
  d->c->dec_top = d->base + d->nobj;
}


static void push_ref(struct dec *d, uint64_t id) {
  lua_rawgeti(d->L, d->refs, d->base + (int)id);
}


/* Reads a run of numbers (see put_numbers) into t[1..]; sets *i to the
 * index after it. */
static int get_numbers(struct dec *d, int t, uint64_t narr, uint64_t *i) {
  lua_State *L = d->L;
  uint64_t count;
  const unsigned char *nums;
  int pad;

  if (get_varint(d, &count) != 0 || d->p >= d->end)
    return -1;
  pad = *d->p++;
  if (count == 0 || count > narr || pad > 7 ||
      (uint64_t)(d->end - d->p) < pad + count * 8)
    return bad(d, "a truncated run of numbers");
  nums = d->p + pad;
  d->p = nums + count * 8;
  *i = count + 1;
  if (((uintptr_t)nums & 7) == 0 && d->c->get_numbers_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, d->c->get_numbers_ref);
    lua_pushvalue(L, t);
    lua_pushnumber(L, (lua_Number)(uintptr_t)nums);
    lua_pushinteger(L, (lua_Integer)count);
    if (lua_pcall(L, 3, 0, 0) == 0)
      return 0;
    lua_pop(L, 1);
  }
  /* Not aligned (a message read at an offset), or a state without the
   * helper: one at a time. */
  for (uint64_t k = 0; k < count; k++) {
    lua_Number x;
    memcpy(&x, nums + k * 8, sizeof(x));
    lua_pushnumber(L, x);
    lua_rawseti(L, t, (int)(k + 1));
  }
  return 0;
}


static int decode_table(struct dec *d) {
  lua_State *L = d->L;
  uint64_t narr, i;
  int t;

  if (get_varint(d, &narr) != 0)
    return -1;
  if (narr > (uint64_t)(d->end - d->p))
    return bad(d, "a truncated table");
  lua_createtable(L, (int)narr, 0);
  t = lua_gettop(L);
  add_ref(d);

  i = 1;
  if (d->p < d->end && *d->p == T_NUMS) {
    d->p++;
    if (get_numbers(d, t, narr, &i) != 0)
      return -1;
  }
  for (; i <= narr; i++) {
    /* Numbers straight in: arrays of them are the common case. */
    if (*d->p == T_NUM && d->end - d->p > (ptrdiff_t)sizeof(lua_Number)) {
      lua_Number x;
      memcpy(&x, d->p + 1, sizeof(x));
      d->p += 1 + sizeof(x);
      lua_pushnumber(L, x);
    } else if (decode(d) != 0) {
      return -1;
    }
    lua_rawseti(L, t, (int)i);
  }
  for (;;) {
    if (d->p < d->end && *d->p == T_NIL) {
      d->p++;
      break;
    }
    if (decode(d) != 0 || decode(d) != 0)
      return -1;
    lua_rawset(L, t);
  }
  if (decode(d) != 0)
    return -1;
  if (lua_istable(L, -1))
    lua_setmetatable(L, t);
  else
    lua_pop(L, 1);
  return 0;
}


/* Is the function on top still running with the globals?  A job may
 * have called setfenv on it; such a closure is never reused, since
 * LuaJIT's compiled code may keep using the environment it saw. */
static int has_globals(lua_State *L) {
  int r;

  lua_getfenv(L, -1);
  r = lua_rawequal(L, -1, LUA_GLOBALSINDEX);
  lua_pop(L, 1);
  return r;
}


/* The shared closure on top may stand for one function of a message
 * only: two closures of one literal are two functions.  Returns 0 if
 * this message already has it, or has handed out as many as it keeps
 * track of (then the caller loads a closure of its own). */
static int hand_out(struct dec *d) {
  const void *f = lua_topointer(d->L, -1);
  int i;

  for (i = 0; i < d->nused; i++)
    if (d->used[i] == f)
      return 0;
  if (d->nused == MAX_USED)
    return 0;
  d->used[d->nused++] = f;
  return 1;
}


/* ---- Loaded functions, per bytecode --------------------------------- */

/* A worker keeps what it loaded, per bytecode, in a cache in C (the
 * bytecode need not become a Lua string to be looked up):
 *
 * - Functions without upvalues or environment are loaded once and
 *   shared: nothing in them can differ between jobs.
 * - Loading bytecode makes new prototypes, and LuaJIT compiles traces per
 *   prototype: a job function loaded afresh for every job would be
 *   compiled again every time.  So the closures of job functions that
 *   ran are pooled, and the next job of the same bytecode gets one of
 *   them with its new upvalues.  Only the job's own function is pooled,
 *   only when nothing else in the message refers to it or shares its
 *   upvalues (the encoder's FN_REUSE), and only when it has no inner
 *   functions, which could keep its upvalues alive after the job.
 *
 * The cache has FN_SETS sets of FN_WAYS entries, picked by the hash of
 * the bytecode; a new bytecode takes the least recently used entry of
 * its set, and what that entry held is let go.  Each entry pools at most
 * POOL_PER_KEY closures. */
#define FN_SETS 64
#define FN_WAYS 4
#define POOL_PER_KEY 8

struct nsh_fnentry {
  uint64_t hash;
  size_t len;               /* 0: the entry is free */
  char *bc;
  int shared;               /* registry ref: the shared closure */
  int pool;                 /* registry ref: table of pooled closures */
  int children;             /* has inner functions: -1 not known yet */
  uint32_t serial;          /* changes whenever the entry is reused */
  uint64_t used;            /* when it was last looked up */
};

struct nsh_fncache {
  struct nsh_fnentry e[FN_SETS * FN_WAYS];
  uint64_t clock;
  uint32_t serial;
};


static void fn_entry_clear(lua_State *L, struct nsh_fnentry *e) {
  free(e->bc);
  if (L != NULL) {
    luaL_unref(L, LUA_REGISTRYINDEX, e->shared);
    luaL_unref(L, LUA_REGISTRYINDEX, e->pool);
  }
  e->bc = NULL;
  e->len = 0;
  e->shared = e->pool = LUA_NOREF;
}


/* The entry of bc, made if need be; NULL for a state without a context
 * of its own, or when there is no memory. */
static struct nsh_fnentry *fn_entry(struct nsh_ctx *c, const char *bc,
                                    size_t n) {
  struct nsh_fncache *fc = c->fns;
  struct nsh_fnentry *set, *e, *old;
  uint64_t h = XXH3_64bits(bc, n);
  int i;

  if (c->L == NULL)
    return NULL;
  if (fc == NULL) {
    fc = c->fns = calloc(1, sizeof(*fc));
    if (fc == NULL)
      return NULL;
    for (i = 0; i < FN_SETS * FN_WAYS; i++)
      fc->e[i].shared = fc->e[i].pool = LUA_NOREF;
  }
  set = &fc->e[(h % FN_SETS) * FN_WAYS];
  old = set;
  for (i = 0; i < FN_WAYS; i++) {
    e = &set[i];
    if (e->len == n && e->hash == h && memcmp(e->bc, bc, n) == 0) {
      e->used = ++fc->clock;
      return e;
    }
    if (e->used < old->used)
      old = e;
  }
  e = old;
  fn_entry_clear(c->L, e);
  e->bc = malloc(n);
  if (e->bc == NULL)
    return NULL;
  memcpy(e->bc, bc, n);
  e->len = n;
  e->hash = h;
  e->children = -1;
  e->serial = ++fc->serial;
  e->used = ++fc->clock;
  return e;
}


static void free_fns(struct nsh_ctx *c) {
  if (c->fns == NULL)
    return;
  for (int i = 0; i < FN_SETS * FN_WAYS; i++)
    fn_entry_clear(NULL, &c->fns->e[i]);
  free(c->fns);
  c->fns = NULL;
}


/* Pushes the shared closure of e, or loads bc and makes its closure the
 * shared one.  A shared closure stands for one function per message
 * (see hand_out); one already taken, or whose environment a job changed,
 * is not shared again: then this loads a closure of its own. */
static int load_function(struct dec *d, struct nsh_fnentry *e,
                         const char *bc, size_t n) {
  lua_State *L = d->L;

  if (e != NULL && e->shared != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->shared);
    if (has_globals(L) && hand_out(d))
      return 0;
    lua_pop(L, 1);
    e = NULL;
  }
  if (luaL_loadbuffer(L, bc, n, "=?") != 0) {
    lua_pop(L, 1);
    return bad(d, "bytecode that does not load");
  }
  if (e != NULL) {
    lua_pushvalue(L, -1);
    e->shared = luaL_ref(L, LUA_REGISTRYINDEX);
    hand_out(d);
  }
  return 0;
}


/* Pushes a pooled closure of e and returns 1, or returns 0. */
static int take_pooled(struct dec *d, struct nsh_fnentry *e) {
  lua_State *L = d->L;
  int k;

  if (e == NULL || e->pool == LUA_NOREF)
    return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->pool);
  k = (int)lua_objlen(L, -1);
  if (k == 0) {
    lua_pop(L, 1);
    return 0;
  }
  lua_rawgeti(L, -1, k);
  lua_pushnil(L);
  lua_rawseti(L, -3, k);
  lua_remove(L, -2);
  return 1;
}


/* Can the freshly loaded job function on top go back to e's pool after
 * the job?  Not if it has inner functions.  The pool's table is made
 * here, while decoding, which is protected: putting a closure back
 * (nsh_codec_pool_put) then allocates nothing, and so cannot fail. */
static int poolable(struct dec *d, struct nsh_fnentry *e) {
  lua_State *L = d->L;

  if (e->children < 0) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, d->c->children_ref);
    lua_pushvalue(L, -2);
    lua_call(L, 1, 1);
    e->children = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  if (e->children)
    return 0;
  if (e->pool == LUA_NOREF) {
    lua_createtable(L, POOL_PER_KEY, 0);
    e->pool = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return 1;
}


void nsh_codec_pool_put(struct nsh_ctx *c, lua_State *L, int idx,
                        struct nsh_poolkey key) {
  struct nsh_fnentry *e;

  if (c->fns == NULL || key.slot < 0 || key.slot >= FN_SETS * FN_WAYS)
    return;
  e = &c->fns->e[key.slot];
  if (e->serial != key.serial || e->len == 0 || e->pool == LUA_NOREF)
    return;                              /* the entry went to another */
  lua_pushvalue(L, idx);
  if (!has_globals(L)) {
    lua_pop(L, 1);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->pool);
  if (lua_objlen(L, -1) < POOL_PER_KEY) {
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
  }
  lua_pop(L, 2);
}


static int decode_function(struct dec *d) {
  lua_State *L = d->L;
  const char *bc;
  size_t n;
  uint64_t nups, i, fid;
  struct nsh_fnentry *e;
  int f, flags, share, reuse, pooled;

  if (d->p >= d->end)
    return bad(d, "a truncated function");
  flags = *d->p++;
  if (get_lstr(d, &bc, &n) != 0 || get_varint(d, &nups) != 0)
    return -1;
  /* Without upvalues the shared closure of load_function serves; the
   * job's own function may come from, and go back to, the pool.  Other
   * functions are loaded afresh and need no entry in the cache. */
  share = (nups == 0 || (flags & FN_SELF)) && !(flags & FN_ENV);
  reuse = (flags & FN_REUSE) && nups > 0 && d->index == 0 &&
          d->depth == 1 && d->c->children_ref != LUA_NOREF;
  e = share || reuse ? fn_entry(d->c, bc, n) : NULL;
  reuse = reuse && e != NULL;
  pooled = reuse && take_pooled(d, e);
  if (!pooled && load_function(d, share ? e : NULL, bc, n) != 0)
    return -1;
  if (pooled || (reuse && poolable(d, e))) {
    d->pool.slot = (int)(e - d->c->fns->e);
    d->pool.serial = e->serial;
  }
  f = lua_gettop(L);
  add_ref(d);

  for (i = 1; i <= nups; i++) {
    if (d->p < d->end && *d->p == T_UPREF) {
      d->p++;
      if (get_varint(d, &fid) != 0 || d->p >= d->end)
        return -1;
      if (fid == 0 || fid > (uint64_t)d->nobj)
        return bad(d, "a join to an unknown function");
      push_ref(d, fid);
      if (!lua_isfunction(L, -1))
        return bad(d, "a join to something that is not a function");
      lua_upvaluejoin(L, f, (int)i, -1, *d->p++);
      lua_pop(L, 1);
      continue;
    }
    if (decode(d) != 0)
      return -1;
    if (lua_setupvalue(L, f, (int)i) == NULL)
      lua_pop(L, 1);
  }
  if (flags & FN_ENV) {
    if (decode(d) != 0)
      return -1;
    if (lua_istable(L, -1))
      lua_setfenv(L, f);
    else
      lua_pop(L, 1);
  }
  return 0;
}


/* A 64-bit integer: a new cdata of the kind, its 8 bytes filled in. */
static int decode_int64(struct dec *d, int kind) {
  lua_State *L = d->L;

  if ((size_t)(d->end - d->p) < 8)
    return bad(d, "a truncated integer");
  if (d->c->new_int64_ref == LUA_NOREF)
    return bad(d, "a 64-bit integer, which this state cannot make");
  lua_rawgeti(L, LUA_REGISTRYINDEX, d->c->new_int64_ref);
  lua_pushinteger(L, kind);
  lua_call(L, 1, 1);
  memcpy((void *)lua_topointer(L, -1), d->p, 8);
  d->p += 8;
  add_ref(d);
  return 0;
}


/* Like encode_fresh: deep values go on being decoded on a new thread;
 * the result comes back to d->L. */
static int decode_fresh(struct dec *d) {
  lua_State *L = d->L, *T;
  int r, refs = d->refs;

  T = fresh_thread(L, refs, 2);
  if (T == NULL)
    return bad(d, "a value nested too deeply for the Lua stack");
  d->L = T;
  d->refs = 1, d->stdfn = 2;
  r = decode(d);
  d->L = L;
  d->refs = refs, d->stdfn = refs + 1;
  if (r == 0) {
    lua_xmove(T, L, 1);
    lua_remove(L, -2);
  } else {
    lua_pop(L, 1);
  }
  return r;
}


static int decode(struct dec *d) {
  lua_State *L = d->L;
  const char *s;
  size_t n;
  uint64_t id;
  lua_Number x;
  int tag, r;

  if (d->p >= d->end)
    return bad(d, "a truncated message");
  if (lua_gettop(L) > FRESH_AT && (*d->p == T_TABLE || *d->p == T_FUNC))
    return decode_fresh(d);
  if (!lua_checkstack(L, 8))
    return bad(d, "a value nested too deeply for the Lua stack");
  tag = *d->p++;
  switch (tag) {
  case T_NIL: lua_pushnil(L); return 0;
  case T_FALSE: lua_pushboolean(L, 0); return 0;
  case T_TRUE: lua_pushboolean(L, 1); return 0;
  case T_NUM:
    if ((size_t)(d->end - d->p) < sizeof(x))
      return bad(d, "a truncated number");
    memcpy(&x, d->p, sizeof(x));
    d->p += sizeof(x);
    lua_pushnumber(L, x);
    return 0;
  case T_STR:
    if (get_lstr(d, &s, &n) != 0)
      return -1;
    lua_pushlstring(L, s, n);
    return 0;
  case T_REF:
    if (get_varint(d, &id) != 0)
      return -1;
    if (id == 0 || id > (uint64_t)d->nobj)
      return bad(d, "a reference to an unknown object");
    push_ref(d, id);
    return 0;
  case T_I64:
  case T_U64:
    return decode_int64(d, tag == T_I64 ? 1 : 2);
  case T_STD:
    if (get_lstr(d, &s, &n) != 0)
      return -1;
    lua_pushlstring(L, s, n);
    lua_rawget(L, d->stdfn);
    if (lua_isnil(L, -1))
      return bad(d, "a standard value this state does not have");
    return 0;
  case T_TABLE:
  case T_FUNC:
    if (d->depth >= MAX_DEPTH)
      return bad(d, "a value nested too deeply");
    d->depth++;
    r = tag == T_TABLE ? decode_table(d) : decode_function(d);
    d->depth--;
    return r;
  default:
    return bad(d, "an unknown tag");
  }
}


/* Forgets the message's ids, and gives their slots back to the decode
 * this one ran inside, if any. */
static void clear_refs(struct dec *d) {
  for (int i = 1; i <= d->nobj; i++) {
    lua_pushnil(d->L);
    lua_rawseti(d->L, d->refs, d->base + i);
  }
  d->c->dec_top = d->base;
}


/* Are the n values at p all nil, booleans, numbers or strings?  Then
 * they decode without the tables that objects need. */
static int plain_values(struct dec *d, uint64_t n) {
  const unsigned char *p = d->p;
  const char *s;
  size_t len;
  int plain = 1;

  for (; n > 0 && plain; n--) {
    if (d->p >= d->end)
      break;
    switch (*d->p++) {
    case T_NIL: case T_FALSE: case T_TRUE:
      break;
    case T_NUM:
      d->p += (size_t)(d->end - d->p) < sizeof(lua_Number) ?
              (size_t)(d->end - d->p) : sizeof(lua_Number);
      break;
    case T_STR:
      plain = get_lstr(d, &s, &len) == 0;
      break;
    default:
      plain = 0;
    }
  }
  d->p = p;
  d->err = NULL;
  return plain;
}


int nsh_codec_decode(struct nsh_ctx *c, lua_State *L, const char *data,
                     size_t len) {
  struct dec d;
  uint64_t n, i;
  int base, ntabs = 0;

  memset(&d, 0, sizeof(d));
  d.pool.slot = -1;
  d.base = c->dec_top;
  d.c = c;
  d.L = L;
  d.p = (const unsigned char *)data;
  d.end = d.p + len;
  base = lua_gettop(L);
  if (get_varint(&d, &n) != 0)
    goto error;
  if (n > 8000 || !lua_checkstack(L, (int)n + 8)) {
    bad(&d, "too many values for the Lua stack");
    goto error;
  }
  if (!plain_values(&d, n)) {
    push_tab(c, L, TB_REFS);
    push_tab(c, L, TB_STDFN);
    d.refs = base + 1;
    d.stdfn = base + 2;
    ntabs = 2;
  }
  for (d.index = 0; d.index < n; d.index++)
    if (decode(&d) != 0)
      goto error;

  c->decoded_pool = d.pool;
  clear_refs(&d);
  for (i = 0; i < (uint64_t)ntabs; i++)
    lua_remove(L, base + 1);
  return (int)n;

error:
  clear_refs(&d);
  lua_settop(L, base);
  lua_pushfstring(L, "cannot decode a message: %s", d.err);
  return -1;
}

/* ---- Standard functions ------------------------------------------------ */

/* Every function reachable from the globals and the standard tables of
 * a fresh state gets a name, such as "string.format"; both sides hold a
 * map each way.  Any state has the same names for the same builtins, so
 * the name alone carries the function.  Built before any user code
 * runs, so a script's own globals are never taken for standard ones. */

/* names[v] = name and fns[name] = v for the value on top (popped); the
 * first name found for a value wins, and every name resolves. */
static void add_name(lua_State *L, int names, int fns, const char *name) {
  lua_pushstring(L, name);
  lua_pushvalue(L, -2);
  lua_rawset(L, fns);
  lua_pushvalue(L, -1);
  lua_rawget(L, names);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushstring(L, name);
    lua_rawset(L, names);
  } else {
    lua_pop(L, 2);
  }
}


/* Names every function, userdata and table below the table at tab:
 * "print", "string.format", "jit.opt.start", "package.loaders.2". */
static void walk(lua_State *L, int names, int fns, const char *prefix,
                 int tab, int depth) {
  char name[128];
  int t;

  lua_pushnil(L);
  while (lua_next(L, tab) != 0) {
    t = lua_type(L, -1);
    if (lua_type(L, -2) == LUA_TSTRING)
      snprintf(name, sizeof(name), "%s%s%s", prefix ? prefix : "",
               prefix ? "." : "", lua_tostring(L, -2));
    else if (lua_type(L, -2) == LUA_TNUMBER)
      snprintf(name, sizeof(name), "%s.%d", prefix ? prefix : "",
               (int)lua_tonumber(L, -2));
    else
      t = LUA_TNIL;
    if (t == LUA_TFUNCTION || t == LUA_TUSERDATA ||
        (t == LUA_TTABLE && depth < 2 && strcmp(name, "package.loaded") &&
         strcmp(name, "_G"))) {
      lua_pushvalue(L, -1);
      add_name(L, names, fns, name);
      if (t == LUA_TTABLE)
        walk(L, names, fns, name, lua_gettop(L), depth + 1);
    }
    lua_pop(L, 1);
  }
}


static int require_p(lua_State *L) {
  lua_getglobal(L, "require");
  lua_insert(L, 1);
  lua_call(L, 1, 1);
  return 1;
}


void nsh_codec_open(lua_State *L) {
  static const char *const extra[] = {
    "ffi", "jit.util", "jit.profile", "table.new", "table.clear", NULL
  };
  struct nsh_ctx *c = nsh_ctx_of(L);
  int names, fns, i;

  push_registry_table(L, &key_stdname, NULL);
  push_registry_table(L, &key_stdfn, NULL);
  names = lua_gettop(L) - 1;
  fns = names + 1;
  lua_pushvalue(L, LUA_GLOBALSINDEX);
  add_name(L, names, fns, "_G");
  walk(L, names, fns, NULL, LUA_GLOBALSINDEX, 0);

  /* LuaJIT's own modules, which a script gets with require. */
  for (i = 0; extra[i] != NULL; i++) {
    lua_pushcfunction(L, require_p);
    lua_pushstring(L, extra[i]);
    if (lua_pcall(L, 1, 1, 0) != 0 || lua_isnil(L, -1)) {
      lua_pop(L, 1);
      continue;
    }
    lua_pushvalue(L, -1);
    add_name(L, names, fns, extra[i]);
    if (lua_istable(L, -1))
      walk(L, names, fns, extra[i], lua_gettop(L), 1);
    lua_pop(L, 1);
  }

  /* The helpers that run jobs submitted from C (client.c). */
  lua_getfield(L, LUA_REGISTRYINDEX, "nshost.call");
  add_name(L, names, fns, "nshost.call");
  lua_getfield(L, LUA_REGISTRYINDEX, "nshost.eval");
  add_name(L, names, fns, "nshost.eval");

  /* The methods of files (io.stdout:write) and of job handles. */
  lua_getglobal(L, "io");
  lua_getfield(L, -1, "stdout");
  if (lua_getmetatable(L, -1)) {
    lua_getfield(L, -1, "__index");
    if (lua_istable(L, -1))
      walk(L, names, fns, "file", lua_gettop(L), 1);
    lua_pop(L, 2);
  }
  lua_pop(L, 2);
  luaL_getmetatable(L, "nshost.job");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "__index");
    if (lua_istable(L, -1))
      walk(L, names, fns, "job", lua_gettop(L), 1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);

  /* The same objects as a set in C, which the encoder asks first.  The
   * names table keeps them alive, so their addresses stay theirs. */
  if (c != NULL) {
    c->std.gen = 1;
    lua_pushnil(L);
    while (lua_next(L, names) != 0) {
      lua_pop(L, 1);
      if (ids_add(&c->std, lua_topointer(L, -1), 1) != 0)
        luaL_error(L, "not enough memory");
    }
  }
  lua_pop(L, 2);
}

/* ---- Building and reading messages from C ---------------------------- */

/* nshost_args_t and nshost_result_t (client.c) write and read the same
 * format as the codec, through these. */

int nsh_wire_put(struct nsh_buf *b, int kind, const void *p, size_t n) {
  unsigned char tmp[10];
  size_t k = 0;
  uint64_t v = n;

  if (nsh_buf_reserve(b, 1 + 10 + n + 1) != 0)
    return NSHOST_ENOMEM;
  switch (kind) {
  case NSHOST_TNIL:
    b->data[b->len++] = T_NIL;
    return 0;
  case NSHOST_TBOOLEAN:
    b->data[b->len++] = n ? T_TRUE : T_FALSE;
    return 0;
  case NSHOST_TNUMBER:
    b->data[b->len++] = T_NUM;
    memcpy(b->data + b->len, p, sizeof(lua_Number));
    b->len += sizeof(lua_Number);
    return 0;
  case NSHOST_TTABLE:               /* begin: no array run */
    b->data[b->len++] = T_TABLE;
    b->data[b->len++] = 0;
    return 0;
  case NSHOST_TOTHER:               /* end of a table: no metatable */
    b->data[b->len++] = T_NIL;
    b->data[b->len++] = T_NIL;
    return 0;
  default:                          /* a string, or NSH_WIRE_STD a name */
    b->data[b->len++] = kind == NSH_WIRE_STD ? T_STD : T_STR;
    do {
      tmp[k] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
      k++;
    } while ((v >>= 7) != 0);
    memcpy(b->data + b->len, tmp, k);
    b->len += k;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
  }
}


/* The type of the value at p, in nshost.h's terms. */
int nsh_wire_type(const char *p) {
  switch ((unsigned char)*p) {
  case T_NIL: return NSHOST_TNIL;
  case T_FALSE: case T_TRUE: return NSHOST_TBOOLEAN;
  case T_NUM: return NSHOST_TNUMBER;
  case T_STR: return NSHOST_TSTRING;
  case T_TABLE: return NSHOST_TTABLE;
  default: return NSHOST_TOTHER;
  }
}


static int skip(struct dec *d);

static int skip_lstr(struct dec *d) {
  const char *s;
  size_t n;

  return get_lstr(d, &s, &n);
}


static int skip_function(struct dec *d) {
  uint64_t nups, i, x;
  int flags;

  if (d->p >= d->end)
    return -1;
  flags = *d->p++;
  if (skip_lstr(d) != 0 || get_varint(d, &nups) != 0)
    return -1;
  for (i = 0; i < nups; i++) {
    if (d->p < d->end && *d->p == T_UPREF) {
      d->p++;
      if (get_varint(d, &x) != 0 || d->p >= d->end)
        return -1;
      d->p++;
    } else if (skip(d) != 0) {
      return -1;
    }
  }
  return (flags & FN_ENV) ? skip(d) : 0;
}


int nsh_wire_true(const char *p) {
  return (unsigned char)*p == T_TRUE;
}


/* Steps over one value without making it. */
static int skip(struct dec *d) {
  uint64_t n, i;
  int tag;

  if (d->p >= d->end)
    return -1;
  tag = *d->p++;
  switch (tag) {
  case T_NIL: case T_FALSE: case T_TRUE:
    return 0;
  case T_NUM: case T_I64: case T_U64:
    if (d->end - d->p < 8)
      return -1;
    d->p += 8;
    return 0;
  case T_STR: case T_STD:
    return skip_lstr(d);
  case T_REF:
    return get_varint(d, &n);
  case T_FUNC:
    return skip_function(d);
  case T_TABLE:
    if (get_varint(d, &n) != 0)
      return -1;
    i = 0;
    if (d->p < d->end && *d->p == T_NUMS) {
      uint64_t count;
      int pad;
      d->p++;
      if (get_varint(d, &count) != 0 || d->p >= d->end)
        return -1;
      pad = *d->p++;
      if (count > n || pad > 7 ||
          (uint64_t)(d->end - d->p) < pad + count * 8)
        return -1;
      d->p += pad + count * 8;
      i = count;
    }
    for (; i < n; i++)
      if (skip(d) != 0)
        return -1;
    while (d->p < d->end && *d->p != T_NIL)
      if (skip(d) != 0 || skip(d) != 0)
        return -1;
    if (d->p >= d->end)
      return -1;
    d->p++;
    return skip(d);
  default:
    return -1;
  }
}


/* Finds where each top-level value of a message starts: *at gets a
 * new array of them (the caller frees it).  Returns the count, or -1 if
 * the message is malformed or there is no memory. */
int nsh_wire_index(const char *data, size_t len, const char ***at) {
  struct dec d;
  uint64_t n, i;

  *at = NULL;
  memset(&d, 0, sizeof(d));
  d.p = (const unsigned char *)data;
  d.end = d.p + len;
  if (get_varint(&d, &n) != 0 || n > len)
    return -1;
  *at = malloc((n > 0 ? n : 1) * sizeof(**at));
  if (*at == NULL)
    return -1;
  for (i = 0; i < n; i++) {
    (*at)[i] = (const char *)d.p;
    if (skip(&d) != 0)
      return -1;
  }
  return (int)n;
}


/* The string value at p, a message ending at end: its bytes. */
const char *nsh_wire_string(const char *p, const char *end, size_t *len) {
  struct dec d;
  const char *s;

  memset(&d, 0, sizeof(d));
  d.p = (const unsigned char *)p + 1;
  d.end = (const unsigned char *)end;
  if (get_lstr(&d, &s, len) != 0)
    return NULL;
  return s;
}
