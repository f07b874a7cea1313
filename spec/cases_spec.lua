-- The cases V1..V13 of shared/cases/values.md, each twice: checked in
-- this process with exact values, and run as its own script with
-- `nshost --threads 2 case.lua` (V13 with --threads 1 too), comparing
-- what it prints. The scripts are the cases' text, with long lines
-- broken to fit 80 columns.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local support = dofile(here .. "support.lua")
local pack, assert_has = support.pack, support.assert_has

-- Whether a message names a worker as "worker N", N in 1..threads
-- (by default the threads of this process).
local function mentions_worker(msg, threads)
  threads = threads or runtime.threads()
  for n in tostring(msg):gmatch("[Ww]orker (%d+)") do
    n = tonumber(n)
    if n >= 1 and n <= threads then
      return true
    end
  end
  return false
end

describe("cases in this process", function()
  it("V1 captured locals travel with the function", function()
    local base, scale = 10, { k = 3 }
    local r = pack(runtime.spawn(function(x)
      return base + x * scale.k
    end, 4):await())
    assert.are.same({ n = 1, 22 }, r)
  end)

  it("V2 recursive and mutually recursive local functions", function()
    local function fib(n)
      if n < 2 then return n end
      return fib(n - 1) + fib(n - 2)
    end
    local even, odd
    function even(n) if n == 0 then return true end return odd(n - 1) end
    function odd(n) if n == 0 then return false end return even(n - 1) end
    assert.are.same({ n = 1, 6765 }, pack(runtime.spawn(fib, 20):await()))
    assert.are.same({ n = 1, true }, pack(runtime.spawn(odd, 7):await()))
    assert.are.same({ n = 1, false }, pack(runtime.spawn(even, 7):await()))
  end)

  it("V3 self-reference, shared references, deep nesting", function()
    local node = { name = "a" }; node.self = node
    local shared = { 1, 2 }
    local pair = { left = shared, right = shared }
    local deep, cur = {}, nil
    cur = deep
    for _ = 1, 200 do cur.next = {}; cur = cur.next end
    local r = pack(runtime.spawn(function(nd, p, d)
      local k = 0
      while d.next do d = d.next; k = k + 1 end
      return nd.self == nd, p.left == p.right, k
    end, node, pair, deep):await())
    assert.are.same({ n = 3, true, true, 200 }, r)
  end)

  it("V4 objects keep their class", function()
    local Vec = {}; Vec.__index = Vec
    function Vec.new(x, y) return setmetatable({ x = x, y = y }, Vec) end
    function Vec:len2() return self.x * self.x + self.y * self.y end
    local r = pack(runtime.spawn(function(a, b)
      return a:len2(), getmetatable(a) == getmetatable(b)
    end, Vec.new(3, 4), Vec.new(1, 1)):await())
    assert.are.same({ n = 2, 25, true }, r)
    local v = runtime.spawn(function(v) return v end, Vec.new(6, 8)):await()
    assert.are.equal(100, v:len2())
  end)

  it("V5 standard library functions kept in locals", function()
    local fmt, floor, tn = string.format, math.floor, tonumber
    local r = pack(runtime.spawn(function(x)
      return fmt("%d|%s", floor(x), tn("0x10"))
    end, 7.9):await())
    assert.are.same({ n = 1, "7|16" }, r)
  end)

  it("V5 a standard library function used as the job", function()
    -- print itself is checked by the script below; here a quiet one.
    assert.are.equal(0, select("#", runtime.spawn(math.randomseed, 1)
      :await()))
    assert.are.equal(1, select("#", runtime.spawn(tostring, nil):await()))
  end)

  it("V6 a C function not from the standard library is refused by name",
     function()
    local gen = coroutine.wrap(function() coroutine.yield(1) end)
    local r = pack(pcall(runtime.spawn, function() return gen() end))
    assert.are.equal(2, r.n)
    assert.is_false(r[1])
    assert.are.equal("string", type(r[2]))
    assert_has(r[2], "upvalue 'gen'")
    assert_has(r[2], "function")
  end)

  it("V6 nothing was queued", function()
    local path = support.tmpname()
    local gen = coroutine.wrap(function() coroutine.yield(1) end)
    assert.is_false((pcall(runtime.spawn, function()
      local f = io.open(path, "w")
      f:write("ran")
      f:close()
      return gen()
    end)))
    runtime.sleep(300)
    assert.is_false(support.exists(path), "the refused job ran")
  end)

  it("V7 the caller's globals are not the worker's", function()
    CONFIG = { retries = 3 }
    local ok, err = pcall(function()
      return runtime.spawn(function() return CONFIG.retries end):await()
    end)
    assert.is_false(ok)
    assert_has(err, "attempt to index global 'CONFIG' (a nil value)")
    assert_has(err, "stack traceback")
    assert.is_true(mentions_worker(err), "no worker id in:\n" .. err)
    local r = pack(runtime.spawn(function()
      return type(runtime), type(CONFIG)
    end):await())
    assert.are.same({ n = 2, "table", "nil" }, r)
    CONFIG = nil
  end)

  it("V8 binary strings, nils anywhere, many arguments", function()
    local blob = "a\0b\255" .. string.rep("\0", 1000)
    local r = pack(runtime.spawn(function(...)
      return select("#", ...), #(select(2, ...)), (select(4, ...))
    end, nil, blob, nil, "end", nil):await())
    assert.are.same({ n = 3, 5, 1004, "end" }, r)
    local many = {}
    for i = 1, 40 do many[i] = i end
    r = pack(runtime.spawn(function(...)
      return select("#", ...)
    end, unpack(many, 1, 40)):await())
    assert.are.same({ n = 1, 40 }, r)
    assert.are.equal(0, select("#", runtime.spawn(function() end):await()))
  end)

  it("V9 an error reaches the awaiter with the worker's traceback",
     function()
    local inner_line = debug.getinfo(1, "l").currentline + 1
    local function inner(x) error("bad input: " .. tostring(x)) end
    local job_line = debug.getinfo(1, "l").currentline + 1
    local h = runtime.spawn(function(x) inner(x) end, 42)
    local ok, err = pcall(h.await, h)
    assert.is_false(ok)
    local text = tostring(err)
    local ok2, missing = support.in_order(text, {
      ("cases_spec.lua:%d: bad input: 42"):format(inner_line),
      "stack traceback",
      ("cases_spec.lua:%d:"):format(inner_line),
      "inner",
      ("cases_spec.lua:%d:"):format(job_line),
    })
    assert.is_true(ok2, ("no %q in:\n%s"):format(tostring(missing), text))
    assert.is_true(mentions_worker(text), "no worker id in:\n" .. text)
  end)

  it("V10 error values that are not strings", function()
    local function run(job)
      return pcall(function() return runtime.spawn(job):await() end)
    end
    local ok1 = run(function() error() end)
    local ok2, e2 = run(function() error({ code = 7 }) end)
    local ok3, e3 = run(function()
      error(setmetatable({}, { __tostring = function() return "custom" end }))
    end)
    assert.are.same({ n = 5, false, false, false, 7, "custom" },
      pack(ok1, ok2, ok3, type(e2) == "table" and e2.code, tostring(e3)))
  end)

  it("V11 a refused spawn leaves the runtime usable", function()
    local co = coroutine.create(function() end)
    local r = pack(pcall(runtime.spawn, function(c) return c end, co))
    assert.are.equal(2, r.n)
    assert.is_false(r[1])
    assert_has(r[2], "argument #1")
    assert_has(r[2], "thread")
    assert.are.same({ n = 1, 1 },
      pack(runtime.spawn(function() return 1 end):await()))
  end)

  it("V12 awaiting twice", function()
    local h = runtime.spawn(function() return 99 end)
    assert.are.same({ n = 2, 99, 99 }, pack(h:await(), h:await()))
    local bad = runtime.spawn(function() error("x") end)
    assert.are.same({ n = 2, false, false },
      pack((pcall(bad.await, bad)), (pcall(bad.await, bad))))
  end)

  it("V13 a job that spawns and awaits another job", function()
    local outer = {}
    for i = 1, 16 do
      outer[i] = runtime.spawn(function(n)
        return runtime.spawn(function(m) return m * m end, n):await() + 1
      end, i)
    end
    local s = 0
    for i = 1, 16 do s = s + outer[i]:await() end
    assert.are.equal(1512, s)
  end)
end)

