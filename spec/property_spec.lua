-- Property test: random nested values, made from a fixed seed, go to a
-- worker and back, and must come back equal: numbers bit-exact (NaN
-- equal to NaN, -0 apart from 0), strings byte-exact, tables with the
-- same keys and values, and, for the graphs, the same sharing.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local support = dofile(here .. "support.lua")
local pack, echo = support.pack, support.echo
local generator = support.generator

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

  return value, graph, { number = number, bytes = bytes, key = key }
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

-- Graphs with closures (issue 3, point 9). Every object of a graph has
-- an id: a table holds it under ID, a closure answers f("id"). A closure
-- answers f("get") with the values of its locals and f("set", x) by
-- setting its first local. Closures made together by `shared` or
-- `mutual` share that local, so after a round trip a "set" through one
-- copy must show in the "get" of the others. Closures are compared by
-- calling them; tables by their keys, values and metatables; and the
-- sharing of every table and closure must be the same.

local ID = "@id"
local SOURCE = debug.getinfo(1, "S").source
local made = setmetatable({}, { __mode = "k" })

local function capture(id, a, b)
  local f = function(op, x)
    if op == "id" then return id end
    if op == "set" then a = x; return end
    return a, b
  end
  made[f] = true
  return f
end

-- n closures over one local v.
local function shared(ids, v, extra)
  local fs = {}
  for i, id in ipairs(ids) do
    fs[i] = function(op, x)
      if op == "id" then return id end
      if op == "set" then v = x; return end
      return v, extra, i
    end
    made[fs[i]] = true
  end
  return fs
end

-- A local function that refers to itself.
local function selfref(id, a)
  local f
  f = function(op, x)
    if op == "id" then return id end
    if op == "set" then a = x; return end
    return a, f
  end
  made[f] = true
  return f
end

-- Two local functions that refer to each other and share a.
local function mutual(id1, id2, a)
  local f, g
  f = function(op, x)
    if op == "id" then return id1 end
    if op == "set" then a = x; return end
    return a, g
  end
  g = function(op, x)
    if op == "id" then return id2 end
    if op == "set" then a = x; return end
    return f, a
  end
  made[f], made[g] = true, true
  return f, g
end

local STD = { string.format, math.floor, print, tonumber, table.concat,
  io.stdout, coroutine.wrap }

-- The id of a table or closure of a graph, nil for anything else.
local function object_id(k)
  local t = type(k)
  if t == "table" then
    return rawget(k, ID)
  elseif t == "function" and debug.getinfo(k, "S").source == SOURCE then
    return k("id")
  end
  return nil
end

