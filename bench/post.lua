-- wrk script: POST one JSON event over and over, bounded in time and count, then print a
-- JSON summary line. Arguments (after `--`): body_file work_seconds max_requests [authorization]
--
-- It stops *sending* after work_seconds (or max_requests), and stops wrk once the last answer in
-- flight has arrived (wrk's own -d lies well beyond): every request completes, so the 2xx count
-- can be checked exactly against the queue depth (wrk cutting requests off at -d would leave
-- published-but-unanswered ones), and no cell idles after its last answer.

local ffi = require("ffi")
ffi.cdef [[
  struct bench_timespec { long tv_sec; long tv_nsec; };
  int clock_gettime(int clock_id, struct bench_timespec *tp);
  int getpid(void);
  int kill(int pid, int sig);
]]
local CLOCK_MONOTONIC = 1
local SIGINT = 2
local timespec = ffi.new("struct bench_timespec[1]")

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec[0].tv_sec) + tonumber(timespec[0].tv_nsec) * 1e-9
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(args[1], "rb"))
  wrk.method = "POST"
  wrk.body = file:read("*a")
  file:close()
  wrk.headers["Content-Type"] = "application/json"
  if args[4] ~= nil and args[4] ~= "" then
    wrk.headers["Authorization"] = args[4]
  end
  work_seconds = tonumber(args[2])
  max_requests = tonumber(args[3])
  started = now()
  stop_at = started + work_seconds
  last_response = started
  sent = 0
  answered = 0
  stopping = false
  s1xx, s2xx, s3xx, s4xx, s5xx = 0, 0, 0, 0, 0
  s503 = 0
end

function delay()
  if sent >= max_requests or now() >= stop_at then
    return 3600000 -- park the connection until wrk's -d ends the run
  end
  sent = sent + 1
  return 0
end

function response(status, headers, body)
  last_response = now()
  answered = answered + 1
  if status < 200 then
    s1xx = s1xx + 1
  elseif status < 300 then
    s2xx = s2xx + 1
  elseif status < 400 then
    s3xx = s3xx + 1
  elseif status < 500 then
    s4xx = s4xx + 1
  else
    s5xx = s5xx + 1
    if status == 503 then
      s503 = s503 + 1
    end
  end
  -- wrk asks delay() for this connection's next request after this call: past stop_at it
  -- parks, so once every request sent is answered, nothing is in flight any more. SIGINT is
  -- wrk's own early end (the process's main thread takes it): it stops and calls done().
  if not stopping and answered >= sent and (sent >= max_requests or last_response >= stop_at) then
    stopping = true
    ffi.C.kill(ffi.C.getpid(), SIGINT)
  end
end

function done(summary, latency, requests)
  local total = { s1xx = 0, s2xx = 0, s3xx = 0, s4xx = 0, s5xx = 0, s503 = 0 }
  local first, last = nil, nil
  for _, thread in ipairs(threads) do
    for name, _ in pairs(total) do
      total[name] = total[name] + thread:get(name)
    end
    local thread_started, thread_last = thread:get("started"), thread:get("last_response")
    if first == nil or thread_started < first then first = thread_started end
    if last == nil or thread_last > last then last = thread_last end
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"completed":%d,"elapsed_s":%.6f,"s1xx":%d,"s2xx":%d,"s3xx":%d,"s4xx":%d,'
    .. '"s5xx":%d,"s503":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,'
    .. '"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, last - first, total.s1xx, total.s2xx, total.s3xx, total.s4xx,
    total.s5xx, total.s503, errors.connect, errors.read, errors.write, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
