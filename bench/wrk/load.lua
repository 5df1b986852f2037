-- The request every wrk connection of `swarm-bench http` repeats, from the environment:
-- BENCH_METHOD (GET by default), BENCH_KEY (a bearer key, optional), BENCH_BODY (a JSON body,
-- optional). When the run is done it prints one JSON line of figures for the bench to read.
wrk.method = os.getenv("BENCH_METHOD") or "GET"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end
local body = os.getenv("BENCH_BODY")
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"seconds":%.3f,"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"failed":%d}\n',
    summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.status + e.connect + e.read + e.write + e.timeout))
end
