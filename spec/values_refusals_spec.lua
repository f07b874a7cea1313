-- Issue 3, points 7 and 8: refusals name the whole path to the value and
-- its type, and leave the runtime usable with nothing leaked; nesting
-- 10,000 levels deep works, 20,000 fails with a clear message; a 100 MB
-- string and a table of a million entries cross.
-- values_spec.lua already covers the argument number, an upvalue's name,
-- a key path, and 100 refusals followed by jobs.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local support = dofile(here .. "support.lua")
local pack, assert_has = support.pack, support.assert_has
local refusal = support.refusal

local THREAD = "cannot send a thread"
local USERDATA = "cannot send a userdata"
local CFUNCTION = "cannot send a C function that is not from the "
  .. "standard library"

-- Resident memory of this process in kB.
local function rss_kb()
  local f = io.open("/proc/self/status", "r")
  if not f then
    return nil
  end
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

-- A chain of n tables: root.next.next... n links, the last with n.
local function chain(n, key)
  local root = {}
  local cur = root
  for i = 1, n do
    local t = { i = i }
    cur[key or "next"] = t
    cur = t
  end
  return root
end

-- Counts the links of a chain.
local function depth(t, key)
  key = key or "next"
  local k = 0
  while t[key] do t = t[key]; k = k + 1 end
  return k, t.i
end

describe("refusals", function()
  local co = coroutine.create(function() end)
  local ud = newproxy(false)
  local gen = coroutine.wrap(function() end)

  it("give the path upvalue 'cfg' > key 'db' > upvalue 'sock'", function()
    local sock = ud
    local cfg = { db = function() return sock end }
    local err = refusal(function() return cfg end)
    assert.are.equal("runtime.spawn: the function > upvalue 'cfg' > "
      .. "key 'db' > upvalue 'sock': " .. USERDATA
      .. " (C data that only its own state knows)", err)
  end)

  it("give the path through numbers, booleans and nested upvalues",
     function()
    local inner = { [3] = { [true] = co } }
    local function helper() return inner end
    local err = refusal(function(a, b) return b end, 1,
      { list = { helper } })
    assert_has(err, "runtime.spawn: argument #2 > key 'list' > key 1 > "
      .. "upvalue 'inner' > key 3 > key true: " .. THREAD)
  end)

  it("give the path through a metatable", function()
    local obj = setmetatable({}, { __index = { conn = ud } })
    local err = refusal(function(x) return x end, obj)
    assert_has(err, "argument #1 > metatable > key '__index' > "
      .. "key 'conn': " .. USERDATA)
  end)

  it("give the path through an environment", function()
    local f = setfenv(function() return 1 end, { lock = co })
    local err = refusal(f)
    assert_has(err, "the function > environment > key 'lock': " .. THREAD)
    err = refusal(function(g) return g end, f)
    assert_has(err, "argument #1 > environment > key 'lock': " .. THREAD)
  end)

  it("name the type of a refused key", function()
    local err = refusal(function(x) return x end, { [co] = 1 })
    assert_has(err, "argument #1 > a key of type thread: " .. THREAD)
    err = refusal(function(x) return x end, { [{}] = gen })
    assert_has(err, "argument #1 > a key of type table: " .. CFUNCTION)
  end)

  it("name a C function that is not standard as the job", function()
    local err = refusal(gen)
    assert_has(err, "the function: " .. CFUNCTION)
  end)

  it("keep the argument in a path more than 24 steps deep", function()
    local t = chain(40)
    local cur = t
    while cur.next do cur = cur.next end
    cur.bad = co
    local err = refusal(function(a, b) return b end, 1, t)
    assert.are.equal("runtime.spawn: argument #2 > ", err:sub(1, 29))
    assert_has(err, "key 'bad': " .. THREAD)
    local h = runtime.spawn(function()
      local root = {}
      local c = root
      for _ = 1, 40 do
        c.next = {}
        c = c.next
      end
      c.bad = coroutine.create(print)
      return 1, root
    end)
    local ok
    ok, err = pcall(h.await, h)
    assert.is_false(ok)
    assert_has(err, "result #2 > ")
  end)

  it("name a result that cannot come back", function()
    local h = runtime.spawn(function()
      return 1, { ok = true, co = coroutine.create(print) }
    end)
    local ok, err = pcall(h.await, h)
    assert.is_false(ok)
    assert_has(err, "result #2 > key 'co': " .. THREAD)
  end)

  it("queue nothing and hold nothing: 10,000 in a row, then jobs",
     function()
    local blob = string.rep("z", 65536)
    local function job(...) return ... end
    local hidden = co
    local function burst(n)
      for i = 1, n do
        assert.is_false((pcall(runtime.spawn, job, blob, { blob }, co)))
        assert.is_false((pcall(runtime.spawn, function()
          return blob, hidden, i
        end)))
      end
      collectgarbage()
      collectgarbage()
      return collectgarbage("count"), rss_kb()
    end
    local kb0, rss0 = burst(200)
    local kb1, rss1 = burst(5000)
    -- 10,000 refusals, each of a message of more than 64 kB: a leak of
    -- the message or of the objects met would show in megabytes.
    assert.is_true(kb1 - kb0 < 1024, ("Lua heap grew from %d kB to %d kB")
      :format(kb0, kb1))
    if rss0 and rss1 then
      assert.is_true(rss1 - rss0 < 64 * 1024,
        ("resident memory grew from %d kB to %d kB"):format(rss0, rss1))
    end
    local jobs = {}
    for i = 1, 50 do
      jobs[i] = runtime.spawn(function(x) return x * 2 end, i)
    end
    for i = 1, 50 do
      assert.are.equal(2 * i, jobs[i]:await())
    end
  end)

  it("in a worker leave it usable too", function()
    local r = pack(runtime.spawn(function()
      local c = coroutine.create(print)
      local fails = 0
      for _ = 1, 1000 do
        if not pcall(runtime.spawn, function(x) return x end, { c }) then
          fails = fails + 1
        end
      end
      return fails, runtime.spawn(function() return "ok" end):await()
    end):await())
    assert.are.same({ n = 2, 1000, "ok" }, r)
  end)
end)

