-- The nshost command line (issue 2, points 5 and 6), run as a
-- subprocess: options, the arg table, chunk names, LUA_INIT, LUA_PATH,
-- LUA_CPATH, errors and exit statuses, thread counts, and waiting for
-- the jobs a script started. NSHOST=path overrides the binary used.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local support = dofile(here .. "support.lua")

local q = support.quote
local NSHOST = support.nshost
local assert_has = support.assert_has

local function run(args, opts)
  return support.run(args, opts)
end

-- Runs a script given as text; returns the run and the script's path.
local function run_script(text, args, opts)
  local path = support.script(text)
  local r = run((opts and opts.before or "") .. " " .. q(path) .. " "
    .. (args or ""), opts)
  os.remove(path)
  return r, path
end

local function ok_run(r)
  assert.are.equal(0, r.status, support.describe(r))
end

local function starts_with(s, prefix)
  assert.are.equal(prefix, s:sub(1, #prefix),
    ("expected to start with %q:\n%s"):format(prefix, s))
end

local function cpu_count()
  local p = assert(io.popen("nproc"))
  local a = tonumber(p:read("*l"))
  p:close()
  p = assert(io.popen("getconf _NPROCESSORS_ONLN"))
  local b = tonumber(p:read("*l"))
  p:close()
  return a, b
end

describe("nshost command line", function()
  it("has a binary to run", function()
    assert.is_true(support.exists(NSHOST), "no " .. NSHOST)
  end)

  describe("options", function()
    it("-v prints a version line that names nshost", function()
      local r = run("-v")
      ok_run(r)
      assert_has((r.out .. r.err):lower(), "nshost")
    end)

    it("-h prints the usage on stdout", function()
      local r = run("-h")
      ok_run(r)
      assert_has(r.out:lower(), "usage")
      assert_has(r.out, "--threads")
    end)

    it("--help prints the same usage", function()
      local a, b = run("-h"), run("--help")
      ok_run(b)
      assert.are.equal(a.out, b.out)
    end)

    it("the usage names every option", function()
      local out = run("-h").out
      for _, opt in ipairs({ "-e", "-l", "-v", "-t", "--threads", "-h",
                             "--" }) do
        assert_has(out, opt)
      end
    end)

    it("an unknown option prints the usage on stderr and exits 1",
       function()
      for _, opt in ipairs({ "--bogus", "-z", "--threads-please" }) do
        local r = run(opt .. " -e 'print(1)'")
        assert.are.equal(1, r.status, support.describe(r))
        assert_has(r.err:lower(), "usage")
        assert.are.equal("", r.out)
      end
    end)

    it("-e runs a chunk", function()
      local r = run("-e 'print(1 + 1)'")
      ok_run(r)
      assert.are.equal("2\n", r.out)
      assert.are.equal("", r.err)
    end)

    it("-e runs several chunks in order", function()
      local r = run("-e 'x = 20' -e 'print(x + 1)'")
      ok_run(r)
      assert.are.equal("21\n", r.out)
    end)

    it("-e runs before the script", function()
      local r = run_script("print(PRE, ...)\n", "a",
        { before = "-e 'PRE = 5'" })
      ok_run(r)
      assert.are.equal("5\ta\n", r.out)
    end)

    it("-e without a chunk is an error", function()
      local r = run("-e")
      assert.are.equal(1, r.status, support.describe(r))
      assert.are_not.equal("", r.err)
    end)

    it("-e with a syntax error exits 1 with nshost: on stderr", function()
      local r = run("-e 'x = = 1'")
      assert.are.equal(1, r.status, support.describe(r))
      starts_with(r.err, "nshost: ")
    end)

    describe("-l", function()
      local dir
      before_each(function()
        dir = support.tmpdir()
        support.write(dir .. "/nsh_l_mod.lua",
          "NSH_L_LOADED = (NSH_L_LOADED or 0) + 1\n"
          .. "ORDER = (ORDER or '') .. 'l'\n"
          .. "return { v = 7 }\n")
      end)
      after_each(function()
        support.rmrf(dir)
      end)

      it("requires a module found on LUA_PATH", function()
        local r = run("-l nsh_l_mod -e "
          .. q("print(NSH_L_LOADED, package.loaded.nsh_l_mod.v)"),
          { env = { LUA_PATH = dir .. "/?.lua;;" } })
        ok_run(r)
        assert.are.equal("1\t7\n", r.out)
      end)

      it("runs in order with -e", function()
        local r = run("-e \"ORDER = 'e'\" -l nsh_l_mod -e 'print(ORDER)'",
          { env = { LUA_PATH = dir .. "/?.lua;;" } })
        ok_run(r)
        assert.are.equal("el\n", r.out)
      end)

      it("fails with status 1 for a missing module", function()
        local r = run("-l nsh_no_such_module -e 'print(1)'")
        assert.are.equal(1, r.status, support.describe(r))
        starts_with(r.err, "nshost: ")
        assert_has(r.err, "module 'nsh_no_such_module' not found")
        assert.are.equal("", r.out)
      end)
    end)

    it("- runs the script from stdin with the arguments", function()
      local r = run("- a b", { stdin = "print(arg[0], ...)\n" })
      ok_run(r)
      assert.are.equal("-\ta\tb\n", r.out)
    end)

    it("- names the chunk stdin, as luajit does", function()
      local r = run("-", { stdin = "\nerror('from stdin')\n" })
      assert.are.equal(1, r.status, support.describe(r))
      starts_with(r.err, "nshost: stdin:2: from stdin\n")
    end)

    it("runs stdin when there is no script and stdin is not a terminal",
       function()
      local r = run("", { stdin = "print('from stdin')\n" })
      ok_run(r)
      assert.are.equal("from stdin\n", r.out)
    end)

    it("-- ends the options", function()
      local r = run_script("print('ran', ...)\n", "-v x",
        { before = "--" })
      ok_run(r)
      assert.are.equal("ran\t-v\tx\n", r.out)
    end)

    it("-- lets a script name start with -", function()
      local dir = support.tmpdir()
      support.write(dir .. "/-t.lua", "print('dash script', ...)\n")
      local r = run("-- -t.lua 1", { dir = dir })
      support.rmrf(dir)
      ok_run(r)
      assert.are.equal("dash script\t1\n", r.out)
    end)

    it("options after the script belong to the script", function()
      local r = run_script("print(...)\n", "-e x --threads 9")
      ok_run(r)
      assert.are.equal("-e\tx\t--threads\t9\n", r.out)
    end)
  end)

  describe("the arg table", function()
    local dump = "for i = -4, #arg + 1 do\n"
      .. "  io.write(i, '=', tostring(arg[i]), '\\n')\n"
      .. "end\n"

    it("has the script at 0 and the arguments at 1..n", function()
      local r, path = run_script(dump, "a 'b c'")
      ok_run(r)
      assert.are.equal(table.concat({
        "-4=nil", "-3=nil", "-2=nil", "-1=" .. NSHOST, "0=" .. path,
        "1=a", "2=b c", "3=nil", "",
      }, "\n"), r.out)
    end)

    it("passes up to 7000 arguments as ..., and refuses more", function()
      local function numbers(n)
        local t = {}
        for i = 1, n do t[i] = i end
        return table.concat(t, " ")
      end
      local count = "io.write(select('#', ...), ' ', #arg)"
      local r = run_script(count, numbers(7000))
      ok_run(r)
      assert.are.equal("7000 7000", r.out)
      r = run_script(count, numbers(7001))
      assert.are.equal(1, r.status, support.describe(r))
      assert_has(r.err, "too many arguments to the script (7001; at most "
        .. "7000")
    end)

    it("has the interpreter and options at negative indices", function()
      local r, path = run_script(dump, "x", { before = "--threads 2" })
      ok_run(r)
      assert.are.equal(table.concat({
        "-4=nil", "-3=" .. NSHOST, "-2=--threads", "-1=2", "0=" .. path,
        "1=x", "2=nil", "",
      }, "\n"), r.out)
    end)

    it("keeps -e and its chunk at negative indices", function()
      local r, path = run_script(dump, "", { before = "-e 'y=1'" })
      ok_run(r)
      assert.are.equal(table.concat({
        "-4=nil", "-3=" .. NSHOST, "-2=-e", "-1=y=1", "0=" .. path,
        "1=nil", "",
      }, "\n"), r.out)
    end)

    it("passes the arguments as ...", function()
      local r = run_script("print(select('#', ...), ...)\n", "a '' 'c d'")
      ok_run(r)
      assert.are.equal("3\ta\t\tc d\n", r.out)
    end)

    it("passes no ... without arguments", function()
      local r = run_script("print(select('#', ...))\n")
      ok_run(r)
      assert.are.equal("0\n", r.out)
    end)
  end)

  describe("loading the script", function()
    it("skips a #! first line and keeps line numbers", function()
      local r = run_script("#!/usr/bin/env nshost\n"
        .. "print(debug.getinfo(1, 'l').currentline)\n")
      ok_run(r)
      assert.are.equal("2\n", r.out)
    end)

    it("reports the right line after a #! line", function()
      local r, path = run_script("#!/usr/bin/env nshost\n\n"
        .. "error('on three')\n")
      assert.are.equal(1, r.status, support.describe(r))
      starts_with(r.err, "nshost: " .. path .. ":3: on three\n")
    end)

    it("names the chunk @path", function()
      local r, path = run_script("print(debug.getinfo(1, 'S').source)\n")
      ok_run(r)
      assert.are.equal("@" .. path .. "\n", r.out)
    end)

    it("fails with status 1 for a missing script", function()
      local r = run("/nonexistent/nsh_missing.lua")
      assert.are.equal(1, r.status, support.describe(r))
      starts_with(r.err, "nshost: ")
      assert_has(r.err, "/nonexistent/nsh_missing.lua")
    end)

    it("fails with status 1 for a syntax error", function()
      local r, path = run_script("local = 1\n")
      assert.are.equal(1, r.status, support.describe(r))
      starts_with(r.err, "nshost: " .. path .. ":1:")
    end)
  end)

  describe("environment variables", function()
    it("LUA_INIT runs a chunk first", function()
      local r = run("-e 'print(INIT_V)'",
        { env = { LUA_INIT = "INIT_V = 42" } })
      ok_run(r)
      assert.are.equal("42\n", r.out)
    end)

    it("LUA_INIT=@file runs the file first", function()
      local init = support.script("INIT_F = 'from file'\n")
      local r = run_script("print(INIT_F)\n", "",
        { env = { LUA_INIT = "@" .. init } })
      os.remove(init)
      ok_run(r)
      assert.are.equal("from file\n", r.out)
    end)

    it("an error in LUA_INIT exits 1", function()
      local r = run("-e 'print(1)'",
        { env = { LUA_INIT = "error('init failed')" } })
      assert.are.equal(1, r.status, support.describe(r))
      assert_has(r.err, "init failed")
      assert.are.equal("", r.out)
    end)

    it("LUA_PATH is honoured in the main script and in workers",
       function()
      local dir = support.tmpdir()
      support.write(dir .. "/nsh_path_mod.lua", "return { answer = 42 }\n")
      local r = run_script(table.concat({
        "local m = require('nsh_path_mod')",
        "print(m.answer, runtime.spawn(function()",
        "  return require('nsh_path_mod').answer",
        "end):await())",
        "print(package.path:sub(1, #arg[1]) == arg[1])",
      }, "\n"), q(dir .. "/?.lua"),
        { env = { LUA_PATH = dir .. "/?.lua;;" } })
      support.rmrf(dir)
      ok_run(r)
      assert.are.equal("42\t42\ntrue\n", r.out)
    end)

    -- DESIGN: "require works in workers with the same search paths as
    -- the main script". Scripts (and busted, with its lpath) set
    -- package.path at run time, before their first spawn.
    it("a job requires modules on the package.path the script set",
       function()
      local dir = support.tmpdir()
      support.write(dir .. "/nsh_set_path_mod.lua", "return { v = 9 }\n")
      local r = run_script(table.concat({
        "package.path = ... .. '/?.lua;' .. package.path",
        "print(require('nsh_set_path_mod').v, runtime.spawn(function()",
        "  return require('nsh_set_path_mod').v",
        "end):await())",
      }, "\n"), q(dir), { before = "--threads 2" })
      support.rmrf(dir)
      ok_run(r)
      assert.are.equal("9\t9\n", r.out)
    end)

    it("LUA_CPATH is honoured", function()
      local lfs_so = package.searchpath and
        package.searchpath("lfs", package.cpath)
      if not lfs_so then
        pending("lfs.so not found on package.cpath")
        return
      end
      local dir = support.tmpdir()
      os.execute("ln -s " .. q(lfs_so) .. " " .. q(dir .. "/lfs.so"))
      local script = "print(type(require('lfs').currentdir()), "
        .. "package.cpath)\n"
      local r = run_script(script, "",
        { env = { LUA_CPATH = dir .. "/?.so" } })
      local none = run_script(script, "",
        { env = { LUA_CPATH = dir .. "/nothing/?.so" } })
      support.rmrf(dir)
      ok_run(r)
      assert.are.equal("string\t" .. dir .. "/?.so\n", r.out)
      assert.are.equal(1, none.status, support.describe(none))
      assert_has(none.err, "module 'lfs' not found")
    end)
  end)

  describe("C modules", function()
    it("lfs loads in the main script", function()
      local r = run("-e " .. q("print(type(require('lfs').currentdir()))"))
      ok_run(r)
      assert.are.equal("string\n", r.out)
    end)

    it("lfs loads in a worker", function()
      local r = run_script(table.concat({
        "print(runtime.spawn(function()",
        "  return require('lfs').attributes('/', 'mode')",
        "end):await())",
      }, "\n"), "", { before = "--threads 2" })
      ok_run(r)
      assert.are.equal("directory\n", r.out)
    end)

    it("lfs loads in this busted run", function()
      assert.are.equal("directory", require("lfs").attributes("/", "mode"))
    end)
  end)

  describe("errors and exit status", function()
    it("an uncaught error prints nshost: message and a traceback",
       function()
      local r, path = run_script("local x = 1\nerror('kaput')\n")
      assert.are.equal(1, r.status, support.describe(r))
      starts_with(r.err, "nshost: " .. path .. ":2: kaput\n")
      assert_has(r.err, "stack traceback:")
      assert.are.equal("", r.out)
    end)

    it("an error with a table value exits 1 with nshost:", function()
      local r = run("-e 'error({})'")
      assert.are.equal(1, r.status, support.describe(r))
      starts_with(r.err, "nshost: ")
    end)

    it("an error value with __tostring is printed through it", function()
      local r = run("-e " .. q("error(setmetatable({}, "
        .. "{ __tostring = function() return 'TS value' end }))"))
      assert.are.equal(1, r.status, support.describe(r))
      starts_with(r.err, "nshost: TS value")
    end)

    it("error() exits 1 and prints nothing", function()
      for _, chunk in ipairs({ "error()", "error(nil)" }) do
        local r = run("-e " .. q(chunk))
        assert.are.equal(1, r.status, support.describe(r))
        assert.are.equal("", r.err)
        assert.are.equal("", r.out)
      end
    end)

    it("error() in a script file exits 1 and prints nothing", function()
      local r = run_script("print('before')\nerror()\n")
      assert.are.equal(1, r.status, support.describe(r))
      assert.are.equal("before\n", r.out)
      assert.are.equal("", r.err)
    end)

    it("an awaited job's error uncaught at top level exits 1", function()
      local r = run_script(table.concat({
        "runtime.spawn(function()",
        "  error('unhandled in job')",
        "end):await()",
      }, "\n"), "", { before = "--threads 2" })
      assert.are.equal(1, r.status, support.describe(r))
      starts_with(r.err, "nshost: ")
      assert_has(r.err, "unhandled in job")
      assert_has(r.err, "stack traceback")
    end)

    it("an error nobody awaits is reported on stderr", function()
      local r = run_script(table.concat({
        "runtime.spawn(function() error('nobody awaits me') end)",
        "runtime.sleep(200)",
        "print('main done')",
      }, "\n"), "", { before = "--threads 2" })
      assert_has(r.out, "main done")
      assert_has(r.err, "nobody awaits me")
    end)

    it("an error awaited late is not reported as lost", function()
      local r = run_script(table.concat({
        "local h = runtime.spawn(function() error('late await') end)",
        "collectgarbage()",
        "runtime.sleep(300)",
        "print((pcall(h.await, h)))",
      }, "\n"), "", { before = "--threads 2" })
      ok_run(r)
      assert.are.equal("false\n", r.out)
      assert.are.equal("", r.err)
    end)

    it("os.exit sets the status", function()
      local cases = {
        { "os.exit(3)", 3 }, { "os.exit(0)", 0 }, { "os.exit()", 0 },
        { "os.exit(true)", 0 }, { "os.exit(false)", 1 },
      }
      for _, c in ipairs(cases) do
        local r = run("-e " .. q(c[1]))
        assert.are.equal(c[2], r.status, c[1] .. ": " .. support.describe(r))
      end
    end)

    it("os.exit flushes what was printed", function()
      local r = run("-e " .. q("io.write('before') print('!') os.exit(4)"))
      assert.are.equal(4, r.status, support.describe(r))
      assert.are.equal("before!\n", r.out)
    end)

    it("os.exit works while jobs sleep on workers", function()
      local r = run_script(table.concat({
        "for i = 1, 8 do",
        "  runtime.spawn(function() runtime.sleep(60000) end)",
        "end",
        "runtime.sleep(100)",
        "print('exiting')",
        "os.exit(3)",
      }, "\n"), "", { before = "--threads 2", timeout = 20 })
      assert.are.equal(3, r.status, support.describe(r))
      assert.are.equal("exiting\n", r.out)
      assert.is_true(r.secs < 10, ("took %.1f s"):format(r.secs))
    end)

    it("os.exit works while a job runs a CPU loop", function()
      local r = run_script(table.concat({
        "runtime.spawn(function() while true do end end)",
        "runtime.sleep(100)",
        "os.exit(5)",
      }, "\n"), "", { before = "--threads 2", timeout = 30 })
      assert.are.equal(5, r.status, support.describe(r))
      assert.is_true(r.secs < 20, ("took %.1f s"):format(r.secs))
    end)
  end)

  describe("threads", function()
    local script = "print(runtime.threads())"

    it("--threads 3 gives 3 workers", function()
      local r = run("--threads 3 -e " .. q(script),
        { unset = { "NSHOST_THREADS" } })
      ok_run(r)
      assert.are.equal("3\n", r.out)
    end)

    it("-t 3 gives 3 workers", function()
      local r = run("-t 3 -e " .. q(script), { unset = { "NSHOST_THREADS" } })
      ok_run(r)
      assert.are.equal("3\n", r.out)
    end)

    it("NSHOST_THREADS=3 gives 3 workers", function()
      local r = run("-e " .. q(script), { env = { NSHOST_THREADS = "3" } })
      ok_run(r)
      assert.are.equal("3\n", r.out)
    end)

    it("--threads wins over NSHOST_THREADS", function()
      local r = run("--threads 2 -e " .. q(script),
        { env = { NSHOST_THREADS = "3" } })
      ok_run(r)
      assert.are.equal("2\n", r.out)
    end)

    it("defaults to the number of CPUs", function()
      local r = run("-e " .. q(script), { unset = { "NSHOST_THREADS" } })
      ok_run(r)
      local n = tonumber(r.out)
      local a, b = cpu_count()
      assert.is_true(n == a or n == b,
        ("%s threads, nproc %s, online %s"):format(r.out, a, b))
    end)

    it("runs jobs on workers 1..3 with --threads 3", function()
      local r = run_script(table.concat({
        "local jobs, seen = {}, {}",
        "for i = 1, 300 do",
        "  jobs[i] = runtime.spawn(function()",
        "    return runtime.worker_id(), runtime.threads()",
        "  end)",
        "end",
        "for i = 1, 300 do",
        "  local id, t = jobs[i]:await()",
        "  assert(t == 3, 'threads ' .. t)",
        "  seen[id] = (seen[id] or 0) + 1",
        "end",
        "print(runtime.worker_id(), seen[1] ~= nil, seen[2] ~= nil,",
        "  seen[3] ~= nil, seen[0], seen[4])",
      }, "\n"), "", { before = "--threads 3" })
      ok_run(r)
      assert.are.equal("0\ttrue\ttrue\ttrue\tnil\tnil\n", r.out)
    end)

    it("refuses a thread count that is not a number", function()
      for _, opt in ipairs({ "--threads abc", "-t x", "--threads",
                             "--threads 0", "-t -2" }) do
        local r = run(opt .. " -e 'print(1)'")
        assert.are.equal(1, r.status, opt .. ": " .. support.describe(r))
        assert.are_not.equal("", r.err)
        assert.are.equal("", r.out)
      end
    end)
    it("refuses a bad NSHOST_THREADS", function()
      for _, value in ipairs({ "abc", "0", "-1" }) do
        local r = run("-e 'print(1)'", { env = { NSHOST_THREADS = value } })
        assert.are.equal(1, r.status,
          ("NSHOST_THREADS=%q: %s"):format(value, support.describe(r)))
        assert_has(r.err, "NSHOST_THREADS")
        assert.are.equal("", r.out)
      end
    end)
  end)

  describe("scheduling", function()
    it("sleep does not block the only worker", function()
      local path = support.tmpname()
      local r = run_script(table.concat({
        "local path = ...",
        "local a = runtime.spawn(function(p)",
        "  runtime.sleep(300)",
        "  local f = io.open(p)",
        "  if f then f:close() return 'saw it' end",
        "  return 'missed'",
        "end, path)",
        "local b = runtime.spawn(function(p)",
        "  local f = io.open(p, 'w') f:write('x') f:close()",
        "  return 'wrote'",
        "end, path)",
        "print(a:await(), b:await())",
      }, "\n"), q(path), { before = "--threads 1" })
      os.remove(path)
      ok_run(r)
      assert.are.equal("saw it\twrote\n", r.out)
    end)

    it("five jobs sleeping 400 ms on one worker overlap", function()
      local r = run_script(table.concat({
        "local function now()",
        "  local p = io.popen('date +%s.%N')",
        "  local t = tonumber(p:read('*l')) p:close() return t",
        "end",
        "local t0, jobs = now(), {}",
        "for i = 1, 5 do",
        "  jobs[i] = runtime.spawn(function() runtime.sleep(400) end)",
        "end",
        "for i = 1, 5 do jobs[i]:await() end",
        "print(now() - t0 < 1.5, now() - t0 >= 0.39)",
      }, "\n"), "", { before = "--threads 1" })
      ok_run(r)
      assert.are.equal("true\ttrue\n", r.out)
    end)

    it("a job awaiting a job on its own worker does not deadlock",
       function()
      local r = run_script(table.concat({
        "local function chain(n)",
        "  if n == 0 then return runtime.worker_id() end",
        "  return runtime.spawn(chain, n - 1):await()",
        "end",
        "print(runtime.spawn(chain, 50):await())",
      }, "\n"), "", { before = "--threads 1", timeout = 20 })
      ok_run(r)
      assert.are.equal("1\n", r.out)
    end)

    it("coroutine.yield at the top level raises, as in luajit",
       function()
      local r = run("-e " .. q("print(pcall(coroutine.yield, 1))"))
      ok_run(r)
      assert.are.equal("false\t", r.out:sub(1, 6))
      assert_has(r.out, "yield")
    end)

    it("await works at the top level of a script", function()
      local r = run_script(
        "print(runtime.spawn(function(a, b) return a .. b end, 'x', 'y')"
        .. ":await())\n", "", { before = "--threads 2" })
      ok_run(r)
      assert.are.equal("xy\n", r.out)
    end)

    it("await works in -e, -l, LUA_INIT and a script from stdin",
       function()
      local dir = support.tmpdir()
      support.write(dir .. "/nsh_l_await.lua",
        "L_AW = runtime.spawn(function() return 'l' end):await()\n")
      local r = run("-l nsh_l_await -e "
        .. q("E_AW = runtime.spawn(function() return 'e' end):await()")
        .. " -", {
          env = {
            LUA_PATH = dir .. "/?.lua;;",
            LUA_INIT = "I_AW = runtime.spawn(function() return 'i' end)"
              .. ":await()",
          },
          stdin = "print(I_AW, L_AW, E_AW, "
            .. "runtime.spawn(function() return 's' end):await())\n",
        })
      support.rmrf(dir)
      ok_run(r)
      assert.are.equal("i\tl\te\ts\n", r.out)
    end)

    it("the process waits for a job nobody awaits", function()
      local path = support.tmpname()
      local r = run_script(table.concat({
        "runtime.spawn(function(p)",
        "  runtime.sleep(100)",
        "  local f = io.open(p, 'w') f:write('late') f:close()",
        "end, ...)",
      }, "\n"), q(path), { before = "--threads 2" })
      local content = support.read(path)
      os.remove(path)
      ok_run(r)
      assert.are.equal("late", content)
    end)

    it("the process waits for jobs started by jobs", function()
      local path = support.tmpname()
      local r = run_script(table.concat({
        "runtime.spawn(function(p)",
        "  runtime.spawn(function(q)",
        "    runtime.sleep(200)",
        "    local f = io.open(q, 'w') f:write('inner') f:close()",
        "  end, p)",
        "end, ...)",
      }, "\n"), q(path), { before = "--threads 2" })
      local content = support.read(path)
      os.remove(path)
      ok_run(r)
      assert.are.equal("inner", content)
    end)

    it("a worker's print reaches stdout", function()
      local r = run_script(
        "runtime.spawn(print, 'from', 'worker'):await()\n", "",
        { before = "--threads 2" })
      ok_run(r)
      assert.are.equal("from\tworker\n", r.out)
    end)
  end)

  describe("busted under nshost", function()
    local busted = "/usr/bin/busted"
    local dir

    before_each(function()
      dir = support.tmpdir()
      support.write(dir .. "/pass_spec.lua", table.concat({
        "describe('nshost', function()",
        "  it('runs a job', function()",
        "    assert.are.equal(4, runtime.spawn(function(x)",
        "      return x * x",
        "    end, 2):await())",
        "  end)",
        "end)",
      }, "\n"))
      support.write(dir .. "/fail_spec.lua", table.concat({
        "describe('nshost', function()",
        "  it('fails', function()",
        "    assert.are.equal(1, runtime.spawn(function()",
        "      return 2",
        "    end):await())",
        "  end)",
        "end)",
      }, "\n"))
    end)

    after_each(function()
      support.rmrf(dir)
    end)

    it("passes a passing spec with status 0", function()
      if not support.exists(busted) then
        pending("no " .. busted)
        return
      end
      local r = run(q(busted) .. " -o TAP pass_spec.lua", { dir = dir })
      ok_run(r)
      assert_has(r.out, "ok 1 - nshost runs a job")
    end)

    it("fails a failing spec with status 1", function()
      if not support.exists(busted) then
        pending("no " .. busted)
        return
      end
      local r = run(q(busted) .. " -o TAP fail_spec.lua", { dir = dir })
      assert.are.equal(1, r.status, support.describe(r))
      assert_has(r.out, "not ok 1 - nshost fails")
    end)

    it("lets a job require a module from busted's lpath ./src",
       function()
      if not support.exists(busted) then
        pending("no " .. busted)
        return
      end
      os.execute("mkdir -p " .. q(dir .. "/src"))
      support.write(dir .. "/src/nsh_src_mod.lua", "return { v = 5 }\n")
      support.write(dir .. "/src_spec.lua", table.concat({
        "describe('nshost', function()",
        "  it('requires from src in a job', function()",
        "    assert.are.equal(5, runtime.spawn(function()",
        "      return require('nsh_src_mod').v",
        "    end):await())",
        "  end)",
        "end)",
      }, "\n"))
      local r = run(q(busted) .. " -o TAP src_spec.lua", { dir = dir })
      ok_run(r)
      assert_has(r.out, "ok 1 - nshost requires from src in a job")
    end)

    it("runs with busted --lua=nshost", function()
      if not support.exists(busted) then
        pending("no " .. busted)
        return
      end
      local r = run("--lua=" .. q(NSHOST) .. " -o TAP pass_spec.lua",
        { dir = dir, exe = busted })
      ok_run(r)
      assert_has(r.out, "ok 1 - nshost runs a job")
    end)
  end)
end)
