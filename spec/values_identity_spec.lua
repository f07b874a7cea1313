-- Issue 3, points 1, 2, 4 and 5: identity within one message, functions
-- (recursion, shared upvalues, debug info), metatables and function
-- environments, each checked with the exact values that must come out.
-- values_spec.lua already covers plain tables, a table that contains
-- itself, a table sent twice, and functions with simple upvalues.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local support = dofile(here .. "support.lua")
local pack, echo = support.pack, support.echo
local assert_has, error_of = support.assert_has, support.error_of

-- The line this is called from.
local function line()
  return debug.getinfo(2, "l").currentline
end

describe("identity within one message", function()
  it("keeps one table used in many places, across arguments", function()
    local s = { "shared" }
    local t = { [s] = s, list = { s, s }, deep = { deeper = { s } } }
    local r = pack(runtime.spawn(function(t, s2)
      local k, v = next(t, nil)
      while type(k) ~= "table" do k, v = next(t, k) end
      return k == v, t.list[1] == t.list[2], t.list[1] == k,
        t.deep.deeper[1] == k, s2 == k, s2[1]
    end, t, s):await())
    assert.are.same({ n = 6, true, true, true, true, true, "shared" }, r)
  end)

  it("keeps sharing in the results, which are one message too", function()
    local a, b, c = runtime.spawn(function()
      local s = { 1 }
      return s, { s, s }, { inner = { s } }
    end):await()
    assert.are.equal(a, b[1])
    assert.are.equal(a, b[2])
    assert.are.equal(a, c.inner[1])
    assert.are.same({ 1 }, a)
  end)

  it("keeps a cycle of three tables", function()
    local a, b, c = { name = "a" }, { name = "b" }, { name = "c" }
    a.next, b.next, c.next = b, c, a
    local r = pack(runtime.spawn(function(x)
      return x.next.next.next == x, x.next.next.name, x.next.name
    end, a):await())
    assert.are.same({ n = 3, true, "c", "b" }, r)
    local back = echo(a)
    assert.are.equal(back, back.next.next.next)
    assert.are_not.equal(a, back)
  end)

  it("keeps a table that is its own key and value", function()
    local a = {}
    a[a] = a
    local r = pack(runtime.spawn(function(x)
      local k, v = next(x)
      return k == x, v == x, next(x, k) == nil
    end, a):await())
    assert.are.same({ n = 3, true, true, true }, r)
  end)

  it("keeps a table that is its own metatable", function()
    local t = { tag = "self" }
    t.__index = t
    setmetatable(t, t)
    local r = pack(runtime.spawn(function(x)
      return getmetatable(x) == x, x.__index == x, x.tag
    end, t):await())
    assert.are.same({ n = 3, true, true, "self" }, r)
  end)

  it("keeps a cycle that goes through a function's upvalue", function()
    local box = { n = 41 }
    box.get = function() return box end
    local r = pack(runtime.spawn(function(b)
      return b.get() == b, b.get().n + 1
    end, box):await())
    assert.are.same({ n = 2, true, 42 }, r)
  end)

  it("takes keys of every sendable kind", function()
    local kt = { name = "table key" }
    local function kf(x) return x * 2 end
    local t = {
      [kt] = "t", [kf] = "f", [true] = "yes", [false] = "no",
      [1.5] = "float", [-7] = "negative", [2 ^ 60] = "big",
      [-math.huge] = "-inf", [print] = "print", ["\0k"] = "bin",
      [string.format] = "format",
      kt = kt, kf = kf,
    }
    local r = pack(runtime.spawn(function(x)
      local n = 0
      for _ in pairs(x) do n = n + 1 end
      return n, x[x.kt], x[x.kf], x[true], x[false], x[1.5], x[-7],
        x[2 ^ 60], x[-1 / 0], x[print], x["\0k"], x[string.format],
        x.kf(21), x.kt.name
    end, t):await())
    assert.are.same({ n = 14, 13, "t", "f", "yes", "no", "float",
      "negative", "big", "-inf", "print", "bin", "format", 42,
      "table key" }, r)
    local back = echo(t)
    assert.are.equal("t", back[back.kt])
    assert.are.equal("f", back[back.kf])
    assert.are.equal("print", back[print])
    assert.are.equal("format", back[string.format])
    assert.are.equal(84, back.kf(42))
  end)

  it("keeps one function used in many places as one function", function()
    local function f(x) return x + 1 end
    local r = pack(runtime.spawn(function(a, t, b)
      return a == b, t[a] == a, t.f == a, a(1)
    end, f, { [f] = f, f = f }, f):await())
    assert.are.same({ n = 4, true, true, true, 2 }, r)
  end)

  it("keeps two closures of one function literal apart", function()
    -- Same bytecode, no upvalues, but two objects: as keys they are two
    -- keys.
    local fs = {}
    for i = 1, 3 do fs[i] = function() return "same code" end end
    local t = { [fs[1]] = "a", [fs[2]] = "b", [fs[3]] = "c" }
    local r = pack(runtime.spawn(function(x, a, b)
      local n = 0
      for _ in pairs(x) do n = n + 1 end
      return n, a == b, x[a], x[b]
    end, t, fs[1], fs[2]):await())
    assert.are.same({ n = 4, 3, false, "a", "b" }, r)
    local back = echo(t)
    local seen = {}
    for _, v in pairs(back) do seen[#seen + 1] = v end
    table.sort(seen)
    assert.are.same({ "a", "b", "c" }, seen)
  end)

  it("does not keep identity between two messages", function()
    local t = { n = 1 }
    local a = echo(t)
    local b = echo(t)
    assert.are_not.equal(a, b)
    assert.are.same(a, b)
  end)
end)

describe("functions", function()
  -- The value of the upvalue called name of f, and its index.
  local function upvalue(f, name)
    for i = 1, 255 do
      local n, v = debug.getupvalue(f, i)
      if n == nil then
        return nil
      end
      if n == name then
        return v, i
      end
    end
  end

  it("take upvalues that take upvalues, three levels down", function()
    local base = 100
    local function one(x) return x + base end
    local t = { k = 2 }
    local function two(x) return one(x) * t.k end
    local function three(x) return two(x) - 1 end
    assert.are.equal(209, runtime.spawn(function(x)
      return three(x)
    end, 5):await())
  end)

  it("keep a self-recursive local function working as an upvalue",
     function()
    local function fact(n)
      if n <= 1 then return 1 end
      return n * fact(n - 1)
    end
    local r = pack(runtime.spawn(function(x)
      return fact(x), fact == select(2, debug.getupvalue(fact, 1))
    end, 10):await())
    assert.are.same({ n = 2, 3628800, true }, r)
  end)

  it("keep a self-recursive function that refers to itself as itself",
     function()
    local function f(n)
      if n == 0 then return f end
      return f(n - 1)
    end
    local r = pack(runtime.spawn(function(g) return g(3) == g end, f)
      :await())
    assert.are.same({ n = 1, true }, r)
  end)

  it("keep mutually recursive functions sent as arguments", function()
    local even, odd
    function even(n) if n == 0 then return true end return odd(n - 1) end
    function odd(n) if n == 0 then return false end return even(n - 1) end
    local r = pack(runtime.spawn(function(e, o)
      local _, eo = debug.getupvalue(e, 1)
      local _, oe = debug.getupvalue(o, 1)
      return e(10), o(7), e(7), eo == o, oe == e
    end, even, odd):await())
    assert.are.same({ n = 5, true, true, false, true, true }, r)
  end)

  it("come back from a worker recursive and working", function()
    local fib = runtime.spawn(function()
      local function fib(n)
        if n < 2 then return n end
        return fib(n - 1) + fib(n - 2)
      end
      return fib
    end):await()
    assert.are.equal(610, fib(15))
    assert.are.equal(fib, upvalue(fib, "fib"))
  end)

  describe("sharing one local", function()
    it("still share it when sent as two arguments", function()
      local n = 0
      local function inc() n = n + 1 end
      local function get() return n end
      local r = pack(runtime.spawn(function(a, b)
        a(); a()
        return b()
      end, inc, get):await())
      assert.are.same({ n = 1, 2 }, r)
      assert.are.equal(0, n)
    end)

    it("still share it as upvalues of the job", function()
      local n = 0
      local function inc() n = n + 1 end
      local function get() return n end
      local r = pack(runtime.spawn(function()
        inc(); inc()
        return get()
      end):await())
      assert.are.same({ n = 1, 2 }, r)
      assert.are.equal(0, n)
    end)

    it("have one upvalue id in the worker", function()
      local n = 0
      local function inc() n = n + 1 end
      local function get() return n end
      local _, ii = upvalue(inc, "n")
      local _, gi = upvalue(get, "n")
      local r = pack(runtime.spawn(function(a, b, i, j)
        return debug.upvalueid(a, i) == debug.upvalueid(b, j)
      end, inc, get, ii, gi):await())
      assert.are.same({ n = 1, true }, r)
    end)

    it("share it with the job function itself", function()
      local n = 0
      local function get() return n end
      for _ = 1, 3 do
        assert.are.equal(5, runtime.spawn(function(g)
          n = n + 5
          return g()
        end, get):await())
      end
      assert.are.equal(0, n)
    end)

    it("share it when the closures sit in different tables", function()
      local n = 0
      local ops = { inc = function(k) n = n + k end }
      local view = { nested = { get = function() return n end } }
      assert.are.equal(7, runtime.spawn(function(o, v)
        o.inc(3); o.inc(4)
        return v.nested.get()
      end, ops, view):await())
    end)

    it("keep two locals apart, each shared", function()
      local p, q = 0, 0
      local function fp() p = p + 1 end
      local function fq() q = q + 10 end
      local function both() return p, q end
      local r = pack(runtime.spawn(function(a, b, c)
        a(); b(); b(); a(); a()
        return c()
      end, fp, fq, both):await())
      assert.are.same({ n = 2, 3, 20 }, r)
    end)

    it("come back from a worker sharing it", function()
      local inc, get = runtime.spawn(function()
        local m = 10
        return function() m = m + 1 end, function() return m end
      end):await()
      inc(); inc()
      assert.are.equal(12, get())
    end)

    it("start from the value at spawn in every job", function()
      local n = 0
      local function inc() n = n + 1 end
      local function get() return n end
      for _ = 1, 5 do
        assert.are.equal(2, runtime.spawn(function()
          inc(); inc()
          return get()
        end):await())
      end
    end)
  end)

  it("of one source run at once keep their own upvalues", function()
    local jobs = {}
    for i = 1, 100 do
      local x = i
      jobs[i] = runtime.spawn(function(ms)
        local before = x
        runtime.sleep(ms)
        x = x + 1000
        return before, x
      end, i % 3)
    end
    for i = 1, 100 do
      assert.are.same({ n = 2, i, i + 1000 }, pack(jobs[i]:await()))
    end
  end)

  describe("debug information", function()
    it("keeps the file and line of the job and its upvalues", function()
      local helper_line = line() + 1
      local function helper() local i = debug.getinfo(1, "Sl"); return i end
      local job_line = line() + 1
      local r = pack(runtime.spawn(function()
        local h = helper()
        local me = debug.getinfo(1, "Sl")
        return h.short_src, h.linedefined, h.currentline,
          me.linedefined, me.currentline
      end):await())
      assert.are.equal(5, r.n)
      assert.truthy(r[1]:find("values_identity_spec.lua$"), r[1])
      assert.are.same({ helper_line, helper_line, job_line, job_line + 2 },
        { r[2], r[3], r[4], r[5] })
    end)

    it("gives a traceback with file:line for each frame", function()
      local inner_line = line() + 2
      local function inner(x)
        error("inner failed with " .. x)
      end
      local middle_line = line() + 1
      local function middle(x) inner(x) end
      local job_line = line() + 2
      local err = error_of(function()
        return runtime.spawn(function(x) middle(x) end, 7):await()
      end)
      local ok, missing = support.in_order(err, {
        ("values_identity_spec.lua:%d: inner failed with 7")
          :format(inner_line),
        "stack traceback",
        ("values_identity_spec.lua:%d: in function 'inner'")
          :format(inner_line),
        ("values_identity_spec.lua:%d:"):format(middle_line),
        ("values_identity_spec.lua:%d:"):format(job_line),
      })
      assert.is_true(ok, ("no %q in:\n%s"):format(tostring(missing), err))
    end)

    it("gives file:line for a function sent as an argument", function()
      local bad_line = line() + 1
      local bad = function(x) return x.field end
      local err = error_of(function()
        return runtime.spawn(function(f) return f(nil) end, bad):await()
      end)
      assert_has(err, ("values_identity_spec.lua:%d: attempt to index")
        :format(bad_line))
    end)

    it("gives file:line for a function that came back", function()
      local made_line = line() + 2
      local f = runtime.spawn(function()
        return function() error("from a returned function") end
      end):await()
      local err = error_of(f)
      assert.are.equal(("%s:%d: from a returned function"):format(
        debug.getinfo(1, "S").short_src, made_line), err)
    end)
  end)
end)

describe("metatables", function()
  local function class()
    local C = {}
    C.__index = C
    function C.new(x, y) return setmetatable({ x = x, y = y }, C) end
    function C:len2() return self.x * self.x + self.y * self.y end
    return C
  end

  it("of objects sent together are one copy, also with the class",
     function()
    local Vec = class()
    local a, b, c = Vec.new(3, 4), Vec.new(1, 1), Vec.new(0, 2)
    local r = pack(runtime.spawn(function(x, nest, cls)
      local m = getmetatable(x)
      return x:len2(), nest.list[1]:len2(), nest.obj:len2(),
        m == getmetatable(nest.list[1]), m == getmetatable(nest.obj),
        m == cls, m.__index == m
    end, a, { list = { b }, obj = c }, Vec):await())
    assert.are.same({ n = 7, 25, 2, 4, true, true, true, true }, r)
  end)

  it("of an object and its class as an upvalue are one copy", function()
    local Vec = class()
    local r = pack(runtime.spawn(function(v)
      return getmetatable(v) == Vec, Vec.new(2, 2):len2()
    end, Vec.new(1, 2)):await())
    assert.are.same({ n = 2, true, 8 }, r)
  end)

  it("are carried when hidden behind __metatable", function()
    local Vec = class()
    Vec.__metatable = "locked"
    local a, b = Vec.new(3, 4), Vec.new(6, 8)
    local r = pack(runtime.spawn(function(x, y)
      local m = debug.getmetatable(x)
      return getmetatable(x), type(m), m == debug.getmetatable(y),
        rawget(m, "__metatable"), x:len2(), y:len2()
    end, a, b):await())
    assert.are.same({ n = 6, "locked", "table", true, "locked", 25, 100 },
      r)
  end)

  it("keep their metamethods working", function()
    local P = {}
    P.__index = P
    P.__add = function(p, q) return setmetatable({ v = p.v + q.v }, P) end
    P.__eq = function(p, q) return p.v == q.v end
    P.__lt = function(p, q) return p.v < q.v end
    P.__tostring = function(p) return "P(" .. p.v .. ")" end
    P.__call = function(p, k) return p.v * k end
    P.__concat = function(p, s) return tostring(p) .. s end
    P.__newindex = function(p, k, v) rawset(p, k, v * 2) end
    local function new(v) return setmetatable({ v = v }, P) end
    local r = pack(runtime.spawn(function(a, b)
      local s = a + b
      a.extra = 5
      return tostring(s), s == new(7), a < b, a(10), a .. "!",
        rawget(a, "extra")
    end, new(3), new(4)):await())
    assert.are.same({ n = 6, "P(7)", true, true, 30, "P(3)!", 10 }, r)
  end)

  it("keep a chain of classes for inheritance", function()
    local Base = {}
    Base.__index = Base
    function Base:kind() return "base:" .. self.name end
    function Base:hello() return "hello " .. self.name end
    local Derived = setmetatable({}, { __index = Base })
    Derived.__index = Derived
    function Derived:kind() return "derived:" .. self.name end
    local obj = setmetatable({ name = "o" }, Derived)
    local r = pack(runtime.spawn(function(o)
      return o:kind(), o:hello(),
        getmetatable(getmetatable(o)).__index == Base
    end, obj):await())
    assert.are.same({ n = 3, "derived:o", "hello o", true }, r)
  end)

  it("come back with results, shared between them", function()
    local a, b = runtime.spawn(function()
      local C = {}
      C.__index = C
      C.__metatable = false
      function C:area() return self.w * self.h end
      return setmetatable({ w = 2, h = 3 }, C),
        setmetatable({ w = 4, h = 5 }, C)
    end):await()
    assert.are.equal(6, a:area())
    assert.are.equal(20, b:area())
    assert.is_false(getmetatable(a))
    assert.are.equal(debug.getmetatable(a), debug.getmetatable(b))
  end)

  it("come back with an object sent out and returned", function()
    local Vec = class()
    local v = Vec.new(6, 8)
    local back = echo(v)
    assert.are.equal(100, back:len2())
    assert.are_not.equal(Vec, getmetatable(back))
    assert.are.equal(getmetatable(back).len2(back), 100)
  end)
end)

describe("environments", function()
  it("of setfenv with a plain table go along as a copy", function()
    local f = setfenv(function() return y end, { y = 5 })
    assert.are.same({ n = 1, 5 }, pack(runtime.spawn(f):await()))
  end)

  it("hold only what the table holds, not the globals", function()
    local f = setfenv(function() return y, print, runtime end, { y = 5 })
    assert.are.same({ n = 3, 5 }, pack(runtime.spawn(f):await()))
  end)

  it("go along for upvalues and arguments too", function()
    local f = setfenv(function() return y * 2 end, { y = 5 })
    local g = setfenv(function() return z .. "!" end, { z = "zed" })
    local r = pack(runtime.spawn(function(h) return f(), h() end, g)
      :await())
    assert.are.same({ n = 2, 10, "zed!" }, r)
  end)

  it("of load with an environment go along", function()
    local f = assert(load("return y + 1, print", "=chunk", "t",
      { y = 41 }))
    assert.are.same({ n = 2, 42 }, pack(runtime.spawn(f):await()))
  end)

  it("of loadstring with setfenv go along", function()
    local f = setfenv(assert(loadstring("return z")), { z = "zz" })
    assert.are.same({ n = 1, "zz" }, pack(runtime.spawn(f):await()))
  end)

  it("shared by two functions stay one table", function()
    local env = { count = 0 }
    local f1 = setfenv(function() count = count + 1 end, env)
    local f2 = setfenv(function() return count end, env)
    local r = pack(runtime.spawn(function(a, b)
      a(); a()
      return b(), getfenv(a) == getfenv(b)
    end, f1, f2):await())
    assert.are.same({ n = 2, 2, true }, r)
    assert.are.equal(0, env.count)
  end)

  it("keep their metatable when it does not lead to the globals",
     function()
    local env = setmetatable({}, { __index = { y = 9 } })
    local f = setfenv(function() return y end, env)
    assert.are.same({ n = 1, 9 }, pack(runtime.spawn(f):await()))
  end)

  it("come back with a function made in the worker", function()
    local g = runtime.spawn(function()
      return setfenv(function() return q end, { q = "back" })
    end):await()
    assert.are.equal("back", g())
    assert.are.equal("back", getfenv(g).q)
  end)

  it("that stand for the globals, as busted's, give the worker's globals",
     function()
    -- This very function has busted's per-file environment.
    local job = function()
      return getfenv(1) == _G, type(describe), type(runtime),
        type(string.format)
    end
    assert.are_not.equal(_G, getfenv(job))
    assert.are.same({ n = 4, true, "nil", "table", "function" },
      pack(runtime.spawn(job):await()))
  end)

  it("with _G reached through __index give the worker's globals",
     function()
    local env = setmetatable({ describe = "spec only" },
      { __index = _G })
    local f = setfenv(function()
      return getfenv(1) == _G, type(describe), type(runtime)
    end, env)
    assert.are.same({ n = 3, true, "nil", "table" },
      pack(runtime.spawn(f):await()))
  end)

  it("set by a job on itself do not reach later jobs", function()
    -- setfenv(1, env) is Lua 5.1's way for a function to change its own
    -- environment (module() does it too). Each job is its own closure:
    -- a later job of the same function must not run in that table.
    local set = setfenv
    local function job(poison)
      return runtime.spawn(function()
        if poison then
          set(1, { y = "leaked" })
        end
        return y
      end)
    end
    for _ = 1, 20 do
      assert.are.equal("leaked", job(true):await())
    end
    local got = {}
    for i = 1, 20 do
      got[i] = tostring(job(false):await())
    end
    assert.are.equal(string.rep("nil ", 20), table.concat(got, " ") .. " ")
  end)

  it("set by a job on a function it got do not reach later jobs",
     function()
    local set = setfenv
    local g = function() return y end
    local got = {}
    for i = 1, 20 do
      got[i] = tostring(runtime.spawn(function(f, poison)
        if poison then
          set(f, { y = "leaked" })
        end
        return f()
      end, g, i <= 10):await())
    end
    assert.are.equal(string.rep("leaked ", 10) .. string.rep("nil ", 10),
      table.concat(got, " ") .. " ")
  end)

  it("never bring the caller's globals along", function()
    rawset(_G, "NSHOST_SPEC_SECRET", { 1 })
    local ok, r = pcall(function()
      return pack(runtime.spawn(function()
        return rawget(_G, "NSHOST_SPEC_SECRET"), type(NSHOST_SPEC_SECRET)
      end):await())
    end)
    rawset(_G, "NSHOST_SPEC_SECRET", nil)
    assert.is_true(ok, tostring(r))
    assert.are.same({ n = 2, nil, "nil" }, r)
  end)
end)
