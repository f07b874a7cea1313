-- Helpers shared by the specs: where the nshost binary is, temporary
-- files, running nshost as a subprocess, a wall clock, deep equality,
-- and the small helpers the specs assert with.
-- Loaded with dofile from each spec, so it works from any directory.

local M = {}

-- busted's assert: this file runs in the global environment, where
-- `assert` is Lua's own.
local luassert = require("luassert")

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

local function cwd()
  local ok, lfs = pcall(require, "lfs")
  if ok and lfs.currentdir then
    return lfs.currentdir()
  end
  return os.getenv("PWD") or "."
end

local function absolute(path)
  if path:sub(1, 1) == "/" then
    return path
  end
  return cwd() .. "/" .. path
end

-- spec/support.lua -> the repository root.
local here = debug.getinfo(1, "S").source:gsub("^@", "")
M.root = dirname(dirname(absolute(here)))
-- The interpreter running these specs: the lowest index of `arg`.
local function interpreter()
  local a = rawget(_G, "arg")
  if type(a) ~= "table" then
    return nil
  end
  local i = -1
  while a[i - 1] ~= nil do
    i = i - 1
  end
  return a[i]
end

-- The binary under test: $NSHOST, else the nshost running the specs,
-- else build/nshost in the repository.
local function find_nshost()
  local env = os.getenv("NSHOST")
  if env and env ~= "" then
    return env:find("/", 1, true) and absolute(env) or env
  end
  local self = interpreter()
  if type(self) == "string" and self:match("nshost[^/]*$") then
    return self:find("/", 1, true) and absolute(self) or self
  end
  return M.root .. "/build/nshost"
end

M.nshost = find_nshost()

function M.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

