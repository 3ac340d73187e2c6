-- wrk_plan.lua: wrk follows a loadtest Plan (see loadtest/plan.py).
--
-- Environment:
--   SECKILL_WRK_TEMPLATES  file, one template a line:
--                          METHOD<TAB>PATH<TAB>AUTH(0|1)<TAB>BODY<TAB>HEADER
--                          (HEADER: empty, or the name of a per-request header)
--   SECKILL_WRK_TOKENS     file, one bearer token a line
--   SECKILL_WRK_VALUES     empty, or a file of one value a line: line i is the HEADER value
--                          of request i (e.g. a Purchase-Token bound to token i's shopper)
--   SECKILL_WRK_THREADS    the -t given to wrk
--   SECKILL_WRK_LIMIT      0, or stop after this many requests (one token each)
-- Request i goes to thread i % threads, uses template i % #templates, token i and value i.
-- With a limit, a thread that has sent its share sends GET /healthz as filler (answered 200,
-- which plan requests never are) until its last real answer is in; then it prints
-- SECKILL_WRK_THREAD_DONE and stops. (wrk itself waits out -d: once every thread is done,
-- the driver sends SIGINT, which ends the run early with the usual summary.)
-- wrk calls request() once on thread 1's state before the run, only to check what it
-- returns: that call gets a well-formed request but consumes no index.
-- done() prints one line: SECKILL_WRK_RESULT {json}.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

local function split_tabs(line)
  local fields = {}
  for field in (line .. "\t"):gmatch("([^\t]*)\t") do
    table.insert(fields, field)
  end
  return fields
end

function init(args)
  id = wrk.thread:get("id")
  nthreads = tonumber(os.getenv("SECKILL_WRK_THREADS"))
  limit = tonumber(os.getenv("SECKILL_WRK_LIMIT") or "0")
  templates = {}
  for line in io.lines(os.getenv("SECKILL_WRK_TEMPLATES")) do
    if line ~= "" then
      local f = split_tabs(line)
      local headers = {}
      if f[4] ~= "" then headers["Content-Type"] = "application/json" end
      local header = f[5] or ""
      table.insert(templates, {method = f[1], path = f[2], auth = f[3] == "1",
                               header = header ~= "" and header or nil,
                               body = f[4] ~= "" and f[4] or nil, headers = headers,
                               fixed = wrk.format(f[1], f[2], headers,
                                                  f[4] ~= "" and f[4] or nil)})
    end
  end
  tokens = {}
  for line in io.lines(os.getenv("SECKILL_WRK_TOKENS")) do
    if line ~= "" then table.insert(tokens, line) end
  end
  values = {}
  local values_file = os.getenv("SECKILL_WRK_VALUES") or ""
  if values_file ~= "" then
    for line in io.lines(values_file) do
      if line ~= "" then table.insert(values, line) end
    end
  end
  i = id
  quota = 0
  if limit > id then quota = math.floor((limit - 1 - id) / nthreads) + 1 end
  answered = 0
  counts = {}
  wrapped = 0
  fillers = 0
  filler = wrk.format("GET", "/healthz")
  probed = id ~= 0
  finished = false
end

function request()
  if not probed then
    probed = true
    return filler
  end
  if limit > 0 and i >= limit then
    return filler
  end
  local t = templates[(i % #templates) + 1]
  local req
  if t.auth or t.header then
    local headers = {}
    if (t.auth and i >= #tokens) or (t.header and i >= #values) then wrapped = wrapped + 1 end
    if t.auth then headers["Authorization"] = "Bearer " .. tokens[(i % #tokens) + 1] end
    if t.header then headers[t.header] = values[(i % #values) + 1] end
    if t.body then headers["Content-Type"] = "application/json" end
    req = wrk.format(t.method, t.path, headers, t.body)
  else
    req = t.fixed
  end
  i = i + nthreads
  return req
end

function response(status, headers, body)
  if limit > 0 and status == 200 then
    fillers = fillers + 1
  else
    counts[status] = (counts[status] or 0) + 1
    answered = answered + 1
  end
  if limit > 0 and answered >= quota and not finished then
    finished = true
    io.write("SECKILL_WRK_THREAD_DONE\n")
    io.flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local total, reused, filled = {}, 0, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("counts")) do
      total[status] = (total[status] or 0) + n
    end
    reused = reused + thread:get("wrapped")
    filled = filled + thread:get("fillers")
  end
  local parts = {}
  for status, n in pairs(total) do
    table.insert(parts, string.format('"%d":%d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'SECKILL_WRK_RESULT {"duration_us":%d,"requests":%d,"statuses":{%s},"wrapped":%d,' ..
    '"fillers":%d,"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
    '"p50_us":%d,"p99_us":%d}\n',
    summary.duration, summary.requests, table.concat(parts, ","), reused, filled,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
