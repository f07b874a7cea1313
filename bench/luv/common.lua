-- Helpers for the luv peer: LuaJIT with lua-luv's uv.new_work thread
-- pool (libuv's shared-queue pool; luv keeps one Lua state per pool
-- thread).  Loads ../common.lua for the clock, percentiles and the JSON
-- line, so both systems print alike.
--
-- T is UV_THREADPOOL_SIZE, which libuv reads when the pool starts (the
-- first queued work); the scripts refuse to run without it.

local here = (arg and arg[0] or ""):match("^(.*/)") or "./"
local M = dofile(here .. "../common.lua")
local uv = require("luv")

M.uv = uv
M.system = "luv"

M.threads = tonumber(os.getenv("UV_THREADPOOL_SIZE") or "")
if not M.threads or M.threads < 1 or M.threads % 1 ~= 0 then
  io.stderr:write("bench/luv: set UV_THREADPOOL_SIZE to the thread ",
                  "count T\n")
  os.exit(2)
end


-- Starts the pool and has every pool thread make its Lua state before
-- the clock starts: work that burns 2 ms, 2*T at a time, until T
-- distinct states have answered.
function M.warm_up()
  local seen, count = {}, 0
  local w = uv.new_work(function(us)
    local ffi = require("ffi")
    local ts = BENCH_SPIN_TS
    if ts == nil then
      pcall(ffi.cdef, "struct bench_timespec { long sec; long nsec; };")
      pcall(ffi.cdef, "int clock_gettime(int clock, void *ts);")
      ts = ffi.new("struct bench_timespec")
      BENCH_SPIN_TS = ts
    end
    ffi.C.clock_gettime(1, ts)
    local t0 = tonumber(ts.sec) * 1e6 + tonumber(ts.nsec) * 1e-3
    local t = t0
    while t - t0 < us do
      ffi.C.clock_gettime(1, ts)
      t = tonumber(ts.sec) * 1e6 + tonumber(ts.nsec) * 1e-3
    end
    return tostring(_G)
  end, function(id)
    if not seen[id] then seen[id], count = true, count + 1 end
  end)
  for _ = 1, 20 do
    for _ = 1, 2 * M.threads do w:queue(2000) end
    uv.run()
    if count >= M.threads then break end
  end
  if count ~= M.threads then
    io.stderr:write("bench/luv: expected ", M.threads, " pool states, ",
                    "saw ", count, "\n")
    os.exit(1)
  end
end


local report = M.report
function M.report(r)
  r.system, r.threads = "luv", M.threads
  return report(r)
end

return M
