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
-- distinct states have answered.  A work function takes no upvalues,
-- so bench.spin goes along as bytecode, which each state loads.
function M.warm_up()
  local seen, count = {}, 0
  local spin = string.dump(M.spin)
  local w = uv.new_work(function(code, us)
    loadstring(code)(us)
    return tostring(_G)
  end, function(id)
    if not seen[id] then seen[id], count = true, count + 1 end
  end)
  for _ = 1, 20 do
    for _ = 1, 2 * M.threads do w:queue(spin, 2000) end
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
