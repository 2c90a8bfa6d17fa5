-- Shared by the scenario scripts: count responses per HTTP status in each thread, and print
-- one JSON line (prefixed "BENCH_JSON ") with throughput inputs and latency percentiles.

local ffi = require("ffi") -- wrk embeds LuaJIT
pcall(ffi.cdef, [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]])

local function now_us()
  local ts = ffi.new("bench_timespec")
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("index", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

statuses = {}
-- BENCH_MAX_RESPONSES (optional): the thread stops after that many answers (run.py uses one
-- thread), which bounds a scenario by requests instead of only by time.
local max_responses = tonumber(os.getenv("BENCH_MAX_RESPONSES") or "")
local received = 0
started_us = nil
stopped_us = nil -- wrk keeps sleeping for --duration after a thread stops: time it ourselves

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  received = received + 1
  if max_responses and received >= max_responses then
    stopped_us = now_us()
    wrk.thread:stop()
  end
end

-- request.lua calls this for every request: the first one starts the thread's clock
function bench_mark_start()
  if not started_us then
    started_us = now_us()
  end
end

local function json_object(map)
  local parts = {}
  for key, value in pairs(map) do
    table.insert(parts, string.format('"%s":%s', tostring(key), tostring(value)))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  local counts = {}
  local active_us = 0
  for _, thread in ipairs(threads) do
    local per_thread = thread:get("statuses") or {}
    for status, n in pairs(per_thread) do
      counts[status] = (counts[status] or 0) + n
    end
    local started, stopped = thread:get("started_us"), thread:get("stopped_us")
    if started and stopped and stopped - started > active_us then
      active_us = stopped - started
    end
  end
  local percentiles = {}
  for _, p in ipairs({ 50, 75, 90, 95, 99, 99.9 }) do
    percentiles[tostring(p)] = latency:percentile(p)
  end
  local e = summary.errors
  io.write("BENCH_JSON ", "{",
    string.format('"requests":%d,', summary.requests),
    string.format('"duration_us":%d,', summary.duration),
    string.format('"active_us":%d,', active_us), -- 0 unless stopped by BENCH_MAX_RESPONSES
    string.format('"bytes":%d,', summary.bytes),
    string.format('"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},',
      e.connect, e.read, e.write, e.status, e.timeout),
    string.format('"latency_us":{"min":%d,"max":%d,"mean":%.1f,"stdev":%.1f,"percentiles":%s},',
      latency.min, latency.max, latency.mean, latency.stdev, json_object(percentiles)),
    string.format('"statuses":%s', json_object(counts)),
    "}\n")
end
