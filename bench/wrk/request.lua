-- One request shape for every scenario, configured by bench/run.py through the environment
-- (nothing secret on the command line):
--   BENCH_METHOD        GET | POST                               (default GET)
--   BENCH_PATH          path; "{id}" is replaced by the next id   (e.g. /products/{id})
--   BENCH_IDS           comma-separated ids, rotated per request  (optional)
--   BENCH_BODY          request body; "{id}" is replaced as well  (optional)
--   BENCH_CONTENT_TYPE  Content-Type of the body                  (optional)
--   BENCH_TOKEN         bearer token for Authorization            (optional)
-- Status counts and the JSON summary come from report.lua.

dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")

local method = os.getenv("BENCH_METHOD") or "GET"
local path = os.getenv("BENCH_PATH") or "/"
local body = os.getenv("BENCH_BODY")
local headers = {}
local ids = {}
local position = 0

function init(args)
  local token = os.getenv("BENCH_TOKEN")
  if token and token ~= "" then
    headers["Authorization"] = "Bearer " .. token
  end
  local content_type = os.getenv("BENCH_CONTENT_TYPE")
  if content_type and content_type ~= "" then
    headers["Content-Type"] = content_type
  end
  for id in string.gmatch(os.getenv("BENCH_IDS") or "", "[^,]+") do
    table.insert(ids, id)
  end
  -- threads start at different offsets so they do not walk the ids in lockstep
  position = (tonumber(index) or 0) * 7 -- `index` is set by setup() in report.lua
end

function request()
  bench_mark_start()
  local id = ""
  if #ids > 0 then
    position = position % #ids + 1
    id = ids[position]
  end
  local this_path = string.gsub(path, "{id}", id)
  local this_body = nil
  if body and body ~= "" then
    this_body = string.gsub(body, "{id}", id)
  end
  return wrk.format(method, this_path, headers, this_body)
end