local cases = {}

cases.V1 = {
  script = [[
local base, scale = 10, { k = 3 }
print(runtime.spawn(function(x) return base + x * scale.k end, 4):await())
]],
  out = "22\n",
}

cases.V2 = {
  script = [[
local function fib(n)
  if n < 2 then return n end return fib(n-1) + fib(n-2)
end
local even, odd
function even(n) if n == 0 then return true end return odd(n - 1) end
function odd(n) if n == 0 then return false end return even(n - 1) end
print(runtime.spawn(fib, 20):await(), runtime.spawn(odd, 7):await())
]],
  out = "6765\ttrue\n",
}

cases.V3 = {
  script = [[
local node = { name = "a" }; node.self = node
local shared = { 1, 2 }
local pair = { left = shared, right = shared }
local deep, cur = {}, nil
cur = deep
for _ = 1, 200 do cur.next = {}; cur = cur.next end
print(runtime.spawn(function(nd, p, d)
  local k = 0
  while d.next do d = d.next; k = k + 1 end
  return nd.self == nd, p.left == p.right, k
end, node, pair, deep):await())
]],
  out = "true\ttrue\t200\n",
}

cases.V4 = {
  script = [[
local Vec = {}; Vec.__index = Vec
function Vec.new(x, y) return setmetatable({ x = x, y = y }, Vec) end
function Vec:len2() return self.x * self.x + self.y * self.y end
print(runtime.spawn(function(a, b)
  return a:len2(), getmetatable(a) == getmetatable(b)
end, Vec.new(3, 4), Vec.new(1, 1)):await())
print(runtime.spawn(function(v) return v end, Vec.new(6, 8)):await():len2())
]],
  out = "25\ttrue\n100\n",
}

