-- W5 closure_cost (BENCHMARKS.md): the cost of moving code and data.
-- n jobs of one closure over three upvalues (a table of 100 numbers, a
-- 1 KiB string, a number) that returns the sum of the table plus the
-- length of the string plus the number.  Submitted without waiting, then
-- awaited, like W1.
--
-- usage: nshost -t T bench/w5_closure_cost.lua [n=50000]

local here = (arg and arg[0] or ""):match("^(.*/)") or "./"
local bench = dofile(here .. "common.lua")

local n = bench.arg_n(50000)
local NUMS = 100
local t, s, k = {}, string.rep("x", 1024), 7
for i = 1, NUMS do t[i] = i * 1.5 end

local function job()
  local sum = 0
  for i = 1, #t do sum = sum + t[i] end
  return sum + #s + k
end

local expect_one = job()
local jobs, total, bad = {}, 0, nil

bench.warm_up()
for i = 1, n do jobs[i] = false end

local t0 = bench.now()
for i = 1, n do jobs[i] = runtime.spawn(job) end
for i = 1, n do
  local r = jobs[i]:await()
  jobs[i] = false
  total = total + r
  if r ~= expect_one and not bad then
    bad = string.format("job %d gave %s", i, tostring(r))
  end
end
local wall = bench.now() - t0

bench.report({
  workload = "closure_cost", n = n, wall_s = wall, ops_per_s = n / wall,
  ok = not bad and total == n * expect_one,
  why = bad or string.format("total %.17g, expected %.17g", total,
                             n * expect_one),
})
