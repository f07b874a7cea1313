-- wordfreq: the most frequent C identifiers in every *.h file under a
-- directory, counted in parallel by nshost's workers.
--
-- usage: nshost examples/wordfreq.lua [options] [dir] [top]
--   dir         directory to scan (default /usr/include)
--   top         how many identifiers to print (default 20)
--   --serial    count on the main thread without spawning; the output is
--               the same apart from the jobs and time sections
--               (WORDFREQ_SERIAL=1 in the environment does the same)
--   --jobs N    split the files into N batches, one job each (default 64)
--
-- Output: sections that start with "== ", then "key<TAB>value" lines, so
-- a test or a shell pipeline can pick out what it needs.
--
-- With the global WORDFREQ_LIBRARY set to true, loading this file returns
-- its functions instead of running it; wordfreq_check.lua uses that to
-- compare the parallel and serial counts in one process.

local M = {}

-- An identifier starts where no word character precedes it, so that the
-- tail of a number such as 0x1F is not counted as "x1F".
local IDENT = "%f[%w_][%a_][%w_]*"

-- Runs on a worker: it travels with the job, so its upvalues must be able
-- to cross (IDENT is a string) and everything else it uses is a global that
-- every Lua state has (io, string, runtime).
local function count_batch(files)
  local counts, bytes, nfiles, unreadable = {}, 0, 0, 0
  for i = 1, #files do
    local f = io.open(files[i], "rb")
    if f then
      local text = f:read("*a") or ""
      f:close()
      nfiles = nfiles + 1
      bytes = bytes + #text
      for word in string.gmatch(text, IDENT) do
        counts[word] = (counts[word] or 0) + 1
      end
    else
      -- Counted, not raised: one unreadable header should not lose the
      -- whole batch, and the total shows that something was skipped.
      unreadable = unreadable + 1
    end
  end
  return {
    counts = counts, files = nfiles, bytes = bytes,
    unreadable = unreadable, worker = runtime.worker_id(),
  }
end
M.count_batch = count_batch


-- Quote for /bin/sh: inside single quotes only ' itself needs care.
local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end
M.shell_quote = shell_quote


