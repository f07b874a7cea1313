-- W1 spawn_storm (BENCHMARKS.md): dispatch throughput.
-- Submit n jobs of x -> x + 1 without waiting, then await them all.
--
-- usage: nshost -t T bench/w1_spawn_storm.lua [n=1000000]

local here = (arg and arg[0] or ""):match("^(.*/)") or "./"
local bench = dofile(here .. "common.lua")

local n = bench.arg_n(1000000)
local jobs = {}
local sum, t0, wall, expect

local function inc(x) return x + 1 end

bench.warm_up()

-- Grow the handle array before the clock starts, so that the timed loop
-- measures spawning and not table resizing.
for i = 1, n do jobs[i] = false end

t0 = bench.now()
for i = 1, n do jobs[i] = runtime.spawn(inc, i) end
sum = 0
for i = 1, n do
  sum = sum + jobs[i]:await()
  jobs[i] = false -- let the handle go as soon as it is used
end
wall = bench.now() - t0

-- Every term is an integer below 2^53, so the double sum is exact.
expect = n * (n + 1) / 2 + n
bench.report({
  workload = "spawn_storm", n = n, wall_s = wall, ops_per_s = n / wall,
  ok = sum == expect,
  why = string.format("sum %.0f, expected %.0f", sum, expect),
})
