-- Lifecycle at the edges, through the nshost program: runaway jobs at
-- shutdown, signals, errors nobody awaits, memory limits, child
-- processes.  Times are checked as ratios to the configured timeout,
-- with wide margins: these machines are shared and noisy.

local support = dofile((debug.getinfo(1, "S").source:gsub("^@", "")
  :gsub("[^/]*$", "")) .. "support.lua")
local assert_has = support.assert_has

-- Runs text as a script with nshost options; returns support.run's table.
local function run(text, options, opts)
  local path = support.script(text)
  local r = support.run((options or "") .. " " .. support.quote(path), opts)
  os.remove(path)
  return r
end

-- Starts text as a script in the background, sends sig after delay
-- seconds (and again after delay2 if given), and returns the run.
local function signalled(text, sig, delay, delay2, options)
  local path = support.script(text)
  local out, err, st = support.tmpname(), support.tmpname(),
    support.tmpname()
  local second = delay2 and ("sleep " .. delay2 .. "; kill -" .. sig
    .. " $p 2>/dev/null; ") or ""
  local cmd = table.concat({
    "(", support.quote(support.nshost), options or "",
    support.quote(path), ">" .. support.quote(out),
    "2>" .. support.quote(err), "</dev/null & p=$!;",
    "sleep", delay, "; kill -" .. sig, "$p;", second,
    "wait $p; echo $? >" .. support.quote(st), ")",
  }, " ")
  local t0 = support.now()
  os.execute(cmd)
  local r = {
    secs = support.now() - t0, status = tonumber(support.read(st)),
    out = support.read(out) or "", err = support.read(err) or "",
  }
  for _, f in ipairs({ path, out, err, st }) do os.remove(f) end
  return r
end

