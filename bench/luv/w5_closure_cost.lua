-- W5 closure_cost for the luv peer: n works that sum a table of 100
-- numbers and add the length of a 1 KiB string and a number.
--
-- usage: UV_THREADPOOL_SIZE=T luajit bench/luv/w5_closure_cost.lua [n]
--
-- What differs from nshost: luv cannot send a closure's upvalues, nor a
-- table (a work takes at most nine strings, numbers or booleans).  So
-- every work gets the 1 KiB string and the number as arguments, and the
-- table as an 800-byte string of packed doubles, which the work function
-- turns back into a table of 100 numbers before it sums it.  The table
-- is packed once, before the clock: it never changes, and packing it
-- again per work would measure this script, not luv.  nshost encodes the
-- whole closure (bytecode reference, table, string, number) per job.

local here = (arg and arg[0] or ""):match("^(.*/)") or "./"
local bench = dofile(here .. "common.lua")
local uv = bench.uv
local ffi = require("ffi")

local n = bench.arg_n(50000)
local NUMS = 100
local t, s, k = {}, string.rep("x", 1024), 7
for i = 1, NUMS do t[i] = i * 1.5 end
local expect_one = 0
for i = 1, NUMS do expect_one = expect_one + t[i] end
expect_one = expect_one + #s + k

local packed = ffi.new("double[?]", NUMS)
for i = 1, NUMS do packed[i - 1] = t[i] end
local tbytes = ffi.string(packed, NUMS * 8)

local total, got, bad, t0, t1 = 0, 0, nil, nil, nil
local work = uv.new_work(function(str, num, tb)
  local ffi = require("ffi")
  local p = ffi.cast("const double *", tb)
  local tab = {}
  for i = 1, #tb / 8 do tab[i] = p[i - 1] end
  local sum = 0
  for i = 1, #tab do sum = sum + tab[i] end
  return sum + #str + num
end, function(r)
  got = got + 1
  total = total + r
  if r ~= expect_one and not bad then bad = "a work gave " .. tostring(r) end
  if got == n then t1 = bench.now() end
end)

bench.warm_up()
t0 = bench.now()
for _ = 1, n do work:queue(s, k, tbytes) end
uv.run()
local wall = t1 - t0

bench.report({
  workload = "closure_cost", n = n, wall_s = wall, ops_per_s = n / wall,
  ok = not bad and got == n and total == n * expect_one,
  why = bad or string.format("%d results, total %.17g, expected %.17g",
                             got, total, n * expect_one),
})
