-- runtime.lua: the `runtime` API as scripts and jobs see it.
--
-- The C core passes its primitives in `core`.  Waiting is done here
-- because it yields: a task parks itself and yields to the scheduler;
-- code that cannot yield (inside require, a sort comparator, a
-- metamethod called from C, a coroutine of the user's own) turns the
-- loop in place instead.
local core = ...

local yield, isyieldable = coroutine.yield, coroutine.isyieldable
local done, park, wait, result = core.done, core.park, core.wait,
  core.result
local sleep_park, sleep_wait = core.sleep_park, core.sleep_wait
local select, type, error, pcall, unpack = select, type, error, pcall,
  unpack

local Job = core.job_mt.__index

local function pack(...)
  return { n = select("#", ...), ... }
end

-- job:await() -> the values the job's function returned.  Raises the
-- job's error (message, worker id and traceback) if it failed.  Awaiting
-- again gives the same outcome again.
function Job.await(job)
  local finished = done(job)
  if finished == nil then
    error("bad argument #1 to 'await' (job expected, got " .. type(job)
      .. ")", 2)
  end
  if not finished then
    if isyieldable() and park(job) then
      repeat yield() until done(job)
    else
      wait(job)
    end
  end
  return result(job)
end

-- job:done() -> true once the outcome is there, without waiting.
function Job.done(job)
  local finished = done(job)
  if finished == nil then
    error("bad argument #1 to 'done' (job expected, got " .. type(job)
      .. ")", 2)
  end
  return finished
end

-- Runs a job's function (in the worker).  The handler takes the
-- traceback where the error happened, while every frame still has its
-- line, and drops the frames of this runner at the bottom.
local traceback, xpcall = debug.traceback, xpcall

local function on_error(e)
  local tb = traceback("", 2):sub(2)
  tb = tb:gsub("\n\t%[C%]: in function 'xpcall'.*$", "")
  return { e, (tb:gsub("\n\t%[builtin#%d+%]:[^\n]*$", "")) }
end

function core.run_job(fn, ...)
  return xpcall(fn, on_error, ...)
end

-- The main script and every job run as coroutines of the scheduler, but
-- to the user they are the top level: yielding there is an error, as in
-- luajit.  runtime.sleep(0) gives way to other jobs instead.
local in_task = core.in_task

function coroutine.yield(...)
  if in_task() then
    error("attempt to yield from outside a coroutine", 2)
  end
  return yield(...)
end

-- Helpers for the codec (src/codec.c).
local ffi, funcinfo

-- Does f define inner functions?  Then its job closure is not reused.
function core.has_children(f)
  if funcinfo == nil then
    local ok, ju = pcall(require, "jit.util")
    funcinfo = ok and ju.funcinfo or false
  end
  return not funcinfo or funcinfo(f).children == true
end

-- 1 for an int64_t cdata, 2 for a uint64_t one, else 0.
function core.cdata_kind(v)
  ffi = ffi or require("ffi")
  if ffi.istype("int64_t", v) then return 1 end
  if ffi.istype("uint64_t", v) then return 2 end
  return 0
end

function core.new_int64(kind)
  ffi = ffi or require("ffi")
  return ffi.new(kind == 1 and "int64_t" or "uint64_t")
end

-- The codec's loops over arrays of numbers (src/codec.c, put_numbers).
-- In Lua, LuaJIT compiles them to a few instructions a number; through
-- the C API each number costs a few hundred.  p is the address of an
-- aligned array of doubles, passed as a number.
do
  local ffi = require("ffi")
  local doubles, rawget = ffi.typeof("double *"), rawget

  -- Writes t[1..n] at p up to the first value that is not a number;
  -- returns how many it wrote and, when that is all n, whether t has
  -- keys other than 1..n.
  function core.put_numbers(t, n, p)
    local r = ffi.cast(doubles, p)
    for i = 1, n do
      local v = rawget(t, i)
      if type(v) ~= "number" then return i - 1, true end
      r[i - 1] = v
    end
    -- Other keys?  Walking every key costs more than the loop above,
    -- so first a shortcut.  LuaJIT keeps integer keys below its array
    -- size in the array part, and accepts any index in that range as
    -- next's key, raising an error only for a key that is neither
    -- there nor in the hash part.  So when next(t, n + 1) does not raise
    -- (t[n + 1] is nil), 1..n are all in the array part, and next goes
    -- on over the rest of the array and the whole hash part: nothing
    -- there, and nothing at 0, means no other keys.
    if rawget(t, 0) == nil and rawget(t, n + 1) == nil then
      local ok, k = pcall(next, t, n + 1)
      if ok then return n, k ~= nil end
    end
    for k in next, t do
      if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then
        return n, true
      end
    end
    return n, false
  end

  -- Reads n doubles at p into t[1..n].
  function core.get_numbers(t, p, n)
    local r = ffi.cast(doubles, p)
    for i = 1, n do t[i] = r[i - 1] end
  end
end

-- Jobs submitted from C (nshost_call, nshost_eval) run these.
local chunks, nchunks = {}, 0

function core.call_named(name, ...)
  local mod, fname = name:match("^(.*)%.([^.]+)$")
  local f
  if mod then
    local m = require(mod)
    f = type(m) == "table" and m[fname] or nil
  else
    f = _G[name]
  end
  if type(f) ~= "function" then
    error("nshost_call: '" .. name .. "' is not a function (got "
      .. type(f) .. ")", 0)
  end
  return f(...)
end

function core.eval_chunk(src, ...)
  local f = chunks[src]
  if not f then
    local err
    f, err = loadstring(src, "=(nshost_eval)")
    if not f then error("nshost_eval: " .. err, 0) end
    if nchunks >= 256 then chunks, nchunks = {}, 0 end
    chunks[src], nchunks = f, nchunks + 1
  end
  return f(...)
end

local runtime = {}

runtime.spawn = core.spawn
runtime.worker_id = core.worker_id
runtime.threads = core.threads

-- runtime.sleep(ms): suspends the calling job or script for ms
-- milliseconds; its thread goes on running other jobs.
function runtime.sleep(ms)
  if type(ms) ~= "number" or not (ms >= 0 and ms < 1e12) then
    error("bad argument #1 to 'sleep' (milliseconds from 0 to 1e12 "
      .. "expected, got " .. (type(ms) == "number" and tostring(ms) or
      type(ms)) .. ")", 2)
  end
  if isyieldable() and sleep_park(ms) then
    yield()
  else
    sleep_wait(ms)
  end
end

-- runtime.await_all(jobs) -> a list with, for each job, a table of its
-- results (with n set to their number).  Raises the first error met,
-- after every job has finished.
function runtime.await_all(jobs)
  if type(jobs) ~= "table" then
    error("bad argument #1 to 'await_all' (table of jobs expected, got "
      .. type(jobs) .. ")", 2)
  end
  for i = 1, #jobs do
    if done(jobs[i]) == nil then
      error(("bad argument #1 to 'await_all' (item %d is a %s, not a "
        .. "job)"):format(i, type(jobs[i])), 2)
    end
  end
  local out, first_err = {}, nil
  for i = 1, #jobs do
    local r = pack(pcall(Job.await, jobs[i]))
    if r[1] then
      out[i] = pack(unpack(r, 2, r.n))
    elseif first_err == nil then
      first_err = { r[2] }
    end
  end
  if first_err then error(first_err[1], 0) end
  return out
end

return runtime
