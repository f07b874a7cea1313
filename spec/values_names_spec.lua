-- Issue 3, point 3: standard library functions, the runtime's own
-- functions, and io.stdout and io.stderr cross by name and arrive as the
-- receiver's own: as arguments, as upvalues, as results and as the job
-- itself. io.stdin and other files are refused, naming where they were.
-- values_spec.lua already covers string.format, math.floor, tonumber,
-- print, table.insert and coroutine.wrap as arguments and upvalues, and
-- runtime.spawn, runtime.sleep and runtime.worker_id as upvalues.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local support = dofile(here .. "support.lua")
local pack, assert_has = support.pack, support.assert_has
local refusal = support.refusal

-- Runs a script with a fresh nshost and 2 threads.
local function run(text)
  local path = support.script(text)
  local r = support.run("--threads 2 " .. support.quote(path))
  os.remove(path)
  return r
end

describe("standard functions by name", function()
  it("each of a fresh state arrives as the worker's own and comes back "
     .. "as the caller's own", function()
    local r = run([[
local libs = { "string", "table", "math", "io", "os", "coroutine",
  "debug", "package", "bit", "jit", "runtime" }
local names, fns = {}, {}
for k, v in pairs(_G) do
  if type(v) == "function" then
    names[#names + 1], fns[#fns + 1] = k, v
  end
end
for _, lib in ipairs(libs) do
  for k, v in pairs(_G[lib]) do
    if type(v) == "function" then
      names[#names + 1], fns[#fns + 1] = lib .. "." .. k, v
    end
  end
end
local function own(name)
  local lib, key = name:match("^(%w+)%.(.+)$")
  if lib then return _G[lib][key] end
  return _G[name]
end
local wrong = runtime.spawn(function(list, got)
  local bad = {}
  for i, name in ipairs(list) do
    if got[i] ~= own(name) then bad[#bad + 1] = name end
  end
  return table.concat(bad, " ")
end, names, fns):await()
local back = runtime.spawn(function(list)
  local out = {}
  for i, name in ipairs(list) do out[i] = own(name) end
  return out
end, names):await()
local bad = {}
for i, name in ipairs(names) do
  if back[i] ~= fns[i] then bad[#bad + 1] = name end
end
print(#names >= 140, "there: " .. wrong, "back: " .. table.concat(bad, " "))
]])
    assert.are.equal(0, r.status, support.describe(r))
    assert.are.equal("true\tthere: \tback: \n", r.out)
  end)

  it("run as the job itself, fast functions included", function()
    assert.are.same({ n = 1, 16 },
      pack(runtime.spawn(tonumber, "0x10"):await()))
    assert.are.same({ n = 1, 255 },
      pack(runtime.spawn(tonumber, "ff", 16):await()))
    assert.are.same({ n = 1, "ababab" },
      pack(runtime.spawn(string.rep, "ab", 3):await()))
    assert.are.same({ n = 1, 9 },
      pack(runtime.spawn(math.max, 3, 9, 2):await()))
    assert.are.same({ n = 1, 3 },
      pack(runtime.spawn(select, "#", 1, nil, 3):await()))
    assert.are.same({ n = 3, 1, 2, 3 },
      pack(runtime.spawn(unpack, { 1, 2, 3 }):await()))
    assert.are.same({ n = 2, false, "oops" },
      pack(runtime.spawn(pcall, error, "oops", 0):await()))
    assert.are.same({ n = 1, " 3.14" },
      pack(runtime.spawn(string.format, "%5.2f", math.pi):await()))
    assert.are.same({ n = 1, 6 },
      pack(runtime.spawn(bit.bxor, 5, 3):await()))
    assert.are.same({ n = 1, "nil" },
      pack(runtime.spawn(type, nil):await()))
  end)

  it("raise a job's error when the standard job fails", function()
    local h = runtime.spawn(error, "from error itself", 0)
    local ok, err = pcall(h.await, h)
    assert.is_false(ok)
    assert_has(err, "from error itself")
  end)

  it("print as the job, from a script", function()
    local r = run([[
print(select("#", runtime.spawn(print, "x", 1, nil, true):await()))
runtime.spawn(io.write, "a", "b\n"):await()
print("end")
]])
    assert.are.equal(0, r.status, support.describe(r))
    assert.are.equal("", r.err)
    assert.are.equal("x\t1\tnil\ttrue\n0\nab\nend\n", r.out)
  end)

  it("cross as upvalues, fast functions included", function()
    local tn, ts, ty, sel, rg, re, nx, ip, fl, by, ch, band, lsh =
      tonumber, tostring, type, select, rawget, rawequal, next, ipairs,
      math.floor, string.byte, string.char, bit.band, bit.lshift
    local r = pack(runtime.spawn(function()
      local t = { 10, 20 }
      local s = 0
      for _, v in ip(t) do s = s + v end
      return tn("12"), ts(1.5), ty(t), sel(2, "a", "b"), rg(t, 2),
        re(t, t), (nx(t)), s, fl(-0.5), by("A"), ch(72, 105),
        band(0xff, 0x0f), lsh(1, 10)
    end):await())
    assert.are.same({ n = 13, 12, "1.5", "table", "b", 20, true, 1, 30,
      -1, 65, "Hi", 15, 1024 }, r)
  end)

  it("cross as upvalues and arrive as the worker's own", function()
    local y, wrap, gm, sort = coroutine.yield, coroutine.wrap,
      string.gmatch, table.sort
    local r = pack(runtime.spawn(function()
      local words = {}
      for w in gm("c a b", "%a") do words[#words + 1] = w end
      sort(words)
      local gen = wrap(function() y(1); y(2) end)
      return table.concat(words), gen(), gen(),
        y == coroutine.yield, sort == table.sort
    end):await())
    assert.are.same({ n = 5, "abc", 1, 2, true, true }, r)
  end)

  it("in nested standard tables cross by name", function()
    -- Reachable from the standard tables of a fresh state: jit.opt.start
    -- and the loaders in package.loaders.
    local start, loader = jit.opt.start, package.loaders[1]
    local ok, r = pcall(function()
      return pack(runtime.spawn(function(l)
        return start == jit.opt.start, l == package.loaders[1]
      end, loader):await())
    end)
    assert.is_true(ok, tostring(r))
    assert.are.same({ n = 2, true, true }, r)
  end)

  it("of LuaJIT's table.new and table.clear cross by name", function()
    -- Built-in fast functions of LuaJIT, the usual way to get them.
    local new, clear = require("table.new"), require("table.clear")
    local ok, r = pcall(function()
      return pack(runtime.spawn(function()
        local t = new(4, 0)
        t[1], t[2] = "a", "b"
        clear(t)
        return next(t) == nil, new == require("table.new"),
          clear == require("table.clear")
      end):await())
    end)
    assert.is_true(ok, tostring(r))
    assert.are.same({ n = 3, true, true, true }, r)
  end)

  it("of LuaJIT's ffi module, kept in a local, cross by name", function()
    -- `local ffi = require("ffi")` is as common in LuaJIT code as
    -- `local fmt = string.format`; every state can require it.
    local ffi = require("ffi")
    local ok, r = pcall(function()
      return pack(runtime.spawn(function()
        return ffi.sizeof("int32_t"), tostring(ffi.new("int64_t", 5)),
          ffi.istype == require("ffi").istype
      end):await())
    end)
    assert.is_true(ok, tostring(r))
    assert.are.same({ n = 3, 4, "5LL", true }, r)
  end)
end)

describe("runtime functions by name", function()
  it("arrive as the worker's own", function()
    local r = pack(runtime.spawn(function(sp, sl, wi, th, aa)
      return sp == runtime.spawn, sl == runtime.sleep,
        wi == runtime.worker_id, th == runtime.threads,
        aa == runtime.await_all
    end, runtime.spawn, runtime.sleep, runtime.worker_id,
      runtime.threads, runtime.await_all):await())
    assert.are.same({ n = 5, true, true, true, true, true }, r)
  end)

  it("run as the job itself", function()
    assert.are.same({ n = 1, runtime.threads() },
      pack(runtime.spawn(runtime.threads):await()))
    local r = runtime.spawn(runtime.await_all, {}):await()
    assert.are.same({}, r)
  end)

  it("come back by name", function()
    local a, b = runtime.spawn(function()
      return runtime.spawn, runtime.await_all
    end):await()
    assert.are.equal(runtime.spawn, a)
    assert.are.equal(runtime.await_all, b)
  end)

  it("include a job's methods, such as await, as upvalues", function()
    local h = runtime.spawn(function() return 1 end)
    local await, done = h.await, h.done
    h:await()
    local r = pack(runtime.spawn(function()
      local inner = runtime.spawn(function() return 7 end)
      return await(inner), done(inner), await == inner.await
    end):await())
    assert.are.same({ n = 3, 7, true, true }, r)
  end)

  it("include await_all as an upvalue", function()
    local all = runtime.await_all
    local r = runtime.spawn(function()
      local jobs = {}
      for i = 1, 3 do
        jobs[i] = runtime.spawn(function(x) return x * x end, i)
      end
      return all(jobs)
    end):await()
    assert.are.same({ { n = 1, 1 }, { n = 1, 4 }, { n = 1, 9 } }, r)
  end)
end)

describe("standard streams", function()
  it("io.stdout and io.stderr arrive as the worker's own files",
     function()
    local out = io.stdout
    local r = pack(runtime.spawn(function(o, e)
      return io.type(o), io.type(e), o == io.stdout, e == io.stderr,
        io.type(out), out == io.stdout
    end, io.stdout, io.stderr):await())
    assert.are.same({ n = 6, "file", "file", true, true, "file", true },
      r)
  end)

  it("come back as the caller's own", function()
    local o, e = runtime.spawn(function()
      return io.stdout, io.stderr
    end):await()
    assert.are.equal(io.stdout, o)
    assert.are.equal(io.stderr, e)
  end)

  it("can be written to in the worker", function()
    local r = run([[
local out, err = io.stdout, io.stderr
runtime.spawn(function(o, e)
  o:write("to stdout ", 1, "\n")
  e:write("to stderr\n")
  out:write("via upvalue\n")
  o:flush()
  e:flush()
end, io.stdout, io.stderr):await()
print("done")
]])
    assert.are.equal(0, r.status, support.describe(r))
    assert.are.equal("to stdout 1\nvia upvalue\ndone\n", r.out)
    assert.are.equal("to stderr\n", r.err)
  end)

  it("io.stdin crosses by name as the worker's own", function()
    -- All three standard streams cross by name, so that `local io = io`
    -- and similar captures work; reading standard input from several
    -- workers at once is the script's own business.
    local input = io.stdin
    assert.are.same({ n = 2, true, "file" },
      pack(runtime.spawn(function(f)
        return f == io.stdin and input == io.stdin, io.type(f)
      end, io.stdin):await()))
  end)

  it("other files are refused, naming where they are and userdata",
     function()
    local path = support.tmpname()
    local f = assert(io.open(path, "w"))
    local log = { file = f }
    local err = refusal(function() return log end)
    local err2 = refusal(function(x) return x end, 1, io.tmpfile())
    f:close()
    os.remove(path)
    assert_has(err, "the function > upvalue 'log' > key 'file': cannot "
      .. "send a userdata")
    assert_has(err2, "argument #2: cannot send a userdata")
  end)

  it("a file cannot come back from a worker", function()
    local h = runtime.spawn(function() return io.tmpfile() end)
    local ok, err = pcall(h.await, h)
    assert.is_false(ok)
    assert_has(err, "result #1: cannot send a userdata")
  end)
end)