describe("lifecycle", function()
  describe("runaway jobs at shutdown", function()
    it("an interpreted loop is interrupted within the timeout", function()
      local r = run([[
local h = runtime.spawn(function()
  jit.off()
  local x = 0
  while true do x = x + 1 end
end)
runtime.sleep(200)
os.exit(3)
]], "--threads 2 --shutdown-timeout 500")
      assert.are.equal(3, r.status, support.describe(r))
      assert.are.equal("", r.err)
      assert.is_true(r.secs < 5, ("took %.2f s"):format(r.secs))
    end)

    it("a compiled loop is reported stuck and the exit is prompt",
       function()
      local r = run([[
runtime.spawn(function()
  local x = 0
  while true do x = x + 1 end
end)
runtime.sleep(300)
error("main fails")
]], "--threads 2 --shutdown-timeout 400")
      assert.are.equal(1, r.status, support.describe(r))
      assert_has(r.err, "main fails")
      assert_has(r.err, "is still running")
      assert_has(r.err, ".lua:1")
      -- One timeout and a grace, not one per worker: well under 10x.
      assert.is_true(r.secs < 4, ("took %.2f s"):format(r.secs))
    end)
  end)

  it("a job interrupted at shutdown is cancelled, not out of memory",
     function()
    -- The interrupt's hook used to fire again while the job's failure
    -- was being described, which then fell back to "not enough memory".
    local r = run([[
runtime.spawn(function()
  jit.off()
  local x = 0
  while true do x = x + 1 end
end)
runtime.sleep(200)
error("main fails")
]], "--threads 2 --shutdown-timeout 300")
    assert.are.equal(1, r.status, support.describe(r))
    assert_has(r.err, "main fails")
    assert.is_nil(r.err:find("not enough memory", 1, true), r.err)
  end)

  describe("waiting where the code cannot yield", function()
    it("a sleep shorter than the clock's tick returns", function()
      -- Its timer fired before the loop waited, and the loop then
      -- waited for something else for ever.
      local r = run([[
coroutine.wrap(function() runtime.sleep(0) end)()
table.sort({ 3, 1, 2 }, function(a, b) runtime.sleep(0.4) return a < b end)
print(runtime.spawn(function()
  table.sort({ 2, 1 }, function(a, b) runtime.sleep(0) return a < b end)
  return "job"
end):await())
]], "--threads 1", { timeout = 20 })
      assert.are.equal(0, r.status, support.describe(r))
      assert.are.equal("job\n", r.out)
    end)

    it("a worker's finalizer may sleep; other jobs are not run inside it",
       function()
      -- Running other jobs inside a finalizer made LuaJIT's compiler
      -- loop for ever on the second batch.
      local r = run([[
local function arm()
  collectgarbage("setpause", 10)
  for i = 1, 10 do
    local p = newproxy(true)
    getmetatable(p).__gc = function() runtime.sleep(1) end
  end
end
local function work(k, v)
  local r = {}
  for a, b in pairs(v) do r[a] = b end
  return k, #r
end
for iter = 1, 10 do
  runtime.spawn(arm):await()
  local js = {}
  for k = 1, 8 do
    local v = {}
    for i = 1, 100 do v[i] = { i, tostring(i) } end
    js[k] = runtime.spawn(work, k, v)
  end
  for k = 1, 8 do
    local a, b = js[k]:await()
    assert(a == k and b == 100, "wrong result")
  end
end
print("done")
]], "--threads 1", { timeout = 60 })
      assert.are.equal(0, r.status, support.describe(r))
      assert.are.equal("done\n", r.out)
    end)

    it("a worker's finalizer cannot await a job on its own worker",
       function()
      local r = run([[
local msg = runtime.spawn(function()
  local err
  local p = newproxy(true)
  getmetatable(p).__gc = function()
    local ok, e = pcall(function()
      return runtime.spawn(function() return 1 end):await()
    end)
    err = err or (ok and "awaited" or e)
  end
  p = nil
  collectgarbage()
  collectgarbage()
  return err
end):await()
print(msg)
]], "--threads 1", { timeout = 20 })
      assert.are.equal(0, r.status, support.describe(r))
      assert_has(r.out, "cannot await, inside a __gc finalizer, a job "
        .. "placed on this same worker (1)")
    end)
    it("finalizers on two workers awaiting jobs on each other get an "
       .. "error instead of waiting for ever", function()
      -- Waits inside finalizers run no jobs, so two workers whose
      -- finalizers awaited jobs placed on each other used to wait for
      -- ever (this script hung in every run).  Now the second to wait
      -- is refused; every other outcome must still be right.
      local r = run([[
local function arm(n)
  collectgarbage("setpause", 10)
  FIN = FIN or { ok = 0, wrong = 0, same = 0, cycle = 0, other = {} }
  -- same: refused at once (a job on this worker, or one spawned while
  -- another spawn was copying its values); cycle: the circle refused
  local function sq(x) return x * x end
  for i = 1, n do
    local p = newproxy(true)
    getmetatable(p).__gc = function()
      local ok, v = pcall(function() return runtime.spawn(sq, i):await() end)
      if ok then
        if v == i * i then FIN.ok = FIN.ok + 1 else FIN.wrong = FIN.wrong + 1 end
      elseif tostring(v):find("a job placed on this same worker", 1, true) then
        FIN.same = FIN.same + 1
      elseif tostring(v):find("waits in a finalizer too, for a job on this "
                              .. "worker", 1, true) then
        FIN.cycle = FIN.cycle + 1
      elseif tostring(v):find("cannot send values while other values are "
                              .. "being sent", 1, true) then
        FIN.same = FIN.same + 1   -- ran during another spawn: refused
      else
        FIN.other[#FIN.other + 1] = tostring(v)
      end
    end
  end
end
local function work(v)
  local r = {}
  for k, x in pairs(v) do r[k] = x end
  return r
end
for round = 1, 10 do
  local arms, works = {}, {}
  for w = 1, 4 do arms[w] = runtime.spawn(arm, 10) end
  for w = 1, 8 do
    local v = { arr = {} }
    for k = 1, 100 do v[k] = { k, tostring(k) } end
    for k = 1, 2000 do v.arr[k] = k + w end
    works[w] = { runtime.spawn(work, v), w }
  end
  for _, a in ipairs(arms) do a:await() end
  for _, x in ipairs(works) do
    local r = x[1]:await()
    assert(r[100][2] == "100" and r.arr[2000] == 2000 + x[2], "wrong result")
  end
end
local total = { ok = 0, wrong = 0, seen = 0 }
for w = 1, 8 do
  local ok, wrong, same, cycle, other = runtime.spawn(function()
    collectgarbage()
    return FIN.ok, FIN.wrong, FIN.same, FIN.cycle, FIN.other[1]
  end):await()
  assert(other == nil, other)
  total.ok, total.wrong = total.ok + ok, total.wrong + wrong
  total.seen = total.seen + ok + wrong + same + cycle
end
print(total.wrong, total.seen > 0)
]], "--threads 2", { timeout = 60 })
      assert.are.equal(0, r.status, support.describe(r))
      assert.are.equal("0\ttrue\n", r.out)
    end)
  end)

  -- An error that goes through a spawn's encoding (memory running out,
  -- a finalizer that raises) used to leave the state marked as
  -- encoding: every later spawn from it was refused with "cannot send
  -- values while other values are being sent".
  describe("after an error in the middle of a spawn's encoding", function()
    it("a worker out of memory spawns again", function()
      local r = run([[
local j = runtime.spawn(function()
  local t = {}
  for k = 1, 120000 do t[k] = { k } end
  local ok, e = pcall(runtime.spawn, function(u) return #u end, t)
  t = nil
  collectgarbage()
  local ok2, h = pcall(runtime.spawn, function() return 1 end)
  return tostring(ok) .. " " .. tostring(e), ok2 and h:await() or h
end)
print(j:await())
]], "--threads 1 --worker-memory 12", { timeout = 30 })
      assert.are.equal(0, r.status, support.describe(r))
      assert.are.equal("false not enough memory\t1\n", r.out)
    end)

    it("a script whose finalizer raised inside a spawn spawns again",
       function()
      -- Finalizers that spawn without pcall: one that runs during
      -- another spawn is refused, and its error goes through that spawn.
      local r = run([[
local function arm(i)
  local p = newproxy(true)
  getmetatable(p).__gc = function()
    arm(i + 1)
    runtime.spawn(function(x) return x end, { i })
  end
end
for i = 1, 10 do arm(i * 1000) end
collectgarbage("setpause", 100)
collectgarbage("setstepmul", 400)
local refused, jobs = nil, {}
for i = 1, 3000 do
  local ok, e = pcall(function()
    local f = load("local t, i = ... return t, i, " .. i)
    local t = {}
    for k = 1, 200 do t[k] = { k, i } end
    jobs[#jobs + 1] = runtime.spawn(f, t, i)
  end)
  if not ok then refused = e break end
end
collectgarbage("stop")
print(refused ~= nil, runtime.spawn(function() return 42 end):await())
]], "--threads 2", { timeout = 30 })
      assert.are.equal(0, r.status, support.describe(r))
      assert.are.equal("true\t42\n", r.out)
    end)
  end)

  describe("os.exit while jobs spawned by jobs are queued", function()
    it("exits cleanly: no abort, no job reported out of memory",
       function()
      -- Workers cancelling their queued jobs reply to the workers that
      -- spawned them; a worker that had stopped first had its inbox
      -- destroyed under those replies (SIGABRT in about one run in
      -- four), and jobs that shutdown's interrupt stopped while their
      -- error was being described were reported "not enough memory".
      for round = 1, 8 do
        local r = run([[
for i = 1, 3000 do
  runtime.spawn(function(i)
    local j = runtime.spawn(function() runtime.sleep(1) return 1 end)
    return j:await() + i
  end, i)
end
os.exit(0)
]], "--threads 2", { timeout = 30 })
        assert.are.equal(0, r.status, "round " .. round .. ": "
          .. support.describe(r))
        assert.is_nil(r.err:find("not enough memory", 1, true),
                      "round " .. round .. ": " .. r.err:sub(1, 300))
      end
    end)
  end)

  describe("signals", function()
    local waiting = [[
print("started")
io.stdout:flush()
runtime.spawn(function() runtime.sleep(60000) end):await()
]]

    it("SIGINT interrupts the script and exits 130", function()
      local r = signalled(waiting, "INT", 1, nil, "--shutdown-timeout 300")
      assert.are.equal(130, r.status, support.describe(r))
      assert.are.equal("started\n", r.out)
      assert_has(r.err, "interrupted by signal 2")
      assert.is_true(r.secs < 6, ("took %.2f s"):format(r.secs))
    end)

    it("SIGTERM exits 143", function()
      local r = signalled(waiting, "TERM", 1, nil, "--shutdown-timeout 300")
      assert.are.equal(143, r.status, support.describe(r))
      assert_has(r.err, "interrupted by signal 15")
    end)

    it("a busy main script is interrupted too", function()
      local r = signalled([[
print("started")
io.stdout:flush()
jit.off()
local x = 0
while true do x = x + 1 end
]], "INT", 1, nil, "--shutdown-timeout 300")
      assert.are.equal(130, r.status, support.describe(r))
      assert_has(r.err, "interrupted by signal 2")
    end)

    it("a script waiting in place is interrupted at once", function()
      -- Waiting inside a coroutine of the script's own, or a sort
      -- comparator, turns the loop in place: no Lua runs for the hook.
      for _, wait in ipairs({
        "coroutine.wrap(function() runtime.sleep(60000) end)()",
        "table.sort({ 3, 1, 2 }, function(a, b) runtime.sleep(60000) "
          .. "return a < b end)",
      }) do
        local r = signalled('print("started") io.stdout:flush() ' .. wait,
                            "INT", 1, nil, "--shutdown-timeout 300")
        assert.are.equal(130, r.status, support.describe(r))
        assert_has(r.err, "interrupted by signal 2")
        assert.is_true(r.secs < 2.5, ("took %.2f s"):format(r.secs))
      end
    end)

    it("a second signal ends the process at once", function()
      -- Jobs that ignore the first one's shutdown for 30 s.
      local r = signalled([[
for i = 1, 2 do
  runtime.spawn(function()
    local x = 0
    while true do x = x + 1 end
  end)
end
print("started")
io.stdout:flush()
runtime.sleep(60000)
]], "INT", 1, 0.5, "--threads 2 --shutdown-timeout 30000")
      assert.are.equal(130, r.status, support.describe(r))
      assert.is_true(r.secs < 10, ("took %.2f s"):format(r.secs))
    end)
  end)

  describe("errors nobody awaits", function()
    it("make the exit status 1, and --allow-unhandled keeps 0",
       function()
      local text = [[
runtime.spawn(function() error("lost one") end)
runtime.sleep(100)
]]
      local r = run(text, "--threads 2")
      assert.are.equal(1, r.status, support.describe(r))
      assert_has(r.err, "failed and nobody awaited it")
      assert_has(r.err, "lost one")
      assert_has(r.err, "stack traceback (worker ")
      r = run(text, "--threads 2 --allow-unhandled")
      assert.are.equal(0, r.status, support.describe(r))
      assert_has(r.err, "lost one")
    end)

    it("are reported at os.exit too", function()
      local r = run([[
runtime.spawn(function() error("lost before exit") end)
runtime.sleep(100)
os.exit(0)
]], "--threads 2")
      assert_has(r.err, "lost before exit")
    end)

    it("fire-and-forget jobs do not grow memory", function()
      local r = run([[
local function burst()
  for i = 1, 20000 do runtime.spawn(function(x) return x end, i) end
  runtime.sleep(50)
  while runtime.spawn(function() end):await() do end
  collectgarbage()
  collectgarbage()
end
burst()
local first = collectgarbage("count")
for _ = 1, 5 do burst() end
print(collectgarbage("count") < first * 1.5 + 512)
]], "--threads 2")
      assert.are.equal(0, r.status, support.describe(r))
      assert.are.equal("true\n", r.out)
    end)
  end)

  describe("limits", function()
    it("a job takes 7000 arguments (past LuaJIT's C stack slots)",
       function()
      local t = {}
      for i = 1, 7000 do t[i] = i end
      assert.are.equal(7000, runtime.spawn(function(...)
        return select("#", ...)
      end, unpack(t)):await())
    end)

    it("a job past --worker-memory fails; the worker goes on, each time",
       function()
      local r = run([[
for _ = 1, 3 do
  local ok, err = pcall(function()
    return runtime.spawn(function()
      local t = {}
      for i = 1, 1e9 do t[i] = { i } end
    end):await()
  end)
  io.write(tostring(ok), " ", tostring(err):match("not enough memory"),
    " ", runtime.spawn(function(x) return x * 2 end, 21):await(), "\n")
end
]], "--threads 1 --worker-memory 32", { timeout = 60 })
      assert.are.equal(0, r.status, support.describe(r))
      assert.are.equal(string.rep("false not enough memory 42\n", 3), r.out)
    end)
  end)

  describe("child processes", function()
    it("report their real exit status inside jobs", function()
      local r = run([[
local here = os.execute("exit 3")
local there = runtime.spawn(function()
  local st = os.execute("exit 3")
  local p = io.popen("echo hello; exit 0")
  local line = p:read("*l")
  p:close()
  return st, line
end):await()
print(here == there, select(2, runtime.spawn(function()
  local p = io.popen("echo hello")
  local line = p:read("*l")
  p:close()
  return true, line
end):await()))
]], "--threads 2")
      assert.are.equal(0, r.status, support.describe(r))
      assert.are.equal("true\thello\n", r.out)
    end)
  end)
end)
