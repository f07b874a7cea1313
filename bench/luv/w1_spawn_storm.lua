-- W1 spawn_storm for the luv peer: n works of x -> x + 1 queued without
-- waiting, results summed in the after-work callback.
--
-- usage: UV_THREADPOOL_SIZE=T luajit bench/luv/w1_spawn_storm.lua [n]

local here = (arg and arg[0] or ""):match("^(.*/)") or "./"
local bench = dofile(here .. "common.lua")
local uv = bench.uv

local n = bench.arg_n(1000000)
local sum, got, t0, t1 = 0, 0, nil, nil

-- luv sends the function as bytecode without upvalues; x + 1 needs none.
local work = uv.new_work(function(x) return x + 1 end, function(r)
  sum, got = sum + r, got + 1
  if got == n then t1 = bench.now() end
end)

bench.warm_up()
t0 = bench.now()
for i = 1, n do work:queue(i) end
uv.run()
local wall = t1 - t0

local expect = n * (n + 1) / 2 + n
bench.report({
  workload = "spawn_storm", n = n, wall_s = wall, ops_per_s = n / wall,
  ok = got == n and sum == expect,
  why = string.format("%d results, sum %.0f, expected %.0f", got, sum,
                      expect),
})
