-- W3 fanout for the luv peer: 64 works of fib(30), against the same 64
-- calls one after another on the main thread.
--
-- usage: UV_THREADPOOL_SIZE=T luajit bench/luv/w3_fanout.lua [n=64]

local here = (arg and arg[0] or ""):match("^(.*/)") or "./"
local bench = dofile(here .. "common.lua")
local uv = bench.uv

local n = bench.arg_n(64)
local FIB_N, FIB_R = 30, 832040
local got, bad, t0, t1, serial = 0, nil, nil, nil, nil

local function fib(k)
  return k < 2 and k or fib(k - 1) + fib(k - 2)
end

-- No upvalues cross, so the work function makes its own fib, the same
-- code, once per pool state (kept in a global there): LuaJIT's traces
-- are specialised to the closure, and a fresh one per call runs slower
-- with each call.  `local function` keeps the self-reference immutable,
-- as in the main script's fib.
local work = uv.new_work(function(k)
  local fib = BENCH_FIB
  if fib == nil then
    local function f(j)
      return j < 2 and j or f(j - 1) + f(j - 2)
    end
    fib, BENCH_FIB = f, f
  end
  return fib(k)
end, function(r)
  got = got + 1
  if r ~= FIB_R and not bad then bad = "a work gave " .. tostring(r) end
  if got == n then t1 = bench.now() end
end)

bench.warm_up()
-- The serial baseline, in the main script's own state.
serial, bad = bench.serial(n, fib, FIB_N, FIB_R)

t0 = bench.now()
for _ = 1, n do work:queue(FIB_N) end
uv.run()
local wall = t1 - t0

local speedup = serial / wall
bench.report({
  workload = "fanout", n = n, wall_s = wall, ops_per_s = n / wall,
  serial_s = serial, speedup = speedup,
  efficiency = speedup / bench.threads,
  ok = not bad and got == n, why = bad or got .. " results",
})
