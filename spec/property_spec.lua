-- Property test: random nested values, made from a fixed seed, go to a
-- worker and back, and must come back equal: numbers bit-exact (NaN
-- equal to NaN, -0 apart from 0), strings byte-exact, tables with the
-- same keys and values, and, for the graphs, the same sharing.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local support = dofile(here .. "support.lua")

-- Park-Miller generator: the same sequence on every Lua, every run.
local function generator(seed)
  local state = seed % 2147483647
  if state <= 0 then
    state = state + 2147483646
  end
  local function next_int(n)
    state = state * 16807 % 2147483647
    return state % n
  end
  return next_int
end

local SPECIAL = {
  0, -0.0, 0 / 0, math.huge, -math.huge, 1, -1, 0.5, 0.1, 1 / 3,
  2 ^ 53, -2 ^ 53, 2 ^ 53 + 2, 2 ^ 63, 2 ^ 1023, 5e-324, -5e-324,
  2.2250738585072014e-308, 1.7976931348623157e308, math.pi, 255, 256,
  2 ^ 31 - 1, -2 ^ 31, 2 ^ 32,
}

local function maker(seed)
  local rand = generator(seed)

  local function number()
    local kind = rand(4)
    if kind == 0 then
      return SPECIAL[rand(#SPECIAL) + 1]
    elseif kind == 1 then
      return rand(2000001) - 1000000
    elseif kind == 2 then
      local m = (rand(2 ^ 30) + rand(2 ^ 23) / 2 ^ 23) / 2 ^ 30
      local x = math.ldexp(m, rand(2098) - 1074)
      return rand(2) == 0 and x or -x
    end
    return (rand(2 ^ 30) - 2 ^ 29) / (rand(1000) + 1)
  end

  local function bytes()
    local n = rand(8) == 0 and rand(3000) or rand(24)
    local t = {}
    for i = 1, n do t[i] = string.char(rand(256)) end
    return table.concat(t)
  end

  local function key()
    local kind = rand(6)
    if kind == 0 then
      return rand(2) == 0
    elseif kind == 1 then
      return rand(100) - 50
    elseif kind == 2 then
      local x = number()
      if x ~= x then
        return 1.25
      end
      return x
    end
    return bytes()
  end

  local value

  local function tbl(depth)
    local t = {}
    for i = 1, rand(6) do
      t[i] = value(depth + 1)
    end
    for _ = 1, rand(6) do
      local k = key()
      local v = value(depth + 1)
      if v ~= nil then
        t[k] = v
      end
    end
    return t
  end

  function value(depth)
    local kind = rand(depth >= 4 and 5 or 7)
    if kind == 0 then
      return nil
    elseif kind == 1 then
      return rand(2) == 0
    elseif kind == 2 then
      return number()
    elseif kind == 3 or kind == 4 then
      return bytes()
    end
    return tbl(depth)
  end

  -- A graph: tables drawn from a pool, so that they are shared and may
  -- contain one another, themselves included.
  local function graph()
    local pool = {}
    for i = 1, rand(8) + 1 do pool[i] = { id = i } end
    for _, t in ipairs(pool) do
      for _ = 1, rand(4) do
        local k = key()
        if rand(2) == 0 then
          t[k] = pool[rand(#pool) + 1]
        else
          t[k] = value(3)
        end
      end
    end
    return pool[1]
  end

  return value, graph
end

local function echo(...)
  return runtime.spawn(function(...) return ... end, ...):await()
end

describe("round trip through a worker", function()
  it("returns 2000 random nested values equal", function()
    local value = maker(20240611)
    local values, jobs = {}, {}
    for i = 1, 2000 do
      values[i] = value(0)
      jobs[i] = runtime.spawn(function(...) return ... end, values[i])
    end
    for i = 1, 2000 do
      local back = { n = select("#", jobs[i]:await()), jobs[i]:await() }
      assert.are.equal(1, back.n, "value " .. i)
      local ok, why = support.deep_same(values[i], back[1])
      assert.is_true(ok, ("value %d: %s\n%s"):format(i, tostring(why),
        support.show(values[i])))
    end
  end)

  it("returns random values equal when sent many at a time", function()
    local value = maker(77)
    for round = 1, 50 do
      local n = 1 + (round * 7) % 20
      local args = {}
      for i = 1, n do args[i] = value(1) end
      local back = { n = select("#", echo(unpack(args, 1, n))),
        echo(unpack(args, 1, n)) }
      assert.are.equal(n, back.n, "round " .. round)
      for i = 1, n do
        local ok, why = support.deep_same(args[i], back[i])
        assert.is_true(ok, ("round %d arg %d: %s"):format(round, i,
          tostring(why)))
      end
    end
  end)

  it("returns 500 random graphs with the same sharing", function()
    local _, graph = maker(4242)
    for i = 1, 500 do
      local g = graph()
      local ok, why = support.deep_same(g, echo(g))
      assert.is_true(ok, ("graph %d: %s"):format(i, tostring(why)))
    end
  end)

  it("keeps sharing between arguments of one message", function()
    local _, graph = maker(99)
    for i = 1, 100 do
      local g = graph()
      local a, b, c = echo(g, g, { g })
      assert.are.equal(a, b, "graph " .. i)
      assert.are.equal(a, c[1], "graph " .. i)
      local ok, why = support.deep_same(g, a)
      assert.is_true(ok, ("graph %d: %s"):format(i, tostring(why)))
    end
  end)

  it("runs random values inside the worker, not only echoes them",
     function()
    local value = maker(5)
    for i = 1, 200 do
      local v = value(0)
      -- The worker describes the value; the main script must agree.
      local function describe_value(x, seen)
        seen = seen or {}
        local t = type(x)
        if t == "number" then
          return x ~= x and "nan" or ("%.17g"):format(x)
        elseif t == "string" then
          return ("%q"):format(x)
        elseif t ~= "table" then
          return tostring(x)
        end
        if seen[x] then
          return "<seen>"
        end
        seen[x] = true
        local keys = {}
        for k in pairs(x) do
          keys[#keys + 1] = describe_value(k, seen)
        end
        table.sort(keys)
        local n = 0
        for _ in pairs(x) do n = n + 1 end
        return "{" .. n .. ":" .. table.concat(keys, ",") .. "}"
      end
      local there = runtime.spawn(describe_value, v):await()
      assert.are.equal(describe_value(v), there, "value " .. i)
    end
  end)
end)
