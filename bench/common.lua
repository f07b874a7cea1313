-- Helpers shared by the nshost bench scripts (loaded with dofile, so it
-- works from any directory). See /BENCHMARKS.md for the rules they follow.
-- The luv peer (bench/luv/) loads it too: nothing here needs nshost
-- except warm_up and the default thread count in report.  What W3 and
-- W4 do alike on both systems is here too, so that both count alike.

local ffi = require("ffi")

local M = {}

-- pcall: a script may load this twice, and ffi.cdef refuses a second
-- declaration of the same name.
pcall(ffi.cdef, "struct bench_timespec { long sec; long nsec; };")
pcall(ffi.cdef, "int clock_gettime(int clock, void *ts);")

local ts = ffi.new("struct bench_timespec")
local CLOCK_MONOTONIC = 1 -- Linux value


-- Seconds on the monotonic clock, with nanosecond resolution.
function M.now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.sec) + tonumber(ts.nsec) * 1e-9
end


-- Microseconds on the same clock (for stamps compared across threads).
function M.now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.sec) * 1e6 + tonumber(ts.nsec) * 1e-3
end


-- Burns us microseconds of CPU in a busy loop checked against the
-- monotonic clock, and returns the clock (in microseconds) at its end,
-- then the other arguments as they came (the luv peer's works hand
-- back their index so).  Sent to workers as it is, so it has no
-- upvalues and no inner functions: it finds the FFI with require and
-- keeps its timespec in a global of the state it runs in.
function M.spin(us, ...)
  local ffi = require("ffi")
  local ts = BENCH_SPIN_TS
  if ts == nil then
    pcall(ffi.cdef, "struct bench_timespec { long sec; long nsec; };")
    pcall(ffi.cdef, "int clock_gettime(int clock, void *ts);")
    ts = ffi.new("struct bench_timespec")
    BENCH_SPIN_TS = ts
  end
  local C = ffi.C
  C.clock_gettime(1, ts)
  local t0 = tonumber(ts.sec) * 1e6 + tonumber(ts.nsec) * 1e-3
  local t = t0
  while t - t0 < us do
    C.clock_gettime(1, ts)
    t = tonumber(ts.sec) * 1e6 + tonumber(ts.nsec) * 1e-3
  end
  return t, ...
end


-- Peak resident set of this process in KiB (VmHWM), or nil when /proc
-- does not say.
function M.rss_kb()
  local f = io.open("/proc/self/status", "r")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return tonumber(text:match("VmHWM:%s*(%d+)"))
end


-- n from the first script argument, for quick runs; default otherwise.
function M.arg_n(default)
  local a = arg and arg[1]
  if a == nil then return default end
  local n = tonumber(a)
  if not n or n < 1 or n % 1 ~= 0 then
    io.stderr:write("bench: n must be a positive integer, got '",
                    tostring(a), "'\n")
    os.exit(2)
  end
  return n
end