-- Every regular *.h file under dir, sorted bytewise so that batches, and
-- so the output, do not depend on the order of directory entries.
-- Returns nil and a message when find fails to start or finds nothing.
function M.list_headers(dir)
  local out, files, p
  -- A path that starts with "-" would be taken by find as an option.
  if dir:sub(1, 1) == "-" then dir = "./" .. dir end

  -- -print0 keeps names with newlines or spaces in one piece.
  p = io.popen("find " .. shell_quote(dir)
               .. " -type f -name '*.h' -print0")
  if not p then return nil, "cannot run find" end
  out = p:read("*a")
  p:close()

  files = {}
  for path in out:gmatch("([^%z]+)%z") do files[#files + 1] = path end
  table.sort(files)
  if #files == 0 then return nil, "no *.h files under " .. dir end
  return files
end


-- Deal the files out round-robin, so that a directory of large headers
-- spreads over many batches instead of making one slow job.
function M.make_batches(files, nbatches)
  local batches = {}
  nbatches = math.max(1, math.min(nbatches, #files))
  for i = 1, nbatches do batches[i] = {} end
  for i, path in ipairs(files) do
    local b = batches[(i - 1) % nbatches + 1]
    b[#b + 1] = path
  end
  return batches
end


-- One job per batch, all spawned before any is awaited, so that every
-- worker has work while the main thread waits.
function M.count_parallel(batches)
  local jobs, results = {}, {}
  for i, batch in ipairs(batches) do
    jobs[i] = runtime.spawn(count_batch, batch)
  end
  for i, job in ipairs(jobs) do results[i] = job:await() end
  return results
end


-- The same batches, counted one after another on the calling thread.
function M.count_serial(batches)
  local results = {}
  for i, batch in ipairs(batches) do results[i] = count_batch(batch) end
  return results
end


-- Add up the per-batch results. jobs[w] is the number of batches that
-- worker w counted (worker 0 is the main thread).
function M.merge(results)
  local total = {
    counts = {}, files = 0, bytes = 0, unreadable = 0,
    tokens = 0, distinct = 0, jobs = {},
  }
  local counts = total.counts

  for _, r in ipairs(results) do
    total.files = total.files + r.files
    total.bytes = total.bytes + r.bytes
    total.unreadable = total.unreadable + r.unreadable
    total.jobs[r.worker] = (total.jobs[r.worker] or 0) + 1
    for word, n in pairs(r.counts) do
      if not counts[word] then total.distinct = total.distinct + 1 end
      counts[word] = (counts[word] or 0) + n
      total.tokens = total.tokens + n
    end
  end
  return total
end


-- The n most frequent identifiers as {word, count} pairs; ties are broken
-- by the word so that the list is the same on every run.
function M.top(counts, n)
  local list = {}
  for word, c in pairs(counts) do list[#list + 1] = {word, c} end
  table.sort(list, function(a, b)
    if a[2] ~= b[2] then return a[2] > b[2] end
    return a[1] < b[1]
  end)
  for i = #list, n + 1, -1 do list[i] = nil end
  return list
end


-- Wall clock for the report. os.clock is CPU time of the whole process
-- (all threads) and os.time counts whole seconds, so ask the kernel.
local function monotonic_clock()
  local ffi = require("ffi")
  local ts
  -- pcall: another script in the same state may have declared these.
  pcall(ffi.cdef, "struct wordfreq_timespec { long sec; long nsec; };")
  pcall(ffi.cdef, "int clock_gettime(int clock, void *ts);")
  ts = ffi.new("struct wordfreq_timespec")
  return function()
    ffi.C.clock_gettime(1, ts) -- 1 is CLOCK_MONOTONIC on Linux
    return tonumber(ts.sec) + tonumber(ts.nsec) * 1e-9
  end
end


local function usage(msg)
  io.stderr:write("wordfreq: ", msg, "\n",
    "usage: nshost examples/wordfreq.lua [--serial] [--jobs N]",
    " [dir] [top]\n")
  os.exit(2)
end


local function parse_args(argv)
  local opt = {
    dir = "/usr/include", top = 20, jobs = 64,
    serial = os.getenv("WORDFREQ_SERIAL") == "1",
  }
  local pos, i = {}, 1

  while i <= #argv do
    local a = argv[i]
    if a == "--serial" then
      opt.serial = true
    elseif a == "--jobs" then
      i = i + 1
      opt.jobs = tonumber(argv[i])
      if not opt.jobs or opt.jobs < 1 then usage("bad --jobs value") end
    elseif a:sub(1, 2) == "--" then
      usage("unknown option '" .. a .. "'")
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end

  if pos[1] then opt.dir = pos[1] end
  if pos[2] then
    opt.top = tonumber(pos[2])
    if not opt.top or opt.top < 0 then usage("bad top value") end
  end
  if pos[3] then usage("too many arguments") end
  return opt
end


local function report(opt, total, nbatches, times)
  local out = {}
  local function say(...) out[#out + 1] = table.concat({...}) end

  say("== wordfreq")
  say("dir\t", opt.dir)
  say("mode\t", opt.serial and "serial" or "parallel")
  say("threads\t", runtime.threads())
  say("jobs\t", nbatches)
  say("files\t", total.files)
  say("unreadable\t", total.unreadable)
  say("bytes\t", total.bytes)
  say("tokens\t", total.tokens)
  say("distinct\t", total.distinct)

  say("== top ", opt.top)
  for _, pair in ipairs(M.top(total.counts, opt.top)) do
    say(pair[1], "\t", pair[2])
  end

  -- Workers that got no job are listed too: with random placement that
  -- can happen, and it is worth seeing.
  say("== jobs per worker")
  local first = opt.serial and 0 or 1
  local last = opt.serial and 0 or runtime.threads()
  for w = first, last do
    say("worker ", w, ": ", total.jobs[w] or 0, " jobs")
  end

  say("== time")
  say(string.format("list_s\t%.3f", times.list))
  say(string.format("count_s\t%.3f", times.count))
  say(string.format("wall_s\t%.3f", times.wall))
  io.write(table.concat(out, "\n"), "\n")
end


local function main(argv)
  local opt = parse_args(argv)
  local now = monotonic_clock()
  local t0, t1, t2, files, err, batches, results, total

  t0 = now()
  files, err = M.list_headers(opt.dir)
  if not files then
    io.stderr:write("wordfreq: ", err, "\n")
    os.exit(1)
  end
  batches = M.make_batches(files, opt.jobs)

  t1 = now()
  if opt.serial then
    results = M.count_serial(batches)
  else
    results = M.count_parallel(batches)
  end
  total = M.merge(results)
  t2 = now()

  report(opt, total, #batches,
         {list = t1 - t0, count = t2 - t1, wall = t2 - t0})
end


if WORDFREQ_LIBRARY then return M end
main(arg or {})