describe("limits", function()
  it("a chain of tables 10,000 deep crosses both ways", function()
    local ok, r = pcall(function()
      return pack(runtime.spawn(function(t)
        local k = 0
        while t.next do t = t.next; k = k + 1 end
        return k, t.i
      end, chain(10000)):await())
    end)
    assert.is_true(ok, tostring(ok or r:sub(1, 300)))
    assert.are.same({ n = 2, 10000, 10000 }, r)
    local back
    ok, back = pcall(function()
      return runtime.spawn(function(t) return t end, chain(10000)):await()
    end)
    assert.is_true(ok, tostring(ok or back:sub(1, 300)))
    assert.are.same({ 10000, 10000 }, { depth(back) })
  end)

  it("a chain 10,000 deep through array slots crosses", function()
    local ok, r = pcall(function()
      return pack(runtime.spawn(function(t)
        local k = 0
        while t[1] do t = t[1]; k = k + 1 end
        return k, t.i
      end, chain(10000, 1)):await())
    end)
    assert.is_true(ok, tostring(ok or r:sub(1, 300)))
    assert.are.same({ n = 2, 10000, 10000 }, r)
  end)

  it("a chain 10,000 deep made in a worker comes back", function()
    local ok, back = pcall(function()
      return runtime.spawn(function()
        local root = {}
        local cur = root
        for i = 1, 10000 do
          cur.next = { i = i }
          cur = cur.next
        end
        return root
      end):await()
    end)
    assert.is_true(ok, tostring(ok or back:sub(1, 300)))
    assert.are.same({ 10000, 10000 }, { depth(back) })
  end)

  it("a chain of 10,000 closures works or fails clearly", function()
    local f = function() return 0 end
    for _ = 1, 10000 do
      local g = f
      f = function() return g() + 1 end
    end
    local ok, r = pcall(function() return runtime.spawn(f):await() end)
    if ok then
      assert.are.equal(10000, r)
    else
      assert_has(r, "nested")
    end
    assert.are.equal(1, runtime.spawn(function() return 1 end):await())
  end)

  it("says why a job's error value stays in the worker", function()
    local ok, err = pcall(function()
      return runtime.spawn(function()
        error({ code = 7, u = newproxy() })
      end):await()
    end)
    assert.is_false(ok)
    assert.are.equal("(error object is a table value) (the error value "
      .. "stays in the worker: error value #1 > key 'u': cannot send a "
      .. "userdata (C data that only its own state knows))",
      err:match("^[^\n]*"))
  end)

  it("keeps a job's error message whole, zero bytes and all", function()
    local ok, err = pcall(function()
      return runtime.spawn(function() error("a\0b\0c", 0) end):await()
    end)
    assert.is_false(ok)
    local want = "a\0b\0c\nstack traceback (worker "
    assert.are.equal(want, err:sub(1, #want))
  end)

  it("names the line of the spawn when Lua code called it", function()
    local line
    local ok, err = pcall(function()
      line = debug.getinfo(1, "l").currentline + 1
      local h = runtime.spawn(function(x) return x end, newproxy())
      return h
    end)
    assert.is_false(ok)
    assert.are.equal("values_refusals_spec.lua:" .. line
      .. ": runtime.spawn: argument #1: cannot send a userdata",
      err:match("[^/]*$"):sub(1, #("values_refusals_spec.lua:" .. line)
        + 52))
  end)

  it("20,000 deep is refused with a clear message, no crash", function()
    local err = refusal(function(t) return t end, chain(20000))
    assert.are.equal("runtime.spawn: ", err:sub(1, 15))
    assert_has(err, "nested")
    assert.is_true(#err < 2000, "a message of " .. #err .. " bytes")
    assert.are.equal(2, runtime.spawn(function() return 2 end):await())
  end)

  it("20,000 deep made in a worker fails at await, no crash", function()
    local h = runtime.spawn(function()
      local root = {}
      local cur = root
      for _ = 1, 20000 do
        cur.next = {}
        cur = cur.next
      end
      return root
    end)
    local ok, err = pcall(h.await, h)
    assert.is_false(ok)
    assert_has(err, "nested")
    assert.are.equal(3, runtime.spawn(function() return 3 end):await())
  end)

  it("caches of functions stay bounded: 12,000 distinct functions",
     function()
    -- The Lua heap of the workers, taken as the largest figure each
    -- worker reports after a full collection.
    local function workers_kb()
      local most, jobs = {}, {}
      for i = 1, 20 * runtime.threads() do
        jobs[i] = runtime.spawn(function()
          collectgarbage()
          collectgarbage()
          return runtime.worker_id(), collectgarbage("count")
        end)
      end
      for i = 1, #jobs do
        local id, kb = jobs[i]:await()
        most[id] = math.max(most[id] or 0, kb)
      end
      local sum = 0
      for _, kb in pairs(most) do sum = sum + kb end
      return sum
    end
    -- n functions, each of its own bytecode, with or without upvalues.
    local function storm(n, base, with_upvalue)
      local jobs = {}
      for i = 1, n do
        local f
        if with_upvalue then
          f = loadstring("local u = ... return function() return u + "
            .. (base + i) .. " end")(i)
        else
          f = loadstring("return " .. (base + i))
        end
        jobs[#jobs + 1] = runtime.spawn(f)
        if #jobs == 100 then
          for _, j in ipairs(jobs) do j:await() end
          jobs = {}
        end
      end
      for _, j in ipairs(jobs) do j:await() end
    end
    storm(3000, 0, false)
    storm(3000, 1e5, true)
    local kb0 = workers_kb()
    storm(3000, 2e5, false)
    storm(3000, 3e5, true)
    local kb1 = workers_kb()
    assert.is_true(kb1 - kb0 < 1024, ("the workers' heaps grew from %d kB "
      .. "to %d kB"):format(kb0, kb1))
  end)

  it("a 100 MB string crosses both ways", function()
    local s = string.rep("0123456789abcdef", 100 * 1024 * 1024 / 16 - 1)
      .. "\0\1\2\3\4\5\6\7\8\9\10\11\12\13\14\255"
    local r = pack(runtime.spawn(function(x)
      return #x, x:sub(1, 4), x:byte(50 * 1024 * 1024 + 3),
        x:sub(-4), x
    end, s):await())
    assert.are.equal(5, r.n)
    assert.are.equal(100 * 1024 * 1024, r[1])
    assert.are.equal("0123", r[2])
    assert.are.equal(("2"):byte(), r[3])
    assert.are.equal("\12\13\14\255", r[4])
    assert.are.equal(#s, #r[5])
    assert.is_true(r[5] == s, "the 100 MB string came back changed")
    r, s = nil, nil
    collectgarbage()
  end)

  it("a table of a million entries crosses both ways", function()
    local t = {}
    for i = 1, 500000 do
      t[i] = i
      t["k" .. i] = -2 * i
    end
    local r = pack(runtime.spawn(function(x)
      local n, sum = 0, 0
      for _, v in pairs(x) do
        n = n + 1
        sum = sum + v
      end
      return n, sum, #x, x
    end, t):await())
    assert.are.equal(4, r.n)
    assert.are.same({ 1000000, -125000250000, 500000 }, { r[1], r[2], r[3] })
    local n, sum, wrong = 0, 0, 0
    for k, v in pairs(r[4]) do
      n = n + 1
      sum = sum + v
      if t[k] ~= v then wrong = wrong + 1 end
    end
    assert.are.same({ 1000000, -125000250000, 0 }, { n, sum, wrong })
  end)
end)