cases.V5 = {
  script = [[
local fmt, floor, tn = string.format, math.floor, tonumber
print(runtime.spawn(function(x)
  return fmt("%d|%s", floor(x), tn("0x10"))
end, 7.9):await())
print(select("#", runtime.spawn(print, "hello from a worker"):await()))
]],
  out = "7|16\nhello from a worker\n0\n",
}

cases.V6 = {
  script = [[
local gen = coroutine.wrap(function() coroutine.yield(1) end)
print(pcall(runtime.spawn, function() return gen() end))
]],
  check = function(r)
    assert.are.equal("false\t", r.out:sub(1, 6))
    assert_has(r.out, "upvalue 'gen'")
    assert_has(r.out, "function")
  end,
}

cases.V7 = {
  script = [[
CONFIG = { retries = 3 }
print(pcall(function()
  return runtime.spawn(function() return CONFIG.retries end):await()
end))
print(runtime.spawn(function() return type(runtime), type(CONFIG) end):await())
]],
  check = function(r, _, threads)
    assert.are.equal("false\t", r.out:sub(1, 6))
    assert_has(r.out, "attempt to index global 'CONFIG' (a nil value)")
    assert_has(r.out, "stack traceback")
    assert.is_true(mentions_worker(r.out, threads), "no worker id")
    assert.are.equal("\ntable\tnil\n", r.out:sub(-11))
  end,
}

