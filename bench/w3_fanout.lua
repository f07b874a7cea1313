-- W3 fanout (BENCHMARKS.md): parallel efficiency on CPU-bound work.
-- 64 jobs of fib(30) by the naive recursion, against the same 64 calls
-- one after another on the main thread.
--
-- usage: nshost -t T bench/w3_fanout.lua [n=64]

local here = (arg and arg[0] or ""):match("^(.*/)") or "./"
local bench = dofile(here .. "common.lua")

local n = bench.arg_n(64)
local FIB_N, FIB_R = 30, 832040
local jobs, bad = {}, nil
local t0, serial, wall

local function fib(k)
  return k < 2 and k or fib(k - 1) + fib(k - 2)
end

bench.warm_up()
-- The serial baseline, in the main script's own state.
serial, bad = bench.serial(n, fib, FIB_N, FIB_R)

for i = 1, n do jobs[i] = false end
t0 = bench.now()
for i = 1, n do jobs[i] = runtime.spawn(fib, FIB_N) end
for i = 1, n do
  local r = jobs[i]:await()
  if r ~= FIB_R and not bad then
    bad = string.format("job %d gave %s", i, tostring(r))
  end
end
wall = bench.now() - t0

local speedup = serial / wall
bench.report({
  workload = "fanout", n = n, wall_s = wall, ops_per_s = n / wall,
  serial_s = serial, speedup = speedup,
  efficiency = speedup / runtime.threads(), ok = not bad, why = bad,
})
