-- wrk script: POST a JSON webhook body; print one line `BENCH_JSON {...}` at the end.
--   WRK_BODY_FILE   file holding the body (default: bench/payload.json as run from the project root)
--   WRK_STATUS=0    do not install the response() callback (no 202/503 split: wrk then only counts
--                   non-2xx/3xx as errors.status); by default every status is counted per thread
--   WRK_DELAY_MS=N  each connection waits N ms between requests (pacing below saturation:
--                   rate ~ connections * 1000 / (N + latency ms))
local body_file = os.getenv("WRK_BODY_FILE") or "bench/payload.json"
local f = assert(io.open(body_file, "rb"), "cannot open " .. body_file)
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Event-Type"] = "order.created"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- per-thread counters: globals of each thread's Lua state, read back in done() with thread:get()
s202, s2xx, s429, s503, sother = 0, 0, 0, 0, 0

if os.getenv("WRK_STATUS") ~= "0" then
  function response(status, headers, body)
    if status == 202 then s202 = s202 + 1
    elseif status == 503 then s503 = s503 + 1
    elseif status == 429 then s429 = s429 + 1
    elseif status >= 200 and status < 300 then s2xx = s2xx + 1
    else sother = sother + 1 end
  end
end

local pause = tonumber(os.getenv("WRK_DELAY_MS") or "")
if pause and pause > 0 then
  function delay()
    return pause
  end
end

function done(summary, latency, requests)
  local c = {s202 = 0, s2xx = 0, s429 = 0, s503 = 0, sother = 0}
  for _, thread in ipairs(threads) do
    for name, _ in pairs(c) do
      c[name] = c[name] + (thread:get(name) or 0)
    end
  end
  local counted = (response ~= nil) and "true" or "false"
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"counted":%s,"s202":%d,"s2xx":%d,"s429":%d,' ..
    '"s503":%d,"sother":%d,"lat_mean_us":%.1f,"lat_max_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"p999_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout, counted, c.s202, c.s2xx,
    c.s429, c.s503, c.sother, latency.mean, latency.max, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
