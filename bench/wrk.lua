-- One request, repeated: what bench/run.py asks for through the environment.
-- At the end, one JSON line with the figures bench/run.py reads.
wrk.method = os.getenv("BENCH_METHOD")
wrk.body = os.getenv("BENCH_BODY") ~= "" and os.getenv("BENCH_BODY") or nil
if os.getenv("BENCH_CONTENT_TYPE") ~= "" then
  wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
end
if os.getenv("BENCH_AUTHORIZATION") ~= "" then
  wrk.headers["Authorization"] = os.getenv("BENCH_AUTHORIZATION")
end
-- A numbered body: "{n}" in it becomes a number of its own in every request (the
-- start time, then a count), so that each request changes what the one before set.
if os.getenv("BENCH_NUMBERED") == "1" then
  local template, start, sent = wrk.body, tostring(os.time()), 0
  request = function()
    sent = sent + 1
    local body = template:gsub("{n}", start .. "-" .. sent)
    return wrk.format(nil, nil, nil, body)
  end
end

-- Bodies from a file, one a line: each request sends the next, round and round (a load
-- spread over many keys).
if os.getenv("BENCH_BODIES") ~= "" then
  local bodies = {}
  for line in io.lines(os.getenv("BENCH_BODIES")) do bodies[#bodies + 1] = line end
  local sent = 0
  request = function()
    sent = sent + 1
    return wrk.format(nil, nil, nil, bodies[(sent - 1) % #bodies + 1])
  end
end

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %f, "non_2xx": %d, "socket_errors": %d, ' ..
    '"p50_ms": %f, "p99_ms": %f}\n',
    summary.requests, summary.duration / 1e6, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
