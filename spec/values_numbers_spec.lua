-- Issue 3, point 6: every double crosses bit-exact (checked on the bits,
-- through the FFI), LuaJIT's 64-bit integer cdata cross with all 64
-- bits, and any other cdata is refused with its path and "cdata".
-- values_spec.lua already checks a list of special doubles by value.

local ffi = require("ffi")

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local support = dofile(here .. "support.lua")
local pack, assert_has = support.pack, support.assert_has
local refusal = support.refusal

local Bits = ffi.typeof("union { double d; uint32_t w[2]; }")

-- The double with these two 32-bit halves.
local function from_bits(hi, lo)
  local b = Bits()
  local n = ffi.abi("le") and 1 or 0
  b.w[n], b.w[1 - n] = hi, lo
  return b.d
end

-- "hhhhhhhh:llllllll" for a double, made the same way in a worker.
-- It takes the FFI from require, so that it can be sent to a worker.
local function bits_of(x)
  local f = require("ffi")
  local u = f.new("union { double d; uint32_t w[2]; }")
  local n = f.abi("le") and 1 or 0
  u.d = x
  return ("%08x:%08x"):format(tonumber(u.w[n]), tonumber(u.w[1 - n]))
end

describe("doubles", function()
  it("cross bit-exact: 3000 random bit patterns and the edges", function()
    local rand = support.generator(31337)
    local xs, want = {}, {}
    local edges = {
      { 0, 0 }, { 0x80000000, 0 }, { 0, 1 }, { 0x80000000, 1 },
      { 0x000fffff, 0xffffffff }, { 0x00100000, 0 },
      { 0x7fefffff, 0xffffffff }, { 0xffefffff, 0xffffffff },
      { 0x7ff00000, 0 }, { 0xfff00000, 0 }, { 0x3ff00000, 0 },
      { 0x3fefffff, 0xffffffff }, { 0x43300000, 0 }, { 0x43400000, 1 },
    }
    for _, e in ipairs(edges) do
      xs[#xs + 1] = from_bits(e[1], e[2])
    end
    while #xs < 3000 + #edges do
      local hi = rand(65536) * 65536 + rand(65536)
      local lo = rand(65536) * 65536 + rand(65536)
      local x = from_bits(hi, lo)
      if x == x then
        xs[#xs + 1] = x
      end
    end
    for i, x in ipairs(xs) do want[i] = bits_of(x) end
    local there, back = runtime.spawn(function(list)
      local out = {}
      for i, x in ipairs(list) do out[i] = bits_of(x) end
      return out, list
    end, xs):await()
    assert.are.equal(#xs, #there)
    assert.are.equal(#xs, #back)
    for i = 1, #xs do
      assert.are.equal(want[i], there[i], "in the worker, number " .. i)
      assert.are.equal(want[i], bits_of(back[i]), "back, number " .. i)
    end
  end)

  it("cross bit-exact as keys, upvalues and single arguments", function()
    local x = from_bits(0x000fffff, 0x12345678)
    local y = from_bits(0xc00921fb, 0x54442d18)
    local t = { [x] = "denormal key", [y] = "-pi key" }
    local r = pack(runtime.spawn(function(a, tab)
      local k1, k2
      for k in pairs(tab) do
        if k > 0 then k1 = k else k2 = k end
      end
      return bits_of(a), bits_of(x), bits_of(k1), bits_of(k2), tab[y]
    end, y, t):await())
    assert.are.same({ n = 5, bits_of(y), bits_of(x), bits_of(x),
      bits_of(y), "-pi key" }, r)
  end)

  it("keep NaN a NaN and -0 negative, as the worker computes", function()
    local r = pack(runtime.spawn(function(a, b)
      return a ~= a, 1 / b, bits_of(b)
    end, 0 / 0, -0.0):await())
    assert.are.same({ n = 3, true, -math.huge, "80000000:00000000" }, r)
  end)
end)

describe("64-bit integers", function()
  local cases = {
    { 1LL, "1LL", "int64_t" },
    { -1LL, "-1LL", "int64_t" },
    { 0LL, "0LL", "int64_t" },
    { 0x7fffffffffffffffLL, "9223372036854775807LL", "int64_t" },
    { -0x7fffffffffffffffLL - 1, "-9223372036854775808LL", "int64_t" },
    { 9007199254740993LL, "9007199254740993LL", "int64_t" },
    { 1ULL, "1ULL", "uint64_t" },
    { 0xffffffffffffffffULL, "18446744073709551615ULL", "uint64_t" },
    { 0x8000000000000001ULL, "9223372036854775809ULL", "uint64_t" },
  }

  it("cross with all 64 bits and their type, and come back", function()
    for _, c in ipairs(cases) do
      local v, s, ctype = c[1], c[2], c[3]
      local r = pack(runtime.spawn(function(x)
        return x, type(x), tostring(x), require("ffi").istype(ctype, x),
          x == v
      end, v):await())
      assert.are.equal(5, r.n, s)
      assert.are.equal(v, r[1], s)
      assert.is_true(r[1] == v, s)
      assert.are.equal(s, tostring(r[1]))
      assert.is_true(ffi.istype(ctype, r[1]), s)
      assert.are.same({ "cdata", s, true, true },
        { r[2], r[3], r[4], r[5] }, s)
    end
  end)

  it("compare equal to the same literal", function()
    local a, b, c, d = runtime.spawn(function(...) return ... end,
      1LL, -1LL, 0x7fffffffffffffffLL, 0xffffffffffffffffULL):await()
    assert.is_true(a == 1LL)
    assert.is_true(b == -1LL)
    assert.is_true(c == 0x7fffffffffffffffLL)
    assert.is_true(d == 0xffffffffffffffffULL)
    assert.are.equal("1LL -1LL 9223372036854775807LL "
      .. "18446744073709551615ULL", table.concat({ tostring(a),
        tostring(b), tostring(c), tostring(d) }, " "))
  end)

  it("are computed on exactly in the worker and results", function()
    local r = pack(runtime.spawn(function(a, u)
      return tostring(a - 1), tostring(u - 1), a + 0LL,
        0x7ffffffffffffffeLL + 1, u / 3ULL
    end, 0x7fffffffffffffffLL, 0xffffffffffffffffULL):await())
    assert.are.equal(5, r.n)
    assert.are.equal("9223372036854775806LL", r[1])
    assert.are.equal("18446744073709551614ULL", r[2])
    assert.are.equal("9223372036854775807LL", tostring(r[3]))
    assert.are.equal("9223372036854775807LL", tostring(r[4]))
    assert.are.equal("6148914691236517205ULL", tostring(r[5]))
  end)

  it("cross inside tables and as upvalues", function()
    local big = 0x7fffffffffffffffLL
    local t = { id = -1LL, list = { 1ULL, 2ULL } }
    local r = pack(runtime.spawn(function(x)
      return tostring(big), tostring(x.id), tostring(x.list[2]),
        x.list[1] + x.list[2] == 3ULL
    end, t):await())
    assert.are.same({ n = 4, "9223372036854775807LL", "-1LL", "2ULL",
      true }, r)
  end)

  it("used as key and value in one message stay one object", function()
    -- A cdata key is looked up by identity, like a table.
    local k = 42LL
    local t = { [k] = "found", key = k }
    local r = pack(runtime.spawn(function(x)
      local ck
      for key in pairs(x) do
        if type(key) == "cdata" then ck = key end
      end
      return x[x.key], rawequal(ck, x.key)
    end, t):await())
    assert.are.same({ n = 2, "found", true }, r)
    local a, b = runtime.spawn(function(p, q) return p, q end, k, k)
      :await()
    assert.is_true(rawequal(a, b), "one cdata sent twice came back as two")
  end)
end)

describe("other cdata", function()
  it("is refused with the path and the word cdata", function()
    local err = refusal(function(x) return x end, ffi.new("int[2]"))
    assert_has(err, "argument #1: cannot send a cdata")
    err = refusal(function(a, b) return b end, 1,
      { buf = { ffi.new("int[2]") } })
    assert_has(err, "argument #2 > key 'buf' > key 1: cannot send a cdata")
    local p = ffi.cast("void *", 0)
    err = refusal(function() return p end)
    assert_has(err, "the function > upvalue 'p': cannot send a cdata")
  end)

  it("of other scalar types, structs and ctypes is refused too",
     function()
    local list = {
      ffi.new("int32_t", 3), ffi.new("double", 1.5), ffi.new("bool", 1),
      ffi.new("struct { int a; }"), ffi.typeof("int"),
      ffi.new("int64_t[1]"),
    }
    for i, v in ipairs(list) do
      local err = refusal(function(x) return x end, v)
      assert_has(err, "argument #1: cannot send a cdata")
      assert.truthy(err:find("cdata", 1, true), "value " .. i)
    end
  end)

  it("as a key is refused, naming the key's type", function()
    local err = refusal(function(x) return x end,
      { [ffi.new("int[1]")] = true })
    assert_has(err, "argument #1 > a key of type cdata: cannot send a "
      .. "cdata")
  end)

  it("cannot come back from a worker", function()
    local h = runtime.spawn(function()
      return 1, require("ffi").new("char[8]")
    end)
    local ok, err = pcall(h.await, h)
    assert.is_false(ok)
    assert_has(err, "result #2: cannot send a cdata")
    assert.are.equal(1, runtime.spawn(function() return 1 end):await())
  end)
end)
