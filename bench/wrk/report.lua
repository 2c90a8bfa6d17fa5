-- Shared by the scenario scripts: count responses per HTTP status in each thread, and print
-- one JSON line (prefixed "BENCH_JSON ") with throughput inputs and latency percentiles.

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

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  received = received + 1
  if max_responses and received >= max_responses then
    wrk.thread:stop()
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
  for _, thread in ipairs(threads) do
    local per_thread = thread:get("statuses") or {}
    for status, n in pairs(per_thread) do
      counts[status] = (counts[status] or 0) + n
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
    string.format('"bytes":%d,', summary.bytes),
    string.format('"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},',
      e.connect, e.read, e.write, e.status, e.timeout),
    string.format('"latency_us":{"min":%d,"max":%d,"mean":%.1f,"stdev":%.1f,"percentiles":%s},',
      latency.min, latency.max, latency.mean, latency.stdev, json_object(percentiles)),
    string.format('"statuses":%s', json_object(counts)),
    "}\n")
end
