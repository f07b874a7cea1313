-- W4 skew for the luv peer: every 1 ms (a one-shot timer restarted each
-- tick, like runtime.sleep(1)) queue 10*T works; every 100th burns 5 ms,
-- the others 20 us.
--
-- usage: UV_THREADPOOL_SIZE=T luajit bench/luv/w4_skew.lua [n=20000]
--
-- Latencies as in bench/w4_skew.lua: p50/p99/p999 from submission to the
-- end of the work on its pool thread (the work returns the monotonic
-- clock); recv_* from submission to the after-work callback, which luv
-- runs as soon as the result is back.

local here = (arg and arg[0] or ""):match("^(.*/)") or "./"
local bench = dofile(here .. "common.lua")
local uv = bench.uv

local n = bench.arg_n(20000)
local T = bench.threads
local per_tick = 10 * T
local HEAVY_US, LIGHT_US = 5000, 20
local now_us = bench.now_us
local sub, lat, recv = {}, {}, {}
local submitted, got, bad = 0, 0, nil
local t0, next_tick, last_recv, work, timer

local function burn(i)
  return i % 100 == 0 and HEAVY_US or LIGHT_US
end

-- The loop of bench.spin, written out: a work function has no upvalues,
-- and i has to come back with the stamp to name the work.
local function spin_work(us, i)
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
  return t, i
end

local function done(t_end, i)
  local t_recv = now_us()
  got = got + 1
  if type(t_end) ~= "number" or t_end < sub[i] + burn(i) then
    bad = bad or string.format("work %d returned %s", i, tostring(t_end))
    return
  end
  if burn(i) == LIGHT_US then
    lat[#lat + 1] = t_end - sub[i]
    recv[#recv + 1] = t_recv - sub[i]
  end
  last_recv = t_recv
end

local function tick()
  local t = now_us()
  while next_tick <= t and submitted < n do
    for _ = 1, math.min(per_tick, n - submitted) do
      submitted = submitted + 1
      sub[submitted] = now_us()
      work:queue(burn(submitted), submitted)
    end
    next_tick = next_tick + 1000
  end
  if submitted < n then
    timer:start(1, 0, tick)
  else
    timer:close()
  end
end

work = uv.new_work(spin_work, done)
timer = uv.new_timer()
bench.warm_up()
bench.spin(1000) -- compile the burn loop in this state too
for i = 1, n do sub[i] = 0 end

t0 = now_us()
next_tick = t0
tick()
uv.run()
local makespan = (last_recv - t0) * 1e-6

local lights = n - math.floor(n / 100)
table.sort(lat)
table.sort(recv)
local p = bench.percentile
bench.report({
  workload = "skew", n = n, wall_s = makespan, ops_per_s = n / makespan,
  p50_us = p(lat, 0.50), p99_us = p(lat, 0.99), p999_us = p(lat, 0.999),
  recv_p50_us = p(recv, 0.50), recv_p99_us = p(recv, 0.99),
  makespan_s = makespan, ok = not bad and got == n and #lat == lights,
  why = bad or string.format("%d results, %d light, expected %d", got,
                             #lat, lights),
})
