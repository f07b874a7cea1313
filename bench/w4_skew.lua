-- W4 skew (BENCHMARKS.md): tail latency when work is uneven.
-- Every 1 ms submit 10*T jobs until n have gone; every 100th burns 5 ms
-- of CPU, the others 20 us.  Latencies are of the light jobs only.
--
-- usage: nshost -t T bench/w4_skew.lua [n=20000]
--
-- What the latency is.  nshost has no way to see a result the moment it
-- arrives: a script wakes for one awaited job or a timer, and job:done()
-- only polls.  So each job returns the monotonic clock at its end
-- (CLOCK_MONOTONIC is one clock for every thread), and p50/p99/p999 are
-- from submission to the end of the job on its worker; bench/luv/ does
-- the same.  recv_p50_us/recv_p99_us are from submission to the moment
-- the script saw the result: polled once per 1 ms tick here, so they are
-- an upper bound quantised to the tick (exact on the luv side).
-- Pacing keeps to an absolute schedule: a tick that wakes late submits
-- every batch that is due, so the offered load stays 10*T jobs per ms.

local here = (arg and arg[0] or ""):match("^(.*/)") or "./"
local bench = dofile(here .. "common.lua")

local n = bench.arg_n(20000)
local T = runtime.threads()
local per_tick = 10 * T
local skew = bench.skew(n)
local burn, sub = skew.burn, skew.sub
local spin, now_us = bench.spin, bench.now_us
local jobs = {}
local pending, npending = {}, 0
local submitted = 0
local t0, next_tick

-- A finished job: record it, drop its handle.
local function collect(i, t_recv)
  local t_end = jobs[i]:await()
  jobs[i] = false
  skew.finished(i, t_end, t_recv)
end

-- Collects the pending jobs whose outcome has arrived.
local function poll()
  local t, k = now_us(), 0
  for j = 1, npending do
    local i = pending[j]
    if jobs[i]:done() then
      collect(i, t)
    else
      k = k + 1
      pending[k] = i
    end
  end
  for j = k + 1, npending do pending[j] = nil end
  npending = k
end

bench.warm_up()
spin(1000) -- compile the burn loop in this state too
for i = 1, n do jobs[i], sub[i] = false, 0 end

t0 = now_us()
next_tick = t0
while submitted < n do
  local t = now_us()
  while next_tick <= t and submitted < n do
    for _ = 1, math.min(per_tick, n - submitted) do
      submitted = submitted + 1
      local i = submitted
      sub[i] = now_us()
      jobs[i] = runtime.spawn(spin, burn(i))
      npending = npending + 1
      pending[npending] = i
    end
    next_tick = next_tick + 1000
  end
  poll()
  if submitted < n then runtime.sleep(1) end
end
-- The rest, oldest first: each await returns as soon as that job is in.
for j = 1, npending do
  local i = pending[j]
  if not jobs[i]:done() then jobs[i]:await() end
  collect(i, now_us())
end

skew.report(t0)
