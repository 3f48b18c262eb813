-- post.lua — wrk script: POST the body in $BENCH_BODY_FILE with
-- $BENCH_CONTENT_TYPE (and each "Name: value" line of $BENCH_HEADERS, if
-- set), and print one machine-readable summary line.
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
for name, value in (os.getenv("BENCH_HEADERS") or ""):gmatch("([^:\n]+):%s*([^\n]*)") do
   wrk.headers[name] = value
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH_RESULT {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d," ..
      "\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d,\"mean_us\":%.2f,\"max_us\":%d," ..
      "\"err_connect\":%d,\"err_read\":%d,\"err_write\":%d,\"err_status\":%d,\"err_timeout\":%d}\n",
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max,
      e.connect, e.read, e.write, e.status, e.timeout))
end
