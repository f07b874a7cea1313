-- W2 roundtrip (BENCHMARKS.md): dispatch latency.
-- Submit one job x -> x, await it, n times in a row; time each round trip.
--
-- usage: nshost -t T bench/w2_roundtrip.lua [n=20000]

local here = (arg and arg[0] or ""):match("^(.*/)") or "./"
local bench = dofile(here .. "common.lua")

local n = bench.arg_n(20000)
local lat = {}
local now = bench.now
local bad, t0, wall

local function id(x) return x end

bench.warm_up()
for i = 1, n do lat[i] = 0 end -- no table growth inside the timed loop

t0 = now()
for i = 1, n do
  local t = now()
  local r = runtime.spawn(id, i):await()
  lat[i] = (now() - t) * 1e6
  if r ~= i and not bad then bad = string.format("job %d gave %s", i,
                                                 tostring(r)) end
end
wall = now() - t0

table.sort(lat)
bench.report({
  workload = "roundtrip", n = n, wall_s = wall, ops_per_s = n / wall,
  p50_us = bench.percentile(lat, 0.50), p99_us = bench.percentile(lat, 0.99),
  ok = not bad, why = bad,
})
