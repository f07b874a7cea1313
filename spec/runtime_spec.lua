-- The Lua API of issue 2: runtime.spawn, job:await, runtime.sleep,
-- runtime.worker_id, runtime.threads, jobs inside jobs, and await where
-- the main script cannot yield.
--
-- Functions sent to workers use only their upvalues, their arguments
-- and the standard globals: they run against the worker's globals.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local support = dofile(here .. "support.lua")
local pack, error_of = support.pack, support.error_of

local T = runtime.threads()

-- The worker ids that a message mentions as "worker N".
local function worker_ids_in(msg)
  local ids = {}
  for n in tostring(msg):gmatch("[Ww]orker (%d+)") do
    ids[tonumber(n)] = true
  end
  return ids
end

describe("runtime", function()
  it("is a global table with spawn, sleep, worker_id and threads",
     function()
    assert.are.equal("table", type(runtime))
    for _, name in ipairs({ "spawn", "sleep", "worker_id", "threads" }) do
      assert.are.equal("function", type(runtime[name]), name)
    end
  end)

  describe("worker_id and threads", function()
    it("worker_id is 0 in the main script", function()
      assert.are.equal(0, runtime.worker_id())
    end)

    it("threads is a positive integer", function()
      assert.are.equal("number", type(T))
      assert.is_true(T >= 1)
      assert.are.equal(math.floor(T), T)
    end)

    it("matches NSHOST_THREADS when the runner sets it", function()
      local want = tonumber(os.getenv("NSHOST_THREADS") or "")
      if not want then
        pending("NSHOST_THREADS is not set for this run")
        return
      end
      assert.are.equal(want, T)
    end)

    it("a job sees its own id in 1..T and the same T", function()
      local jobs = {}
      for i = 1, 20 * T do
        jobs[i] = runtime.spawn(function()
          return runtime.worker_id(), runtime.threads()
        end)
      end
      for i = 1, #jobs do
        local id, t = jobs[i]:await()
        assert.are.equal(T, t)
        assert.are.equal("number", type(id))
        assert.are.equal(math.floor(id), id)
        assert.is_true(id >= 1 and id <= T, "worker id " .. tostring(id))
      end
    end)

    it("places jobs on every worker, about evenly", function()
      local n = 400 * T
      local count, jobs = {}, {}
      for i = 1, n do
        jobs[i] = runtime.spawn(function() return runtime.worker_id() end)
      end
      for i = 1, n do
        local id = jobs[i]:await()
        count[id] = (count[id] or 0) + 1
      end
      for id = 1, T do
        -- 400 expected per worker; fewer than 200 means not uniform.
        assert.is_true((count[id] or 0) >= 200,
          ("worker %d ran %d of %d jobs"):format(id, count[id] or 0, n))
      end
    end)

    it("places jobs spawned by a job on other workers too", function()
      if T < 2 then
        pending("needs at least 2 threads")
        return
      end
      local seen = runtime.spawn(function(n)
        local jobs, ids = {}, {}
        for i = 1, n do
          jobs[i] = runtime.spawn(function() return runtime.worker_id() end)
        end
        for i = 1, n do
          ids[jobs[i]:await()] = true
        end
        local k = 0
        for _ in pairs(ids) do k = k + 1 end
        return k
      end, 100 * T):await()
      assert.is_true(seen >= 2, "inner jobs ran on " .. seen .. " worker")
    end)
  end)

  describe("spawn and await", function()
    it("returns what the function returns", function()
      local h = runtime.spawn(function(a, b) return a + b, a .. b end, 2, 3)
      local r = pack(h:await())
      assert.are.same({ n = 2, 5, "23" }, r)
    end)

    it("keeps every result, nils included", function()
      local r = pack(runtime.spawn(function()
        return nil, 1, nil, false, nil
      end):await())
      assert.are.equal(5, r.n)
      assert.are.same({ n = 5, nil, 1, nil, false, nil }, r)
    end)

    it("returns no value for a function that returns none", function()
      local r = pack(runtime.spawn(function() end):await())
      assert.are.equal(0, r.n)
    end)

    it("returns a single nil as one value", function()
      local r = pack(runtime.spawn(function() return nil end):await())
      assert.are.equal(1, r.n)
    end)

    it("passes every argument, trailing nils included", function()
      local r = pack(runtime.spawn(function(...)
        return select("#", ...), ...
      end, nil, 1, nil, nil):await())
      assert.are.same({ n = 5, 4, nil, 1, nil, nil }, r)
    end)

    it("passes no argument when given none", function()
      local n = runtime.spawn(function(...)
        return select("#", ...)
      end):await()
      assert.are.equal(0, n)
    end)

    it("carries 250 arguments and 250 results", function()
      local args = {}
      for i = 1, 250 do args[i] = i * 2 end
      local r = pack(runtime.spawn(function(...)
        return ...
      end, unpack(args, 1, 250)):await())
      assert.are.equal(250, r.n)
      for i = 1, 250 do
        assert.are.equal(i * 2, r[i])
      end
    end)

    it("runs a standard library function as the job", function()
      assert.are.equal("ababab", runtime.spawn(string.rep, "ab", 3):await())
      assert.are.equal(9, runtime.spawn(math.max, 3, 9, 2):await())
      assert.are.equal(3, runtime.spawn(select, "#", 1, nil, 3):await())
      local r = pack(runtime.spawn(tonumber, "0x1F"):await())
      assert.are.same({ n = 1, 31 }, r)
    end)

    it("gives the same results when awaited twice", function()
      local h = runtime.spawn(function() return 1, nil, "x" end)
      local a = pack(h:await())
      local b = pack(h:await())
      assert.are.same({ n = 3, 1, nil, "x" }, a)
      assert.are.same(a, b)
    end)

    it("can await jobs in any order", function()
      local jobs = {}
      for i = 1, 50 do
        jobs[i] = runtime.spawn(function(x) return x * 10 end, i)
      end
      for i = 50, 1, -1 do
        assert.are.equal(i * 10, jobs[i]:await())
      end
    end)

    it("runs 100,000 trivial jobs within seconds", function()
      local n = 100000
      local t0 = support.now()
      local jobs = {}
      for i = 1, n do
        jobs[i] = runtime.spawn(function(x) return x + 1 end, i)
      end
      local sum = 0
      for i = 1, n do
        sum = sum + jobs[i]:await()
      end
      local secs = support.now() - t0
      assert.are.equal(n * (n + 1) / 2 + n, sum)
      assert.is_true(secs < 30, ("took %.1f s"):format(secs))
    end)

    it("refuses a value that is not a function as the job", function()
      local err = error_of(runtime.spawn, 42)
      assert.are.equal("string", type(err))
      assert.truthy(err:find("number", 1, true), err)
      err = error_of(runtime.spawn, "print")
      assert.truthy(err:find("string", 1, true), err)
      err = error_of(runtime.spawn)
      assert.truthy(err:find("nil", 1, true) or err:find("no value", 1, true),
        err)
    end)

    it("raises, and does not crash, when await has no job", function()
      local h = runtime.spawn(function() return 1 end)
      assert.is_false((pcall(h.await)))
      assert.is_false((pcall(h.await, 42)))
      assert.is_false((pcall(h.await, {})))
      assert.are.equal(1, h:await())
    end)
  end)

  -- Misuse raises a message in Lua's words that names the function the
  -- user called and points at the user's line (STYLE, "Errors and
  -- messages at the Lua/C boundary").
  describe("misuse messages", function()
    local function raised_at(f)
      local line = debug.getinfo(f, "S").linedefined
      local ok, err = pcall(f)
      assert.is_false(ok)
      return tostring(err), ("runtime_spec.lua:%d:"):format(line)
    end

    it("spawn names 'spawn' and the caller's line", function()
      local err, where = raised_at(function() runtime.spawn(42) end)
      assert.truthy(err:find(where .. " bad argument #1 to 'spawn' "
        .. "(function expected, got number)", 1, true), err)
    end)

    it("sleep names 'sleep' and the caller's line", function()
      local err, where = raised_at(function() runtime.sleep("x") end)
      assert.truthy(err:find(where .. " bad argument #1 to 'sleep'", 1,
        true), err)
      err, where = raised_at(function() runtime.sleep(-1) end)
      assert.truthy(err:find(where .. " bad argument #1 to 'sleep'", 1,
        true), err)
    end)

    it("sleep says the range, await_all which item is not a job",
       function()
      local err, where = raised_at(function() runtime.sleep(1e300) end)
      assert.truthy(err:find(where .. " bad argument #1 to 'sleep' "
        .. "(milliseconds from 0 to 1e12 expected, got 1e+300)", 1, true),
        err)
      local h = runtime.spawn(function() return 1 end)
      err, where = raised_at(function() runtime.await_all({ h, 2 }) end)
      assert.truthy(err:find(where .. " bad argument #1 to 'await_all' "
        .. "(item 2 is a number, not a job)", 1, true), err)
      assert.are.equal(1, h:await())
    end)

    it("await names 'await' and the caller's line", function()
      local h = runtime.spawn(function() end)
      local err, where = raised_at(function() h.await(42) end)
      assert.truthy(err:find(where, 1, true), err)
      assert.truthy(err:find("'await'", 1, true), err)
      h:await()
    end)
  end)

  describe("a job that raises", function()
    local boom_line = debug.getinfo(1, "l").currentline + 1
    local function boom(x) error("boom " .. tostring(x)) end
    local call_line = debug.getinfo(1, "l").currentline + 2
    local function job(x)
      boom(x)
      return "unreachable"
    end

    it("makes await raise the message as a string", function()
      local err = error_of(function()
        return runtime.spawn(job, 7):await()
      end)
      assert.are.equal("string", type(err))
      local where = ("runtime_spec.lua:%d: boom 7"):format(boom_line)
      assert.truthy(err:find(where, 1, true), err)
    end)

    it("names the worker that ran the job", function()
      local err = error_of(function()
        return runtime.spawn(function()
          error("ran on " .. runtime.worker_id(), 0)
        end):await()
      end)
      local id = tonumber(err:match("ran on (%d+)"))
      assert.is_not_nil(id, err)
      assert.is_true(id >= 1 and id <= T, err)
      assert.is_true(worker_ids_in(err)[id] == true,
        "no 'worker " .. id .. "' in: " .. err)
    end)

    it("carries the worker's traceback with file:line of this spec",
       function()
      local err = error_of(function()
        return runtime.spawn(job, 7):await()
      end)
      local ok, missing = support.in_order(err, {
        "boom 7", "stack traceback",
        ("runtime_spec.lua:%d:"):format(boom_line),
        ("runtime_spec.lua:%d:"):format(call_line),
      })
      assert.is_true(ok, "missing " .. tostring(missing) .. " in:\n" .. err)
      assert.truthy(err:find("boom", err:find("stack traceback", 1, true),
        true), err)
    end)

    it("keeps a message raised with level 0 intact", function()
      local err = error_of(function()
        return runtime.spawn(function() error("plain words", 0) end):await()
      end)
      assert.truthy(err:find("plain words", 1, true), err)
      assert.falsy(err:find("runtime_spec.lua:%d+: plain words"), err)
    end)

    it("reports runtime errors like arithmetic on nil", function()
      local err = error_of(function()
        return runtime.spawn(function(x) return x + 1 end):await()
      end)
      assert.truthy(err:find("attempt to perform arithmetic on", 1, true),
        err)
    end)

    it("raises the same error when awaited twice", function()
      local h = runtime.spawn(job, "twice")
      local ok1, e1 = pcall(h.await, h)
      local ok2, e2 = pcall(h.await, h)
      assert.is_false(ok1)
      assert.is_false(ok2)
      assert.truthy(tostring(e1):find("boom twice", 1, true), tostring(e1))
      assert.are.equal(e1, e2)
    end)

    it("leaves every worker able to run more jobs", function()
      local bad = {}
      for i = 1, 10 * T do
        bad[i] = runtime.spawn(function() error("nope") end)
      end
      for i = 1, #bad do
        assert.is_false((pcall(bad[i].await, bad[i])))
      end
      local seen, jobs = {}, {}
      for i = 1, 50 * T do
        jobs[i] = runtime.spawn(function(x)
          return x, runtime.worker_id()
        end, i)
      end
      for i = 1, #jobs do
        local x, id = jobs[i]:await()
        assert.are.equal(i, x)
        seen[id] = true
      end
      for id = 1, T do
        assert.is_true(seen[id], "worker " .. id .. " ran nothing")
      end
    end)

    it("passes an inner job's error through an outer job", function()
      local err = error_of(function()
        return runtime.spawn(function()
          return runtime.spawn(function()
            error("deep failure 31")
          end):await()
        end):await()
      end)
      assert.are.equal("string", type(err))
      assert.truthy(err:find("deep failure 31", 1, true), err)
    end)
  end)

  describe("sleep", function()
    it("suspends the main script for about the time asked", function()
      local t0 = support.now()
      runtime.sleep(200)
      local secs = support.now() - t0
      assert.is_true(secs >= 0.19, ("slept %.3f s"):format(secs))
      assert.is_true(secs < 10, ("slept %.3f s"):format(secs))
    end)

    -- A loop's cached clock goes stale while a script works without
    -- yielding; a sleep must count from when it is called.
    it("sleeps the full time after a stretch of work", function()
      runtime.sleep(1)
      local c = support.now()
      while support.now() - c < 0.3 do end
      local t0 = support.now()
      runtime.sleep(200)
      local secs = support.now() - t0
      assert.is_true(secs >= 0.19, ("slept %.3f s for 200 ms"):format(secs))
    end)

    it("sleeps the full time in a job after a stretch of work", function()
      local secs = runtime.spawn(function()
        local function now()
          local p = io.popen("date +%s.%N")
          local t = tonumber(p:read("*l"))
          p:close()
          return t
        end
        runtime.sleep(1)
        local c = now()
        while now() - c < 0.3 do end
        local t0 = now()
        runtime.sleep(200)
        return now() - t0
      end):await()
      assert.is_true(secs >= 0.19, ("slept %.3f s for 200 ms"):format(secs))
    end)

    it("returns for 0 ms", function()
      runtime.sleep(0)
    end)

    it("suspends a job for about the time asked", function()
      local t0 = support.now()
      local r = runtime.spawn(function()
        runtime.sleep(150)
        return "woke"
      end):await()
      local secs = support.now() - t0
      assert.are.equal("woke", r)
      assert.is_true(secs >= 0.14, ("slept %.3f s"):format(secs))
    end)

    it("does not block the worker's thread", function()
      -- 10 jobs per worker sleeping 300 ms: one after the other that
      -- is at least 3 s on some worker; suspended, about 0.3 s.
      local n = 10 * T
      local t0 = support.now()
      local jobs = {}
      for i = 1, n do
        jobs[i] = runtime.spawn(function(x)
          runtime.sleep(300)
          return x
        end, i)
      end
      for i = 1, n do
        assert.are.equal(i, jobs[i]:await())
      end
      local secs = support.now() - t0
      assert.is_true(secs < 2.0, ("%d sleeping jobs took %.2f s"):format(
        n, secs))
    end)

    it("lets jobs finish while the main script sleeps", function()
      local path = support.tmpname()
      runtime.spawn(function(p)
        local f = io.open(p, "w")
        f:write("done")
        f:close()
      end, path)
      runtime.sleep(500)
      assert.are.equal("done", support.read(path))
      os.remove(path)
    end)

    it("refuses a duration that is not a number", function()
      assert.is_false((pcall(runtime.sleep, "soon")))
      assert.is_false((pcall(runtime.sleep, {})))
    end)
  end)

  describe("jobs that spawn jobs", function()
    it("awaits a job spawned by a job", function()
      local r = runtime.spawn(function(n)
        local inner = runtime.spawn(function(m)
          return m * 3, runtime.worker_id()
        end, n)
        local v, id = inner:await()
        return v + 1, id, runtime.worker_id()
      end, 5)
      local v, inner_id, outer_id = r:await()
      assert.are.equal(16, v)
      assert.is_true(inner_id >= 1 and inner_id <= T)
      assert.is_true(outer_id >= 1 and outer_id <= T)
    end)

    it("follows a chain of 30 jobs, each awaiting the next", function()
      local function chain(n)
        if n == 0 then
          return 0
        end
        return runtime.spawn(chain, n - 1):await() + 1
      end
      assert.are.equal(30, runtime.spawn(chain, 30):await())
    end)

    it("fans out from a job and gathers the results", function()
      local total = runtime.spawn(function(n)
        local jobs, s = {}, 0
        for i = 1, n do
          jobs[i] = runtime.spawn(function(x) return x * x end, i)
        end
        for i = 1, n do s = s + jobs[i]:await() end
        return s
      end, 100):await()
      assert.are.equal(338350, total)
    end)

    it("sleeps and awaits inside one job", function()
      local r = runtime.spawn(function()
        local h = runtime.spawn(function()
          runtime.sleep(50)
          return "inner"
        end)
        runtime.sleep(20)
        return h:await() .. "+outer"
      end):await()
      assert.are.equal("inner+outer", r)
    end)
  end)

  describe("await where the main script cannot yield", function()
    local function square(x)
      return runtime.spawn(function(v) return v * v end, x):await()
    end

    it("works in a table.sort comparator", function()
      local t = { 5, 3, 1, 4, 2 }
      table.sort(t, function(a, b)
        return runtime.spawn(function(x, y) return x < y end, a, b):await()
      end)
      assert.are.same({ 1, 2, 3, 4, 5 }, t)
    end)

    it("works in an __lt metamethod called by table.sort", function()
      local mt = {}
      mt.__lt = function(a, b) return square(a.v) < square(b.v) end
      local t = {}
      for i, v in ipairs({ 3, 1, 2 }) do
        t[i] = setmetatable({ v = v }, mt)
      end
      table.sort(t)
      assert.are.same({ 1, 2, 3 }, { t[1].v, t[2].v, t[3].v })
    end)

    it("works in a string.gsub callback", function()
      local s = ("abc"):gsub(".", function(c)
        return runtime.spawn(string.upper, c):await()
      end)
      assert.are.equal("ABC", s)
    end)

    it("works in a reader function called by load", function()
      local pieces, i = { "return ", "1 + ", "41" }, 0
      local f = assert(load(function()
        i = i + 1
        if pieces[i] then
          return runtime.spawn(function(p) return p end, pieces[i]):await()
        end
      end))
      assert.are.equal(42, f())
    end)

    it("works inside a module being required", function()
      local dir = support.tmpdir()
      local name = "nsh_await_in_require"
      support.write(dir .. "/" .. name .. ".lua",
        "return runtime.spawn(function(x) return x * 2 end, 21):await()\n")
      local saved = package.path
      package.path = dir .. "/?.lua;" .. saved
      package.loaded[name] = nil
      local ok, v = pcall(require, name)
      package.path = saved
      package.loaded[name] = nil
      support.rmrf(dir)
      assert.is_true(ok, tostring(v))
      assert.are.equal(42, v)
    end)

    it("works inside a coroutine of the main script", function()
      local co = coroutine.wrap(function()
        local v = runtime.spawn(function() return "from job" end):await()
        coroutine.yield(v)
        return "finished"
      end)
      assert.are.equal("from job", co())
      assert.are.equal("finished", co())
    end)

    it("raises the job's error there too", function()
      local ok, err = pcall(table.sort, { 2, 1 }, function()
        return runtime.spawn(function() error("sorted out") end):await()
      end)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("sorted out", 1, true), tostring(err))
    end)
  end)
end)
