-- What runtime.spawn carries to a worker and back (issue 2, point 4):
-- nil, booleans, numbers bit-exact, strings byte-exact, nested tables,
-- Lua functions with such upvalues, standard library functions by name;
-- and what it refuses, before anything is queued, naming where it was.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local support = dofile(here .. "support.lua")
local pack, echo, refusal = support.pack, support.echo, support.refusal

-- Asserts that msg holds each piece, in this order.
local function assert_mentions(msg, pieces)
  local ok, missing = support.in_order(msg, pieces)
  assert.is_true(ok, ("no %q in the message: %s"):format(
    tostring(missing), msg))
end

-- A job that leaves a mark in a file when it runs.
local function marker_job(path)
  return function()
    local f = io.open(path, "w")
    f:write("ran")
    f:close()
  end
end

describe("values", function()
  describe("numbers", function()
    local specials = {
      0, -0.0, 1, -1, 0.1, 1 / 3, math.pi, -2.5e-300,
      2 ^ 31, -2 ^ 31, 2 ^ 32 + 1, 2 ^ 52 + 0.5, 2 ^ 53, -2 ^ 53,
      2 ^ 53 - 1, 2 ^ 63, -2 ^ 63, 2 ^ 64, 123456789012345678,
      1.7976931348623157e308, -1.7976931348623157e308,
      2.2250738585072014e-308, 2.225073858507201e-308,
      5e-324, -5e-324, 1e-310, math.huge, -math.huge,
    }

    it("cross bit-exact as arguments and results", function()
      for _, x in ipairs(specials) do
        local y = echo(x)
        assert.are.equal(("%.17g"):format(x), ("%.17g"):format(y))
        assert.is_true(support.same_number(x, y), support.show(x))
      end
    end)

    it("keep the sign of zero", function()
      local y = echo(-0.0)
      assert.are.equal(-math.huge, 1 / y)
      assert.are.equal(math.huge, 1 / echo(0))
    end)

    it("keep NaN", function()
      local y = echo(0 / 0)
      assert.are.equal("number", type(y))
      assert.is_true(y ~= y)
      local z = echo(-(0 / 0))
      assert.is_true(z ~= z)
    end)

    it("keep infinities", function()
      assert.are.equal(math.huge, echo(math.huge))
      assert.are.equal(-math.huge, echo(-math.huge))
    end)

    it("keep the smallest denormal and 2^53", function()
      local tiny = 5e-324
      assert.are.equal(tiny, echo(tiny))
      assert.is_true(echo(tiny) > 0)
      assert.are.equal(0, echo(tiny) / 2)
      assert.are.equal(9007199254740992, echo(2 ^ 53))
      assert.are.equal(2 ^ 53 - 1, echo(9007199254740991))
    end)

    it("are computed on bit-exactly in the worker", function()
      local r = pack(runtime.spawn(function(a, b, c)
        return 1 / a, b ~= b, c * 2, ("%.17g"):format(c)
      end, -0.0, 0 / 0, 5e-324):await())
      assert.are.same({ n = 4, -math.huge, true, 1e-323,
        "4.9406564584124654e-324" }, r)
    end)

    it("all cross together in one table", function()
      local t = {}
      for i, x in ipairs(specials) do t[i] = x end
      t.nan = 0 / 0
      local ok, why = support.deep_same(t, echo(t))
      assert.is_true(ok, why)
    end)
  end)

  describe("strings", function()
    it("cross empty", function()
      assert.are.equal("", echo(""))
    end)

    it("cross with zero bytes", function()
      assert.are.equal("\0", echo("\0"))
      assert.are.equal("a\0b\0", echo("a\0b\0"))
      assert.are.equal(4, #echo("\0\0\0\0"))
    end)

    it("cross with all 256 bytes", function()
      local bytes = {}
      for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
      local all = table.concat(bytes)
      local back = echo(all)
      assert.are.equal(256, #back)
      assert.are.equal(all, back)
      local codes = pack(runtime.spawn(function(s)
        return s:byte(1, -1)
      end, all):await())
      assert.are.equal(256, codes.n)
      for i = 0, 255 do
        assert.are.equal(i, codes[i + 1])
      end
    end)

    it("cross each byte alone", function()
      local list = {}
      for i = 0, 255 do list[i + 1] = string.char(i) end
      local back = pack(echo(unpack(list, 1, 256)))
      assert.are.equal(256, back.n)
      for i = 1, 256 do
        assert.are.equal(list[i], back[i])
      end
    end)

    it("cross at more than 1 MB", function()
      local big = string.rep("\0\1\255x", 300000) .. "end"
      local n, tail, back = runtime.spawn(function(s)
        return #s, s:sub(-3), s
      end, big):await()
      assert.are.equal(1200003, n)
      assert.are.equal("end", tail)
      assert.is_true(back == big, "the 1.2 MB string came back changed")
    end)

    it("cross at 32 MB", function()
      local big = string.rep("0123456789abcde\0", 2 * 1024 * 1024)
      local back = echo(big)
      assert.are.equal(32 * 1024 * 1024, #back)
      assert.is_true(back == big, "the 32 MB string came back changed")
    end)

    it("cross as table keys and values", function()
      local t = { ["\0"] = "zero", ["a\0b"] = "\255\0", [""] = "empty" }
      local ok, why = support.deep_same(t, echo(t))
      assert.is_true(ok, why)
    end)
  end)

  describe("nil and booleans", function()
    it("cross alone and mixed", function()
      assert.are.same({ n = 1, true }, pack(echo(true)))
      assert.are.same({ n = 1, false }, pack(echo(false)))
      assert.are.same({ n = 1 }, pack(echo(nil)))
      assert.are.same({ n = 4, nil, false, nil, true },
        pack(echo(nil, false, nil, true)))
    end)

    it("cross as table keys", function()
      local t = { [true] = "yes", [false] = "no" }
      local back = echo(t)
      assert.are.equal("yes", back[true])
      assert.are.equal("no", back[false])
    end)
  end)

  describe("tables", function()
    it("cross empty", function()
      local back = echo({})
      assert.are.same({}, back)
      assert.is_nil(next(back))
    end)

    it("arrive as a copy", function()
      local t = { 1, 2, 3 }
      local back = echo(t)
      assert.are_not.equal(t, back)
      assert.are.same(t, back)
    end)

    it("cross nested, with mixed keys", function()
      local t = {
        1, "two", { 3, { 4, { 5 } } },
        name = "n", [10] = "ten", [-1] = "minus", [0.5] = "half",
        [2 ^ 40] = "big", [true] = false,
        inner = { deeper = { deepest = { "x", y = "z" } } },
      }
      local ok, why = support.deep_same(t, echo(t))
      assert.is_true(ok, why)
    end)

    it("cross with holes", function()
      local back = echo({ 1, nil, 3, nil, 5 })
      assert.are.equal(1, back[1])
      assert.is_nil(back[2])
      assert.are.equal(3, back[3])
      assert.is_nil(back[4])
      assert.are.equal(5, back[5])
    end)

    it("are usable in the worker", function()
      local sum, count = runtime.spawn(function(t)
        local s, n = 0, 0
        for _, v in ipairs(t.list) do s = s + v end
        for _ in pairs(t.map) do n = n + 1 end
        return s, n
      end, { list = { 1, 2, 3, 4 }, map = { a = 1, b = 2, c = 3 } }):await()
      assert.are.equal(10, sum)
      assert.are.equal(3, count)
    end)

    it("cross nested 1000 levels deep", function()
      local root = {}
      local cur = root
      for i = 1, 1000 do
        cur.next = { i = i }
        cur = cur.next
      end
      local depth, last = runtime.spawn(function(t)
        local k = 0
        while t.next do t = t.next; k = k + 1 end
        return k, t.i
      end, root):await()
      assert.are.equal(1000, depth)
      assert.are.equal(1000, last)
    end)

    it("cross with 200,000 entries", function()
      local t = {}
      for i = 1, 100000 do
        t[i] = i
        t["k" .. i] = -i
      end
      local n, s = runtime.spawn(function(x)
        local n, s = 0, 0
        for _, v in pairs(x) do
          n = n + 1
          s = s + v
        end
        return n, s
      end, t):await()
      assert.are.equal(200000, n)
      assert.are.equal(0, s)
      local ok, why = support.deep_same(t, echo(t))
      assert.is_true(ok, why)
    end)

    it("come back from a job that builds them", function()
      local t = runtime.spawn(function()
        return { list = { 1, 2, 3 }, name = "made in a worker",
          flags = { [true] = 1, [false] = 0 } }
      end):await()
      assert.are.same({ list = { 1, 2, 3 }, name = "made in a worker",
        flags = { [true] = 1, [false] = 0 } }, t)
    end)

    it("keep a table that appears twice as one table", function()
      local shared = { 1 }
      local a, b, c = runtime.spawn(function(x, y, z)
        return x == y.t, y.t == y.u, x == z
      end, shared, { t = shared, u = shared }, shared):await()
      assert.is_true(a)
      assert.is_true(b)
      assert.is_true(c)
    end)

    it("keep a table that contains itself", function()
      local t = { name = "loop" }
      t.me = t
      local back = echo(t)
      assert.are.equal(back, back.me)
      assert.are.equal("loop", back.me.me.name)
    end)
  end)

  describe("functions", function()
    it("cross without upvalues", function()
      local f = function(a, b) return a * b end
      local g = echo(f)
      assert.are.equal("function", type(g))
      assert.are.equal(42, g(6, 7))
    end)

    it("take their upvalues along", function()
      local n, s, t, b = 5, "str\0", { k = { 1, 2 } }, false
      local r = pack(runtime.spawn(function()
        return n, s, t.k[2], b, #s
      end):await())
      assert.are.same({ n = 5, 5, "str\0", 2, false, 4 }, r)
    end)

    it("take nil and special number upvalues along", function()
      local none, nz, inf, nan = nil, -0.0, -math.huge, 0 / 0
      local r = pack(runtime.spawn(function()
        return none == nil, 1 / nz, inf, nan ~= nan
      end):await())
      assert.are.same({ n = 4, true, -math.huge, -math.huge, true }, r)
    end)

    it("take upvalues that are functions with upvalues", function()
      local k = 3
      local function times(x) return x * k end
      local function add_then_times(x, y) return times(x + y) end
      assert.are.equal(21, runtime.spawn(function(a)
        return add_then_times(a, 2)
      end, 5):await())
    end)

    it("cross inside tables", function()
      local k = 10
      local ops = {
        add = function(x) return x + k end,
        nested = { mul = function(x) return x * k end },
      }
      local a, m = runtime.spawn(function(t, x)
        return t.add(x), t.nested.mul(x)
      end, ops, 4):await()
      assert.are.equal(14, a)
      assert.are.equal(40, m)
    end)

    it("come back from a job as working closures", function()
      local f = runtime.spawn(function(base)
        local count = 0
        return function(x)
          count = count + 1
          return base + x, count
        end
      end, 100):await()
      assert.are.equal("function", type(f))
      assert.are.same({ 101, 1 }, { f(1) })
      assert.are.same({ 102, 2 }, { f(2) })
    end)

    it("keep their upvalues' values as at the time of spawn", function()
      local x = 1
      local h = runtime.spawn(function() return x end)
      x = 2
      assert.are.equal(1, h:await())
      assert.are.equal(2, x)
    end)

    it("do not write back to the caller's upvalues", function()
      local counter = 0
      runtime.spawn(function() counter = counter + 1 end):await()
      assert.are.equal(0, counter)
    end)
  end)

  describe("standard library functions", function()
    it("cross by name as arguments", function()
      local r = pack(runtime.spawn(function(f, g, h)
        return f("%05.1f", 3.14159), g(2.7), h("12", 16)
      end, string.format, math.floor, tonumber):await())
      assert.are.same({ n = 3, "003.1", 2, 18 }, r)
    end)

    it("arrive as the worker's own", function()
      local r = pack(runtime.spawn(function(a, b, c, d)
        return a == string.format, b == print, c == table.insert,
          d == coroutine.wrap
      end, string.format, print, table.insert, coroutine.wrap):await())
      assert.are.same({ n = 4, true, true, true, true }, r)
    end)

    it("cross by name as upvalues", function()
      local fmt, rep, insert, concat = string.format, string.rep,
        table.insert, table.concat
      assert.are.equal("1-ab:ab", runtime.spawn(function()
        local t = {}
        insert(t, fmt("%d", 1))
        insert(t, rep("ab", 2, ":"))
        return concat(t, "-")
      end):await())
    end)

    it("cross by name inside tables", function()
      local lib = { up = string.upper, sub = string.sub }
      assert.are.equal("BC", runtime.spawn(function(t, s)
        return t.up(t.sub(s, 2, 3))
      end, lib, "abcd"):await())
    end)

    it("come back by name as results", function()
      local a, b, c = runtime.spawn(function()
        return string.format, print, math.max
      end):await()
      assert.are.equal(string.format, a)
      assert.are.equal(print, b)
      assert.are.equal(math.max, c)
    end)
  end)

  -- runtime is a global of every fresh nshost state, so its functions
  -- exist in every worker just as string.format does (DESIGN, "What can
  -- cross"; issue 3, point 3), and `local spawn = runtime.spawn` is the
  -- same habit as V5's `local fmt = string.format`.
  describe("runtime's own functions", function()
    it("cross by name as upvalues", function()
      local spawn, sleep, wid = runtime.spawn, runtime.sleep,
        runtime.worker_id
      local ok, v = pcall(function()
        return runtime.spawn(function(x)
          sleep(1)
          return spawn(function(y) return y * 2 end, x):await(), wid()
        end, 21):await()
      end)
      assert.is_true(ok, tostring(v))
      assert.are.equal(42, v)
    end)

    it("cross by name as the job", function()
      local ok, id = pcall(function()
        return runtime.spawn(runtime.worker_id):await()
      end)
      assert.is_true(ok, tostring(id))
      assert.is_true(id >= 1 and id <= runtime.threads())
      ok = pcall(function() return runtime.spawn(runtime.sleep, 1):await() end)
      assert.is_true(ok)
    end)

    it("cross inside the runtime table", function()
      local rt = runtime
      local ok, id = pcall(function()
        return runtime.spawn(function() return rt.worker_id() end):await()
      end)
      assert.is_true(ok, tostring(id))
      assert.is_true(id >= 1 and id <= runtime.threads())
    end)
  end)

  describe("refusals", function()
    local co = coroutine.create(function() end)
    local ud = newproxy(false)

    it("name argument #1 and the type thread", function()
      local err = refusal(function(c) return c end, co)
      assert_mentions(err, { "argument #1" })
      assert_mentions(err, { "thread" })
    end)

    it("name argument #2 and the type userdata", function()
      local err = refusal(function(a, b) return b end, 1, ud)
      assert_mentions(err, { "argument #2" })
      assert_mentions(err, { "userdata" })
      assert.falsy(err:find("argument #1", 1, true), err)
    end)

    it("name the argument after nils", function()
      local err = refusal(function(...) return ... end, nil, nil, co)
      assert_mentions(err, { "argument #3" })
    end)

    it("name an upvalue by its name", function()
      local conn = ud
      local err = refusal(function() return conn end)
      assert_mentions(err, { "upvalue 'conn'" })
      assert_mentions(err, { "userdata" })
    end)

    it("name the key path inside a table", function()
      local cfg = { db = { sock = co } }
      local err = refusal(function(c) return c end, cfg)
      assert_mentions(err, { "argument #1", "db", "sock" })
      assert_mentions(err, { "thread" })
    end)

    it("name the path through an upvalue's table", function()
      local settings = { pool = { ud } }
      local err = refusal(function() return settings end)
      assert_mentions(err, { "upvalue 'settings'", "pool" })
      assert_mentions(err, { "userdata" })
    end)

    it("name the path through a nested function's upvalue", function()
      local conn = co
      local function helper() return conn end
      local err = refusal(function() return helper() end)
      assert_mentions(err, { "upvalue 'helper'", "upvalue 'conn'" })
      assert_mentions(err, { "thread" })
    end)

    it("refuse a C function that is not from the standard library",
       function()
      local gen = coroutine.wrap(function() coroutine.yield(1) end)
      local err = refusal(function() return gen() end)
      assert_mentions(err, { "upvalue 'gen'" })
      err = refusal(function(f) return f end, 1, gen)
      assert_mentions(err, { "argument #2" })
      local lfs = require("lfs")
      err = refusal(function(f) return f() end, lfs.currentdir)
      assert_mentions(err, { "argument #1" })
    end)

    it("refuse a C function that is not from the standard library as "
       .. "the job", function()
      local lfs = require("lfs")
      local ok = pcall(runtime.spawn, lfs.currentdir)
      assert.is_false(ok)
    end)

    it("refuse an open file", function()
      local f = io.tmpfile()
      local err = refusal(function(x) return x end, f)
      f:close()
      assert_mentions(err, { "argument #1" })
    end)

    it("queue nothing when a value is refused", function()
      local path = support.tmpname()
      local job = marker_job(path)
      assert.is_false((pcall(runtime.spawn, job, 1, co)))
      assert.is_false((pcall(runtime.spawn, job, { a = { b = ud } })))
      local hidden = co
      assert.is_false((pcall(runtime.spawn, function()
        job()
        return hidden
      end)))
      -- Everything queued before now has run by the end of these jobs.
      local jobs = {}
      for i = 1, 10 * runtime.threads() do
        jobs[i] = runtime.spawn(function() return true end)
      end
      for i = 1, #jobs do jobs[i]:await() end
      runtime.sleep(300)
      assert.is_false(support.exists(path), "a refused job ran")
      os.remove(path)
    end)

    it("leave the runtime usable", function()
      for _ = 1, 100 do
        assert.is_false((pcall(runtime.spawn, function(c) return c end, co)))
      end
      local jobs = {}
      for i = 1, 100 do
        jobs[i] = runtime.spawn(function(x) return x + 1 end, i)
      end
      for i = 1, 100 do
        assert.are.equal(i + 1, jobs[i]:await())
      end
    end)

    it("happen in a job too, naming the path", function()
      local ok, err, after = runtime.spawn(function()
        local c = coroutine.create(function() end)
        local ok, err = pcall(runtime.spawn, function(x) return x end, c)
        local after = runtime.spawn(function() return "still fine" end)
        return ok, err, after:await()
      end):await()
      assert.is_false(ok)
      assert_mentions(tostring(err), { "argument #1" })
      assert_mentions(tostring(err), { "thread" })
      assert.are.equal("still fine", after)
    end)

    it("make await raise when a result cannot be sent back", function()
      local h = runtime.spawn(function()
        return 1, coroutine.create(function() end)
      end)
      local ok, err = pcall(h.await, h)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("thread", 1, true), tostring(err))
      assert.are.equal(5, runtime.spawn(function() return 5 end):await())
    end)
  end)
end)
