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
local skew = bench.skew(n)
local burn, sub = skew.burn, skew.sub
local now_us = bench.now_us
local submitted = 0
local t0, next_tick, work, timer

local function done(t_end, i)
  skew.finished(i, t_end, now_us())
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

-- bench.spin has no upvalues, so it can be the work function; it hands
-- back i after the stamp, to name the work.
work = uv.new_work(bench.spin, done)
timer = uv.new_timer()
bench.warm_up()
bench.spin(1000) -- compile the burn loop in this state too
for i = 1, n do sub[i] = 0 end

t0 = now_us()
next_tick = t0
tick()
uv.run()

skew.report(t0)