local function closure_maker(seed)
  local value, _, parts = maker(seed)
  local rand = generator(seed + 1)
  local ffi = require("ffi")
  local last_id = 0

  local function new_id()
    last_id = last_id + 1
    return last_id
  end

  local function scalar()
    local kind = rand(9)
    if kind == 0 then
      return nil
    elseif kind == 1 then
      return rand(2) == 0
    elseif kind <= 3 then
      return parts.number()
    elseif kind <= 5 then
      return parts.bytes()
    elseif kind == 6 then
      return STD[rand(#STD) + 1]
    elseif kind == 7 then
      return ffi.new(rand(2) == 0 and "int64_t" or "uint64_t",
        rand(2 ^ 30) * 2 ^ 20 + rand(2 ^ 20))
    end
    return value(2)
  end

  -- Returns the objects of one graph and the groups of closures that
  -- share a local.
  return function()
    local pool, groups = {}, {}
    local want = rand(8) + 2
    while #pool < want do
      local kind = rand(8)
      if kind <= 2 then
        pool[#pool + 1] = { [ID] = new_id() }
      elseif kind == 3 then
        pool[#pool + 1] = capture(new_id(), scalar(), scalar())
      elseif kind == 4 then
        local ids = { new_id(), new_id() }
        if rand(2) == 0 then ids[3] = new_id() end
        local fs = shared(ids, scalar(), scalar())
        for _, f in ipairs(fs) do pool[#pool + 1] = f end
        fs.slot = { 1, 1, 1 }
        groups[#groups + 1] = fs
      elseif kind == 5 then
        pool[#pool + 1] = selfref(new_id(), scalar())
      elseif kind == 6 then
        local f, g = mutual(new_id(), new_id(), scalar())
        pool[#pool + 1], pool[#pool + 1] = f, g
        groups[#groups + 1] = { f, g, slot = { 1, 2 } }
      else
        pool[#pool + 1] = capture(new_id(), STD[rand(#STD) + 1],
          STD[rand(#STD) + 1])
      end
    end
    local function pick()
      return pool[rand(#pool) + 1]
    end
    for _, o in ipairs(pool) do
      if type(o) == "table" then
        for _ = 1, rand(6) do
          local k = rand(3) == 0 and pick() or parts.key()
          local v = rand(2) == 0 and pick() or scalar()
          if v ~= nil and k ~= ID then
            o[k] = v
          end
        end
        if rand(5) == 0 then
          local mt = pick()
          if type(mt) == "table" then
            if rand(3) == 0 then
              rawset(mt, "__metatable", "locked")
            end
            debug.setmetatable(o, mt)
          end
        end
      elseif rand(2) == 0 then
        o("set", rand(3) == 0 and scalar() or pick())
      end
    end
    return pool, groups
  end
end

-- Compares a (sent) with b (come back); st holds the pairing of
-- objects. Returns true, or false and where they differ.
local function same(a, b, st, path)
  local ta = type(a)
  if ta ~= type(b) then
    return false, path .. ": " .. ta .. " vs " .. type(b)
  end
  if ta == "number" then
    if support.same_number(a, b) then
      return true
    end
    return false, path .. ": " .. support.show(a) .. " vs "
      .. support.show(b)
  elseif ta == "cdata" then
    if tostring(a) == tostring(b) and a == b then
      return true
    end
    return false, path .. ": " .. tostring(a) .. " vs " .. tostring(b)
  elseif ta ~= "table" and (ta ~= "function" or not made[a]) then
    if a == b then
      return true
    end
    return false, path .. ": " .. support.show(a) .. " vs "
      .. support.show(b)
  end
  if st.map[a] ~= nil or st.back[b] ~= nil then
    if st.map[a] == b and st.back[b] == a then
      return true
    end
    return false, path .. ": sharing differs"
  end
  st.map[a], st.back[b] = b, a
  if ta == "function" then
    if a("id") ~= b("id") then
      return false, path .. ": closure " .. a("id") .. " vs "
        .. tostring(b("id"))
    end
    local ia, ib = debug.getinfo(a, "S"), debug.getinfo(b, "S")
    if ia.source ~= ib.source or ia.linedefined ~= ib.linedefined then
      return false, path .. ": debug info differs"
    end
    local ra, rb = pack(a("get")), pack(b("get"))
    if ra.n ~= rb.n then
      return false, path .. ": get gives " .. rb.n .. " values"
    end
    for i = 1, ra.n do
      local ok, why = same(ra[i], rb[i], st,
        path .. "<closure " .. a("id") .. ">[" .. i .. "]")
      if not ok then
        return false, why
      end
    end
    return true
  end
  local bkeys, nb = {}, 0
  for k in next, b do
    nb = nb + 1
    local id = object_id(k)
    if id ~= nil then
      bkeys[id] = k
    end
  end
  local na = 0
  for k, v in next, a do
    na = na + 1
    local kb, id = k, object_id(k)
    local where = path .. "[" .. (id and "#" .. id or support.show(k)) .. "]"
    if id ~= nil then
      kb = bkeys[id]
      if kb == nil then
        return false, where .. ": key missing"
      end
      local ok, why = same(k, kb, st, where .. "<key>")
      if not ok then
        return false, why
      end
    end
    local ok, why = same(v, rawget(b, kb), st, where)
    if not ok then
      return false, why
    end
  end
  if na ~= nb then
    return false, path .. ": " .. na .. " keys vs " .. nb
  end
  return same(debug.getmetatable(a), debug.getmetatable(b), st,
    path .. "<metatable>")
end

-- A description of the values that does not depend on addresses: the
-- same in a worker as in the caller when the copy is right.
local function signature(...)
  local seen, n, out = {}, 0, {}
  local function key_repr(k)
    local t = type(k)
    if t == "table" then
      return "T" .. tostring(rawget(k, ID))
    elseif t == "function" then
      return "F" .. tostring(k("id"))
    elseif t == "number" then
      return "n" .. ("%.17g"):format(k)
    end
    return t:sub(1, 1) .. tostring(k)
  end
  local function walk(v)
    local t = type(v)
    if t == "number" then
      out[#out + 1] = v ~= v and "nan" or ("%.17g"):format(v)
      return
    elseif t == "string" then
      out[#out + 1] = ("%q"):format(v)
      return
    elseif t ~= "table" and t ~= "function" then
      out[#out + 1] = t == "userdata" and io.type(v) or tostring(v)
      return
    end
    if seen[v] then
      out[#out + 1] = "@" .. seen[v]
      return
    end
    n = n + 1
    seen[v] = n
    if t == "function" then
      if debug.getinfo(v, "S").source ~= SOURCE then
        out[#out + 1] = "std"
        return
      end
      out[#out + 1] = "F" .. v("id") .. "("
      local r = { n = select("#", v("get")), v("get") }
      for i = 1, r.n do walk(r[i]) end
      out[#out + 1] = ")"
      return
    end
    local keys, reprs = {}, {}
    for k in next, v do
      keys[#keys + 1] = k
      reprs[k] = key_repr(k)
    end
    table.sort(keys, function(x, y) return reprs[x] < reprs[y] end)
    out[#out + 1] = "{"
    for _, k in ipairs(keys) do
      out[#out + 1] = reprs[k] .. "="
      if type(k) == "table" or type(k) == "function" then
        walk(k)
      end
      walk(rawget(v, k))
    end
    out[#out + 1] = "}"
    walk(debug.getmetatable(v))
  end
  for i = 1, select("#", ...) do walk((select(i, ...))) end
  return table.concat(out, " ")
end

describe("round trip of graphs with closures", function()
  it("returns 2000 random graphs equal, sharing and all", function()
    local graph = closure_maker(271828)
    for i = 1, 2000 do
      local pool, groups = graph()
      local back = pack(echo(unpack(pool)))
      assert.are.equal(#pool, back.n, "graph " .. i)
      local st = { map = {}, back = {} }
      for j = 1, #pool do
        local ok, why = same(pool[j], back[j], st, "arg " .. j)
        assert.is_true(ok, ("graph %d: %s"):format(i, tostring(why)))
      end
      -- A local shared by closures is still one local in the copies,
      -- and not the caller's.
      for _, grp in ipairs(groups) do
        local mark = {}
        st.map[grp[1]]("set", mark)
        for j, f in ipairs(grp) do
          local copy = pack(st.map[f]("get"))
          local orig = pack(f("get"))
          assert.is_true(rawequal(copy[grp.slot[j]], mark),
            ("graph %d: closures %d and %d no longer share a local")
              :format(i, grp[1]("id"), f("id")))
          assert.is_false(rawequal(orig[grp.slot[j]], mark),
            "the caller's closure changed")
        end
      end
    end
  end)

  it("describes 300 random graphs the same in the worker", function()
    local graph = closure_maker(16180)
    for i = 1, 300 do
      local pool = graph()
      local there = runtime.spawn(signature, unpack(pool)):await()
      assert.are.equal(signature(unpack(pool)), there, "graph " .. i)
    end
  end)
end)
