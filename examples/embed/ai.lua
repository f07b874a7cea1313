-- ai.lua - what the entities of game_server.c think, run on the workers.
--
-- Each tick the server calls ai.think(ids, budget) for a batch of
-- entities.  For each one it searches a path to the entity's goal with
-- A*, expanding at most `budget` cells, and answers the first step of
-- the best path it found: one byte per entity, in the order of ids,
-- 0 to stay and 1..4 for north, east, south, west.
--
-- The world is read through the host's functions, which the server's
-- setup hook puts in every worker: game.map() and game.entity(id).
-- Every worker requires this module once and keeps what it builds.

local abs, char, unpack = math.abs, string.char, unpack
local entity = game.entity

-- The map never changes: read it once per worker.  Cells are numbered
-- y * W + x from 0.
local W, H, cells = game.map()
local wall = {}
for i = 0, W * H - 1 do
  wall[i] = cells:byte(i + 1) == 35   -- '#'
end

local DX = { 0, 1, 0, -1 }
local DY = { -1, 0, 1, 0 }

-- Scratch space that every search on this worker reuses, so that a
-- search allocates nothing: a cell is part of the current search only
-- when stamp[cell] == gen.
local stamp, cost, first = {}, {}, {}
local heap, prio, n = {}, {}, 0
local gen = 0

-- A binary min-heap of cells ordered by prio.
local function push(cell, p)
  n = n + 1
  local i = n
  while i > 1 do
    local up = (i - i % 2) / 2
    if prio[up] <= p then break end
    heap[i], prio[i] = heap[up], prio[up]
    i = up
  end
  heap[i], prio[i] = cell, p
end

local function pop()
  local top, cell, p = heap[1], heap[n], prio[n]
  n = n - 1
  local i = 1
  while true do
    local c = i * 2
    if c > n then break end
    if c < n and prio[c + 1] < prio[c] then c = c + 1 end
    if prio[c] >= p then break end
    heap[i], prio[i] = heap[c], prio[c]
    i = c
  end
  heap[i], prio[i] = cell, p
  return top
end

-- The first step from (x, y) towards (gx, gy).  When the budget runs
-- out first, it heads for the cell seen nearest to the goal.
local function step(x, y, gx, gy, budget)
  if x == gx and y == gy then return 0 end
  gen, n = gen + 1, 0
  local start = y * W + x
  stamp[start], cost[start], first[start] = gen, 0, 0
  push(start, abs(x - gx) + abs(y - gy))
  local best, nearest = 0, math.huge
  while n > 0 and budget > 0 do
    budget = budget - 1
    local c = pop()
    local cx = c % W
    local cy = (c - cx) / W
    local h = abs(cx - gx) + abs(cy - gy)
    if h < nearest then best, nearest = first[c], h end
    if h == 0 then break end
    local g = cost[c] + 1
    for d = 1, 4 do
      local nx, ny = cx + DX[d], cy + DY[d]
      local nc = ny * W + nx
      if nx >= 0 and nx < W and ny >= 0 and ny < H and not wall[nc]
         and (stamp[nc] ~= gen or g < cost[nc]) then
        stamp[nc], cost[nc] = gen, g
        first[nc] = c == start and d or first[c]
        push(nc, g + abs(nx - gx) + abs(ny - gy))
      end
    end
  end
  return best
end

local ai = {}

function ai.think(ids, budget)
  local moves = {}
  for k = 1, #ids do
    local x, y, gx, gy = entity(ids[k])
    moves[k] = step(x, y, gx, gy, budget)
  end
  return char(unpack(moves))
end

return ai