function M.read(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local s = f:read("*a")
  f:close()
  return s
end

function M.write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  return path
end

function M.exists(path)
  local f = io.open(path, "rb")
  if f then
    f:close()
  end
  return f ~= nil
end

-- A fresh temporary path; the file os.tmpname creates is removed.
function M.tmpname()
  local p = os.tmpname()
  os.remove(p)
  return p
end

-- A fresh temporary directory.
function M.tmpdir()
  local p = M.tmpname()
  assert(os.execute("mkdir -p " .. M.quote(p)))
  return p
end

function M.rmrf(path)
  os.execute("rm -rf " .. M.quote(path))
end

-- Writes text to a new temporary file and returns its path.
function M.script(text)
  return M.write(M.tmpname() .. ".lua", text)
end

-- Wall clock in seconds, with sub-millisecond resolution.
function M.now()
  local p = assert(io.popen("date +%s.%N"))
  local s = p:read("*l")
  p:close()
  return tonumber(s)
end

-- Runs nshost with the given argument list (a string, already quoted
-- where needed). opts: stdin (text fed to nshost), env (table of extra
-- variables), unset (list of variables to remove; LUA_INIT is always
-- removed unless env sets it), timeout (seconds, default 30), dir (cwd),
-- exe (run this program instead of nshost).
-- Returns { status = n, out = stdout, err = stderr, secs = wall time }.
function M.run(args, opts)
  opts = opts or {}
  local out, err, status = M.tmpname(), M.tmpname(), M.tmpname()
  local parts = {}

  if opts.dir then
    parts[#parts + 1] = "cd " .. M.quote(opts.dir) .. " &&"
  end
  parts[#parts + 1] = "env -u LUA_INIT"
  for _, name in ipairs(opts.unset or {}) do
    parts[#parts + 1] = "-u " .. name
  end
  for name, value in pairs(opts.env or {}) do
    parts[#parts + 1] = name .. "=" .. M.quote(value)
  end
  parts[#parts + 1] = "timeout -k 5 " .. (opts.timeout or 30)
  parts[#parts + 1] = M.quote(opts.exe or M.nshost)
  parts[#parts + 1] = args or ""

  local input = "/dev/null"
  if opts.stdin then
    input = M.write(M.tmpname(), opts.stdin)
  end
  local cmd = "(" .. table.concat(parts, " ") .. ") <" .. M.quote(input)
    .. " >" .. M.quote(out) .. " 2>" .. M.quote(err)
    .. "; echo $? >" .. M.quote(status)

  local t0 = M.now()
  os.execute(cmd)
  local r = {
    secs = M.now() - t0,
    status = tonumber(M.read(status)),
    out = M.read(out) or "",
    err = M.read(err) or "",
  }
  os.remove(out)
  os.remove(err)
  os.remove(status)
  if opts.stdin then
    os.remove(input)
  end
  return r
end

-- Describes a run for assertion messages.
function M.describe(r)
  return ("status %s\n--- stdout\n%s\n--- stderr\n%s"):format(
    tostring(r.status), r.out, r.err)
end

-- Readable form of a value, for failure messages.
function M.show(v, depth, seen)
  depth, seen = depth or 0, seen or {}
  local t = type(v)
  if t == "string" then
    if #v > 60 then
      return ("%q.. (%d bytes)"):format(v:sub(1, 40), #v)
    end
    return (("%q"):format(v):gsub("\\\n", "\\n"))
  elseif t == "number" then
    if v ~= v then
      return "nan"
    end
    return ("%.17g"):format(v)
  elseif t ~= "table" then
    return tostring(v)
  elseif seen[v] then
    return "<cycle>"
  elseif depth > 6 then
    return "{...}"
  end
  seen[v] = true
  local parts = {}
  for k, x in pairs(v) do
    parts[#parts + 1] = "[" .. M.show(k, depth + 1, seen) .. "]="
      .. M.show(x, depth + 1, seen)
    if #parts > 20 then
      parts[#parts + 1] = "..."
      break
    end
  end
  seen[v] = nil
  return "{" .. table.concat(parts, ", ") .. "}"
end

-- Same number: NaN equals NaN, -0 differs from 0, otherwise ==.
function M.same_number(a, b)
  if a ~= a then
    return b ~= b
  end
  if a == 0 and b == 0 then
    return 1 / a == 1 / b
  end
  return a == b
end

-- Deep equality that also checks the sharing: two tables in `a` are
-- the same table exactly when their counterparts in `b` are. Keys must
-- be non-table values. Returns true, or false and the path that differs.
function M.deep_same(a, b, path, map, back)
  path, map, back = path or "value", map or {}, back or {}
  if type(a) ~= type(b) then
    return false, path .. ": " .. type(a) .. " vs " .. type(b)
  end
  if type(a) == "number" then
    if M.same_number(a, b) then
      return true
    end
    return false, path .. ": " .. M.show(a) .. " vs " .. M.show(b)
  end
  if type(a) ~= "table" then
    if a == b then
      return true
    end
    return false, path .. ": " .. M.show(a) .. " vs " .. M.show(b)
  end
  if map[a] ~= nil or back[b] ~= nil then
    if map[a] == b and back[b] == a then
      return true
    end
    return false, path .. ": sharing differs"
  end
  map[a], back[b] = b, a
  for k, v in pairs(a) do
    local ok, why = M.deep_same(v, rawget(b, k),
      path .. "[" .. M.show(k) .. "]", map, back)
    if not ok then
      return false, why
    end
  end
  for k in pairs(b) do
    if rawget(a, k) == nil then
      return false, path .. "[" .. M.show(k) .. "]: extra key"
    end
  end
  if getmetatable(a) ~= nil or getmetatable(b) ~= nil then
    return M.deep_same(getmetatable(a), getmetatable(b),
      path .. "<metatable>", map, back)
  end
  return true
end

-- Checks that the strings in `list` occur in `s` in this order, as plain
-- text. Returns true, or false and the first one missing.
function M.in_order(s, list)
  local at = 1
  for _, want in ipairs(list) do
    local i, j = s:find(want, at, true)
    if not i then
      return false, want
    end
    at = j + 1
  end
  return true
end

-- Park-Miller generator: the same sequence on every Lua, every run.
-- Returns rand, where rand(n) is the next number, from 0 to n - 1.
function M.generator(seed)
  local state = seed % 2147483647
  if state <= 0 then
    state = state + 2147483646
  end
  return function(n)
    state = state * 16807 % 2147483647
    return state % n
  end
end

-- All the values given, with their count in n (nils included).
function M.pack(...)
  return { n = select("#", ...), ... }
end

-- Sends the values to a worker and returns what comes back.
function M.echo(...)
  return runtime.spawn(function(...) return ... end, ...):await()
end

-- Asserts that s (made a string) holds piece, as plain text.
function M.assert_has(s, piece)
  luassert.truthy(tostring(s):find(piece, 1, true),
    ("no %q in:\n%s"):format(piece, tostring(s)))
end

-- Calls f and returns the error it raises (f must raise).
function M.error_of(f, ...)
  local ok, err = pcall(f, ...)
  luassert.is_false(ok, "expected an error")
  return err
end

-- The error that runtime.spawn raises for these arguments: it must
-- refuse them, with a message.
function M.refusal(...)
  local ok, err = pcall(runtime.spawn, ...)
  luassert.is_false(ok, "runtime.spawn accepted the value")
  luassert.are.equal("string", type(err))
  return err
end

return M