-- The p-th percentile (0 < p <= 1) of a sorted array, nearest rank.
function M.percentile(sorted, p)
  local i = math.ceil(p * #sorted)
  return sorted[math.max(1, math.min(i, #sorted))]
end


-- Spawn a few empty jobs and wait for them, so that the worker threads
-- exist before the clock starts (nshost creates them on first use).
function M.warm_up()
  local jobs = {}
  for i = 1, 4 * runtime.threads() do
    jobs[i] = runtime.spawn(function() return true end)
  end
  for _, job in ipairs(jobs) do job:await() end
end


-- W3's serial baseline, the same for both systems: n calls of f(x) one
-- after another in this state, after one call first so that it runs
-- compiled code (as each worker compiles its own).  Returns the seconds,
-- and what went wrong when a call did not return want.
function M.serial(n, f, x, want)
  local bad
  f(x)
  local t0 = M.now()
  for _ = 1, n do
    local r = f(x)
    if r ~= want and not bad then bad = "serial call gave " .. tostring(r) end
  end
  return M.now() - t0, bad
end


-- W4's bookkeeping, the same for both systems: which jobs are heavy,
-- the check of each job's stamp, the latencies kept, and the JSON line.
-- The script fills sub[i], the clock (us) when job i was submitted.
function M.skew(n)
  local HEAVY_US, LIGHT_US = 5000, 20
  local w = { sub = {}, lat = {}, recv = {}, got = 0 }

  -- The microseconds of CPU that job i burns: every 100th is heavy.
  function w.burn(i)
    return i % 100 == 0 and HEAVY_US or LIGHT_US
  end

  -- Job i ended at t_end (the stamp it returned, on its thread's clock,
  -- which is every thread's) and the script saw it at t_recv.
  function w.finished(i, t_end, t_recv)
    local sub = w.sub[i]
    w.got = w.got + 1
    if type(t_end) ~= "number" or t_end < sub + w.burn(i) then
      w.bad = w.bad
        or string.format("job %d returned %s", i, tostring(t_end))
      return
    end
    if w.burn(i) == LIGHT_US then
      w.lat[#w.lat + 1] = t_end - sub
      w.recv[#w.recv + 1] = t_recv - sub
    end
    w.last_recv = t_recv
  end

  -- Prints the JSON line; t0 is the clock (us) when submitting began.
  function w.report(t0)
    local makespan = (w.last_recv - t0) * 1e-6
    local lat, recv = w.lat, w.recv
    local lights = n - math.floor(n / 100)
    table.sort(lat)
    table.sort(recv)
    local p = M.percentile
    M.report({
      workload = "skew", n = n, wall_s = makespan,
      ops_per_s = n / makespan,
      p50_us = p(lat, 0.50), p99_us = p(lat, 0.99),
      p999_us = p(lat, 0.999),
      recv_p50_us = p(recv, 0.50), recv_p99_us = p(recv, 0.99),
      makespan_s = makespan,
      ok = not w.bad and w.got == n and #lat == lights,
      why = w.bad or string.format("%d results, %d light, expected %d",
                                   w.got, #lat, lights),
    })
  end

  return w
end


local function num(v, fmt)
  if v == nil then return "null" end
  return string.format(fmt, v)
end


-- Fields after p99_us, in this order, when the workload reports them.
local extras = {
  { "p999_us", "%.1f" }, { "recv_p50_us", "%.1f" },
  { "recv_p99_us", "%.1f" }, { "makespan_s", "%.4f" },
  { "serial_s", "%.4f" }, { "speedup", "%.3f" },
  { "efficiency", "%.3f" },
}


-- Print the one JSON line of BENCHMARKS.md, then exit non-zero when the
-- result was wrong: a fast wrong answer is a failure.  r.system and
-- r.threads default to nshost's; the luv peer passes its own.
function M.report(r)
  local more = {}
  for _, f in ipairs(extras) do
    if r[f[1]] ~= nil then
      more[#more + 1] = string.format(',"%s":%s', f[1], num(r[f[1]], f[2]))
    end
  end
  io.write(string.format(
    '{"workload":"%s","system":"%s","threads":%d,"n":%d,'
    .. '"wall_s":%s,"ops_per_s":%s,"p50_us":%s,"p99_us":%s%s,'
    .. '"rss_kb":%s,"ok":%s}\n',
    r.workload, r.system or "nshost", r.threads or runtime.threads(), r.n,
    num(r.wall_s, "%.4f"), num(r.ops_per_s, "%.0f"), num(r.p50_us, "%.1f"),
    num(r.p99_us, "%.1f"), table.concat(more), num(M.rss_kb(), "%d"),
    r.ok and "true" or "false"))
  io.stdout:flush()
  if not r.ok then
    io.stderr:write("bench: ", r.workload, ": wrong result: ",
                    r.why or "?", "\n")
    os.exit(1)
  end
end

return M
