-- W2 roundtrip for the luv peer: queue x -> x, wait for its after-work
-- callback, queue the next; n round trips.
--
-- usage: UV_THREADPOOL_SIZE=T luajit bench/luv/w2_roundtrip.lua [n]

local here = (arg and arg[0] or ""):match("^(.*/)") or "./"
local bench = dofile(here .. "common.lua")
local uv = bench.uv

local n = bench.arg_n(20000)
local now = bench.now
local lat, i, t, bad = {}, 0, 0, nil
local work

work = uv.new_work(function(x) return x end, function(r)
  lat[i] = (now() - t) * 1e6
  if r ~= i and not bad then
    bad = string.format("work %d gave %s", i, tostring(r))
  end
  if i < n then
    i = i + 1
    t = now()
    work:queue(i)
  end
end)

bench.warm_up()
for k = 1, n do lat[k] = 0 end
local t0 = now()
i, t = 1, now()
work:queue(1)
uv.run()
local wall = now() - t0

table.sort(lat)
bench.report({
  workload = "roundtrip", n = n, wall_s = wall, ops_per_s = n / wall,
  p50_us = bench.percentile(lat, 0.50),
  p99_us = bench.percentile(lat, 0.99), ok = not bad, why = bad,
})