cases.V8 = {
  script = [[
local blob = "a\0b\255" .. string.rep("\0", 1000)
print(runtime.spawn(function(...)
  return select("#", ...), #(select(2, ...)), (select(4, ...))
end, nil, blob, nil, "end", nil):await())
local many = {}
for i = 1, 40 do many[i] = i end
print(runtime.spawn(function(...)
  return select("#", ...)
end, unpack(many, 1, 40)):await())
print(select("#", runtime.spawn(function() end):await()))
]],
  out = "5\t1004\tend\n40\n0\n",
}

cases.V9 = {
  script = [[
local function inner(x) error("bad input: " .. tostring(x)) end
local h = runtime.spawn(function(x) inner(x) end, 42)
local ok, err = pcall(h.await, h)
print(ok)
print(tostring(err))
print("still running")
]],
  check = function(r, path, threads)
    local name = path:match("[^/]+$")
    assert.are.equal("false\n", r.out:sub(1, 6))
    local ok, missing = support.in_order(r.out, {
      name .. ":1: bad input: 42", "stack traceback",
      name .. ":1:", "inner", name .. ":2:",
    })
    assert.is_true(ok, ("no %q"):format(tostring(missing)))
    assert.is_true(mentions_worker(r.out, threads), "no worker id")
    assert.are.equal("\nstill running\n", r.out:sub(-15))
  end,
}

cases.V10 = {
  script = [[
local function run(job)
  return pcall(function() return runtime.spawn(job):await() end)
end
local ok1 = run(function() error() end)
local ok2, e2 = run(function() error({ code = 7 }) end)
local ok3, e3 = run(function()
  error(setmetatable({}, { __tostring = function() return "custom" end }))
end)
print(ok1, ok2, ok3, type(e2) == "table" and e2.code, tostring(e3))
]],
  out = "false\tfalse\tfalse\t7\tcustom\n",
}

cases.V11 = {
  script = [[
local co = coroutine.create(function() end)
print(pcall(runtime.spawn, function(c) return c end, co))
print(runtime.spawn(function() return 1 end):await())
]],
  check = function(r)
    assert.are.equal("false\t", r.out:sub(1, 6))
    local first = r.out:match("^[^\n]*")
    assert_has(first, "argument #1")
    assert_has(first, "thread")
    assert.are.equal("\n1\n", r.out:sub(-3))
  end,
}

cases.V12 = {
  script = [[
local h = runtime.spawn(function() return 99 end)
print(h:await(), h:await())
local bad = runtime.spawn(function() error("x") end)
print((pcall(bad.await, bad)), (pcall(bad.await, bad)))
]],
  out = "99\t99\nfalse\tfalse\n",
}

cases.V13 = {
  script = [[
local outer = {}
for i = 1, 16 do
  outer[i] = runtime.spawn(function(n)
    return runtime.spawn(function(m) return m * m end, n):await() + 1
  end, i)
end
local s = 0
for i = 1, 16 do s = s + outer[i]:await() end
print(s)
]],
  out = "1512\n",
}

local function run_case(name, threads)
  local case = cases[name]
  local path = support.script(case.script)
  local r = support.run(("--threads %d %s"):format(threads,
    support.quote(path)))
  local ok, err = pcall(function()
    assert.are.equal(0, r.status, support.describe(r))
    assert.are.equal("", r.err, support.describe(r))
    if case.out then
      assert.are.equal(case.out, r.out)
    else
      case.check(r, path, threads)
    end
  end)
  os.remove(path)
  if not ok then
    error(err, 0)
  end
end

describe("cases as scripts", function()
  local names = {}
  for name in pairs(cases) do names[#names + 1] = name end
  table.sort(names, function(a, b)
    return tonumber(a:sub(2)) < tonumber(b:sub(2))
  end)
  for _, name in ipairs(names) do
    it(name .. " with --threads 2", function()
      run_case(name, 2)
    end)
  end

  it("V13 with --threads 1", function()
    run_case("V13", 1)
  end)

  it("V2 and V3 with --threads 1", function()
    run_case("V2", 1)
    run_case("V3", 1)
  end)
end)
