-- The codec's and the scheduler's fast paths must not change what
-- arrives: arrays of numbers go as one run of doubles (written and read
-- by loops in Lua), messages of plain values skip the codec's tables,
-- and a worker runs new jobs on the coroutines of finished ones.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local support = dofile(here .. "support.lua")
local pack, echo = support.pack, support.echo

-- The bits of every number in t[1..n], as text, the same on both sides.
local function bits(t, n)
  local ffi = require("ffi")
  local u = ffi.new("union { double d; uint32_t w[2]; }")
  local out = {}
  for i = 1, n do
    if type(t[i]) ~= "number" then
      out[i] = tostring(t[i])
    else
      u.d = t[i]
      out[i] = ("%08x%08x"):format(tonumber(u.w[1]), tonumber(u.w[0]))
    end
  end
  return table.concat(out, " ")
end

describe("arrays of numbers", function()
  it("cross bit-exact with NaN, -0, infinities and denormals in them",
     function()
    local t = {}
    for i = 1, 64 do t[i] = i / 7 end
    t[3], t[10], t[20], t[30], t[40] = 0 / 0, -0.0, math.huge, -math.huge,
      5e-324
    local back = echo(t)
    assert.are.equal(bits(t, 64), bits(back, 64))
    -- And as the worker sees them.
    assert.are.equal(bits(t, 64), runtime.spawn(function(u)
      local ffi = require("ffi")
      local v = ffi.new("union { double d; uint32_t w[2]; }")
      local out = {}
      for i = 1, 64 do
        v.d = u[i]
        out[i] = ("%08x%08x"):format(tonumber(v.w[1]), tonumber(v.w[0]))
      end
      return table.concat(out, " ")
    end, t):await())
  end)

  it("keep what follows the numbers: other values and other keys",
     function()
    local inner = { 1 }
    local t = {}
    for i = 1, 40 do t[i] = i end
    t[41], t[42], t[43] = "forty-one", true, inner
    t.name, t[-1], t[0], t[100], t[1.5] = "x", "minus one", "zero",
      "hundred", "one and a half"
    local back = echo(t)
    assert.are.same(t, back)
    assert.are.equal(43, #back)
  end)

  it("keep the other keys when every value of 1..n is a number",
     function()
    local t = {}
    for i = 1, 30 do t[i] = i * 2 end
    t.extra, t[0], t[31.5] = "kept", "zero", "between"
    local back = echo(t)
    assert.are.same(t, back)
  end)

  it("stop at the first value that is not a number, even a hole",
     function()
    local t = {}
    for i = 1, 50 do t[i] = i end
    t[25] = nil
    local back = echo(t)
    for i = 1, 50 do assert.are.equal(t[i], back[i]) end
    t[25] = "string in the middle"
    back = echo(t)
    for i = 1, 50 do assert.are.equal(t[i], back[i]) end
  end)

  it("are read raw: a metatable's __index and __len are not called",
     function()
    local calls = 0
    local mt = {
      __index = function() calls = calls + 1; return 0 end,
      __len = function() calls = calls + 1; return 1000 end,
    }
    local t = setmetatable({}, mt)
    for i = 1, 20 do rawset(t, i, i + 0.25) end
    local back = echo(t)
    assert.are.equal(0, calls)
    for i = 1, 20 do assert.are.equal(i + 0.25, rawget(back, i)) end
    assert.are.equal(nil, rawget(back, 21))
  end)

  it("arrive in an error value, read at any offset in the message",
     function()
    -- The error text before the value changes its length, so the
    -- doubles land at every alignment.
    for pad = 0, 8 do
      local ok, e = pcall(function()
        return runtime.spawn(function(p)
          local t = { tag = p }
          for i = 1, 24 do t[i] = i + p / 10 end
          error(setmetatable(t, { __tostring = function()
            return ("x"):rep(p)
          end }))
        end, pad):await()
      end)
      assert.is_false(ok)
      assert.are.equal("table", type(e))
      assert.are.equal(pad, e.tag)
      for i = 1, 24 do assert.are.equal(i + pad / 10, e[i]) end
    end
  end)

  -- The encoder proves "no keys besides 1..n" with a shortcut that
  -- depends on where LuaJIT keeps the keys (array or hash part), which
  -- depends on how the table was built.  Build them every which way.
  it("keep every key, however the table was built (2000 tables)",
     function()
    local rand = support.generator(4242)
    local extras = { "name", 0, -1, 0.5, true, 1e9 }
    local sent = {}
    for trial = 1, 2000 do
      local n = 16 + rand(300)
      local order = {}
      for i = 1, n do order[i] = i end
      -- Shuffle some orders, reverse some, keep some.
      local how = rand(3)
      if how == 0 then
        for i = n, 2, -1 do
          local j = 1 + rand(i)
          order[i], order[j] = order[j], order[i]
        end
      elseif how == 1 then
        for i = 1, n do order[i] = n + 1 - i end
      end
      local t = {}
      -- Keys that are not 1..n, put in before, during or after.
      local extra = rand(4) == 0 and extras[1 + rand(#extras)] or nil
      local at = rand(n + 1)
      -- Sometimes a key past n that is removed again, leaving the
      -- array part bigger than n.
      local beyond = rand(3) == 0
      for i = 1, n do
        if extra ~= nil and i == at then t[extra] = "extra" end
        t[order[i]] = order[i] * 0.5
      end
      if extra ~= nil and at == n then t[extra] = "extra" end
      if beyond then
        t[n + 1 + rand(40)] = 1
        for k in pairs(t) do
          if type(k) == "number" and k > n then t[k] = nil end
        end
      end
      sent[trial] = t
    end
    local back = runtime.spawn(function(ts) return ts end, sent):await()
    for trial = 1, #sent do
      local a, b, na, nb = sent[trial], back[trial], 0, 0
      for k, v in pairs(a) do
        na = na + 1
        assert.are.equal(v, b[k], ("table %d, key %s"):format(trial,
          tostring(k)))
      end
      for _ in pairs(b) do nb = nb + 1 end
      assert.are.equal(na, nb, "table " .. trial)
    end
  end)

  it("of 100,000 numbers cross both ways", function()
    local t = {}
    for i = 1, 100000 do t[i] = i * 0.5 end
    local n, sum, back = runtime.spawn(function(u)
      local s = 0
      for i = 1, #u do s = s + u[i] end
      return #u, s, u
    end, t):await()
    assert.are.equal(100000, n)
    assert.are.equal(100000 * 100001 / 4, sum)
    assert.are.equal(100000, #back)
    assert.are.equal(50000, back[100000])
  end)
end)

describe("plain messages", function()
  it("carry nil, booleans, numbers and strings exactly", function()
    local r = pack(echo(nil, false, true, 0, -0.0, 1e308, "", "a\0b"))
    assert.are.equal(8, r.n)
    assert.are.equal(nil, r[1])
    assert.are.equal(false, r[2])
    assert.are.equal(true, r[3])
    assert.are.equal(-math.huge, 1 / r[5])
    assert.are.equal("a\0b", r[8])
  end)
end)

describe("job messages the workers give back for new spawns", function()
  it("carry each new job whole, whatever size the old one was", function()
    -- Sizes 1000..3999 in a fixed random order: a new job often lands in
    -- the buffer of a larger one, and must not see its leftovers.
    local function job(s, n) return #s, s:byte(1), s:byte(-1), n end
    local rng, jobs, want = 12345, {}, {}
    for i = 1, 3000 do
      rng = (rng * 1103515245 + 12345) % 2147483648
      local len = 1000 + rng % 3000
      local s = string.char(i % 256):rep(len - 1) .. string.char(len % 256)
      want[i] = { len, i % 256, len % 256, i }
      jobs[i] = runtime.spawn(job, s, i)
    end
    for i = 1, #jobs do
      assert.are.same(want[i], { jobs[i]:await() }, "job " .. i)
    end
  end)
end)

describe("a worker's reused coroutines", function()
  it("give each job the worker's globals, whatever the last job did",
     function()
    local T = runtime.threads()
    local jobs = {}
    -- Jobs that swap their coroutine's globals for a table of their own,
    -- then jobs that look: every one must see the worker's globals.
    for i = 1, 20 * T do
      jobs[i] = runtime.spawn(function()
        setfenv(0, { marker = true })
        return getfenv(0).marker
      end)
    end
    for i = 1, #jobs do assert.is_true(jobs[i]:await()) end
    for i = 1, 100 * T do
      jobs[i] = runtime.spawn(function()
        return getfenv(0) == _G and _G.marker == nil and
          loadstring("return marker")() == nil
      end)
    end
    for i = 1, 100 * T do assert.is_true(jobs[i]:await(), "job " .. i) end
  end)

  it("run jobs after jobs that failed, yielded or returned many values",
     function()
    local jobs = {}
    for i = 1, 300 do
      local kind = i % 3
      jobs[i] = runtime.spawn(function(k, n)
        if k == 0 then error("failed " .. n, 0) end
        if k == 1 then runtime.sleep(0) end
        return n, n + 1, n + 2
      end, kind, i)
    end
    for i = 1, 300 do
      local r = pack(pcall(jobs[i].await, jobs[i]))
      if i % 3 == 0 then
        assert.are.equal(false, r[1])
        -- The message, then the worker's traceback.
        assert.are.equal("failed " .. i .. "\nstack traceback",
                         (r[2]:match("^[^\n]*\n[^:]*"):gsub(" %(.*", "")))
      else
        assert.are.same({ n = 4, true, i, i + 1, i + 2 }, r)
      end
    end
  end)
end)

-- A worker keeps the functions it loaded in a bounded cache, per
-- bytecode: more distinct functions than it holds must each still run
-- their own code, with or without upvalues, pooled or shared.
describe("a worker's cache of loaded functions", function()
  local function make(i, with_upvalue)
    if with_upvalue then
      local k = i
      return loadstring(("local k = ... return function(x) "
        .. "runtime.sleep(1) return x * %d + k end"):format(i))(k)
    end
    -- Jobs that wait let other jobs load (and evict) in the meantime.
    return loadstring(("return function(x) runtime.sleep(1) "
      .. "return x * %d + %d end"):format(i, i))()
  end

  for _, with_upvalue in ipairs({ true, false }) do
    it("runs each of 600 functions as itself, 4000 jobs, upvalues: "
       .. tostring(with_upvalue), function()
      local rand = support.generator(with_upvalue and 77 or 78)
      local fns = {}
      for i = 1, 600 do fns[i] = make(i, with_upvalue) end
      local jobs, which = {}, {}
      for j = 1, 4000 do
        -- A few hot functions, and a long tail that evicts.
        local i = rand(2) == 0 and 1 + rand(600) or 1 + rand(5)
        which[j] = i
        jobs[j] = runtime.spawn(fns[i], j)
      end
      for j = 1, 4000 do
        local i = which[j]
        assert.are.equal(j * i + i, jobs[j]:await(), "job " .. j)
      end
    end)
  end
end)

-- User code can run in the middle of an encoding: the __index of a
-- function's environment (looked up to see whether it stands for the
-- globals) or a finalizer.  A spawn from there used to overwrite the
-- message being built; now it is refused, and the outer spawn is whole.
describe("a spawn while another spawn's values are being copied", function()
  it("is refused with a message, and the outer job arrives intact",
     function()
    local inner_ok, inner_err
    local env = setmetatable({}, {
      __index = function(_, k)
        if k == "_G" and inner_ok == nil then
          inner_ok, inner_err = pcall(runtime.spawn, function()
            return "inner"
          end)
        end
        return nil
      end,
    })
    local f = setfenv(function(a, b) return a + b, "outer" end, env)
    local sum, tag = runtime.spawn(f, 20, 22):await()
    assert.are.equal(42, sum)
    assert.are.equal("outer", tag)
    assert.is_false(inner_ok)
    assert.is_truthy(tostring(inner_err):find(
      "cannot send values while other values are being sent", 1, true),
      tostring(inner_err))
    -- And spawning works as before.
    assert.are.equal(3, runtime.spawn(function() return 3 end):await())
  end)
end)

-- A state makes the codec's tables the first time it sends a table, and
-- making them allocates, so a finalizer can run there.  The spawn such a
-- finalizer made was let through, because the encoding was marked as
-- under way only after the tables: its message went into the buffer, the
-- outer one was written after it, and the spawner received the inner
-- job's function and argument (`sq, 1`) instead of a worker's tables.
-- Each fresh worker has one chance, so eight workers, ten times over.
describe("a spawn from a finalizer while a state sends its first table",
         function()
  it("is refused, and the outer values arrive whole", function()
    local path = support.script([[
local function arm(n)
  collectgarbage("setpause", 10)
  local function sq(x) return x * x end
  for i = 1, n do
    local p = newproxy(true)
    getmetatable(p).__gc = function() pcall(runtime.spawn, sq, i) end
  end
end
local function work(v)
  local r = {}
  for k, x in pairs(v) do r[k] = x end
  return r
end
local v = { arr = {} }
for k = 1, 100 do v[k] = { k, tostring(k), { k * 0.5 } } end
for k = 1, 2000 do v.arr[k] = k / 3 end
local T, wrong = runtime.threads(), 0
for round = 1, 3 do
  local arms, works = {}, {}
  for w = 1, 2 * T do arms[w] = runtime.spawn(arm, 10) end
  for w = 1, 4 * T do works[w] = runtime.spawn(work, v) end
  for w = 1, #works do
    local r = works[w]:await()
    if type(r) ~= "table" or r[100][2] ~= "100" or #r.arr ~= 2000 then
      wrong = wrong + 1
    end
  end
end
print(wrong)
]])
    for run = 1, 10 do
      local r = support.run("-t 8 " .. path, { timeout = 60 })
      assert.are.equal(0, r.status, support.describe(r))
      assert.are.equal("0\n", r.out, "run " .. run)
    end
    os.remove(path)
  end)
end)

describe("a worker's reused job functions", function()
  it("are not reused under a job that kept its own function", function()
    -- A function that refers to itself can store itself; reusing it
    -- for the next job of the same code would change its upvalues
    -- under the stored copy.
    local function make_job(name)
      local function job(register)
        if register then HANDLER = job end
        return name
      end
      return job
    end
    assert.are.equal("alpha", runtime.spawn(make_job("alpha"), true)
      :await())
    for i = 1, 20 do
      assert.are.equal("beta" .. i, runtime.spawn(make_job("beta" .. i),
        false):await())
    end
    -- Each worker that ran "alpha" still has it; ask every worker.
    local seen = {}
    for i = 1, 40 do
      local v = runtime.spawn(function()
        return HANDLER and HANDLER(false) or "none"
      end):await()
      seen[v] = true
    end
    seen.none = nil
    assert.are.same({ alpha = true }, seen)
  end)

  it("leave a worker's heap bounded over 200,000 jobs of numbers",
     function()
    -- Starting and finishing a job used to leave a small C closure
    -- behind, with nothing to make the collector run: a worker whose
    -- jobs allocated nothing else grew by about 48 bytes a job.
    local function largest_heap(collect)
      local most = 0
      for _ = 1, 10 * runtime.threads() do
        most = math.max(most, runtime.spawn(function(full)
          if full then collectgarbage() end
          return collectgarbage("count")
        end, collect):await())
      end
      return most
    end
    -- What earlier specs left in the workers goes first.
    local before = largest_heap(true)
    local k = 3
    local fns = {
      function(x) return x + 1 end,
      function(x) return x + k end,
    }
    for round = 1, 2 do
      local jobs = {}
      for i = 1, 100000 do jobs[i] = runtime.spawn(fns[round], i) end
      for i = 1, #jobs do assert.are.equal(i + (round == 1 and 1 or k),
        jobs[i]:await()) end
    end
    local after = largest_heap(false)
    assert.is_true(after < before + 1536,
      ("a worker's heap grew from %.0f to %.0f KB"):format(before, after))
  end)
end)

-- User code can run in the middle of a decode too: a finalizer that a
-- GC step runs while the tables of a result are being made.  A job it
-- awaits is decoded inside the outer decode, and both must arrive whole.
describe("a job awaited from a finalizer while a result is read", function()
  it("arrives whole, and so does the result being read", function()
    local inner = {}
    local big = runtime.spawn(function()
      local t = {}
      for i = 1, 20000 do t[i] = { i, tostring(i) } end
      t.self = t
      return t
    end)
    -- The result is here; each await decodes it again.
    big:await()
    collectgarbage()
    for i = 1, 300 do
      local u = newproxy(true)
      getmetatable(u).__gc = function()
        local v = runtime.spawn(function(x) return { x, { x } } end, i)
          :await()
        inner[#inner + 1] = v[1] == i and v[2][1] == i
      end
    end
    -- Busy collecting, so that a cycle ends inside the decode.
    local pause = collectgarbage("setpause", 10)
    local stepmul = collectgarbage("setstepmul", 1000)
    local t = big:await()
    collectgarbage("setpause", pause)
    collectgarbage("setstepmul", stepmul)
    local ran_inside = #inner
    collectgarbage()
    for i = 1, 20000 do
      assert.are.equal(i, t[i][1])
      assert.are.equal(tostring(i), t[i][2])
    end
    assert.are.equal(t, t.self)
    assert.are.equal(300, #inner)
    for i = 1, #inner do assert.is_true(inner[i]) end
    -- The point of the test: some of them ran during the decode.
    assert.is_true(ran_inside > 0, "no finalizer ran during the decode")
  end)
end)
