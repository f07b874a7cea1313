-- wordfreq_check: test for examples/wordfreq.lua, run by nshost.
--
-- usage: nshost examples/wordfreq_check.lua [dir]
--
-- 1. Counts a small tree made here, whose answer is known, including file
--    names that need quoting, in both modes.
-- 2. Counts dir (default /usr/include/linux, else /usr/include) in
--    parallel and serially in this process and requires identical results,
--    and, with more than one thread, jobs on more than one worker.
-- Prints "wordfreq_check: ok ..." and exits 0, or prints what differs to
-- stderr and exits 1.

local here = (arg and arg[0] or ""):match("^(.*/)") or "./"
WORDFREQ_LIBRARY = true
local wf = dofile(here .. "wordfreq.lua")
WORDFREQ_LIBRARY = nil

local q = wf.shell_quote


local function fail(fmt, ...)
  io.stderr:write("wordfreq_check: FAIL: ", string.format(fmt, ...), "\n")
  os.exit(1)
end


-- First difference between two count tables, or nil when they are equal.
local function diff_counts(a, b, an, bn)
  for word, n in pairs(a) do
    if b[word] ~= n then
      return string.format("'%s': %s %s, %s %s", word, an, tostring(n),
                           bn, tostring(b[word]))
    end
  end
  for word, n in pairs(b) do
    if a[word] == nil then
      return string.format("'%s': %s nil, %s %d", word, an, bn, n)
    end
  end
end


local function same_totals(par, ser, what)
  for _, k in ipairs({"files", "bytes", "unreadable", "tokens",
                      "distinct"}) do
    if par[k] ~= ser[k] then
      fail("%s: %s differs: parallel %s, serial %s", what, k,
           tostring(par[k]), tostring(ser[k]))
    end
  end
  local d = diff_counts(par.counts, ser.counts, "parallel", "serial")
  if d then fail("%s: count of %s", what, d) end
end


local function write_file(path, text)
  local f = assert(io.open(path, "wb"))
  assert(f:write(text))
  f:close()
end


-- A tree whose counts are worked out by hand. The odd names check that
-- wordfreq quotes paths for the shell and splits find's output right.
local function check_known_tree()
  local root = os.tmpname()
  os.remove(root)
  -- LuaJIT returns 0 here, a Lua 5.2-style build returns true.
  local made = os.execute("mkdir -p " .. q(root .. "/sub dir/it's"))
  if made ~= 0 and made ~= true then fail("cannot make %s", root) end

  write_file(root .. "/a.h", "int foo; int foo_bar = 0x1F;\n")
  write_file(root .. "/sub dir/b c.h", "#define foo 2\n_x9 foo\n")
  write_file(root .. "/sub dir/it's/$(echo no).h", "int\n")
  write_file(root .. "/sub dir/not_a_header.c", "int ignored;\n")

  local expect = {int = 3, foo = 3, foo_bar = 1, define = 1, _x9 = 1}
  local files, err = wf.list_headers(root)
  if not files then fail("known tree: %s", err) end
  if #files ~= 3 then fail("known tree: %d files, expected 3", #files) end

  local batches = wf.make_batches(files, 2)
  local par = wf.merge(wf.count_parallel(batches))
  local ser = wf.merge(wf.count_serial(batches))
  os.execute("rm -rf " .. q(root))

  local d = diff_counts(par.counts, expect, "counted", "expected")
  if d then fail("known tree: count of %s", d) end
  same_totals(par, ser, "known tree")
end


local function default_dir()
  local f = io.open("/usr/include/linux/types.h", "rb")
  if f then f:close() return "/usr/include/linux" end
  return "/usr/include"
end


local function check_dir(dir)
  local files, err = wf.list_headers(dir)
  if not files then fail("%s", err) end

  -- More batches than workers, so that random placement all but surely
  -- gives each worker some: the chance that 32 jobs all land on one of
  -- two workers is 2^-31.
  local batches = wf.make_batches(files, 32)
  local par = wf.merge(wf.count_parallel(batches))
  local ser = wf.merge(wf.count_serial(batches))
  same_totals(par, ser, dir)

  if par.jobs[0] then fail("a parallel job ran on the main thread") end
  if ser.jobs[0] ~= #batches then fail("serial count left the main thread") end
  local used, spread = 0, {}
  for w = 1, runtime.threads() do
    if par.jobs[w] then used = used + 1 end
    spread[#spread + 1] = string.format("%d:%d", w, par.jobs[w] or 0)
  end
  if runtime.threads() > 1 and #batches > 1 and used < 2 then
    fail("all %d jobs ran on one worker of %d (%s)", #batches,
         runtime.threads(), table.concat(spread, " "))
  end

  print(string.format("wordfreq_check: ok: %s: %d files, %d bytes, "
                      .. "%d distinct identifiers, jobs per worker %s",
                      dir, par.files, par.bytes, par.distinct,
                      table.concat(spread, " ")))
end


check_known_tree()
check_dir(arg and arg[1] or default_dir())
