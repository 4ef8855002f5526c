-- wrk script for the /v1 run of scripts/bench.sh: the same non-streamed
-- OpenAI Chat Completions request, byte for byte, to chat-api and to
-- LiteLLM's proxy.
--
--   BENCH_V1_QUANTILES=FILE wrk ... -s v1.lua http://127.0.0.1:PORT -- BODY_FILE API_KEY USER
--
-- BODY_FILE holds the JSON request body. The key goes in
-- `Authorization: Bearer`, as the OpenAI SDKs send it; USER in
-- `X-Client-User-Id` (chat-api's end user with the internal key; LiteLLM
-- ignores the header). done() prints one line starting with "BENCH " and, with
-- BENCH_V1_QUANTILES set (an environment variable: done() runs in wrk's main
-- Lua state, which never sees the script arguments), writes the latency
-- quantiles there ("percent microseconds" a line), from which bench.sh merges
-- the percentiles of several runs to within 0.1% of rank at the tail.

dofile("scripts/bench/report.lua")

function init(args)
  local body_file, key, user = args[1], args[2], args[3]
  assert(body_file and key and user, "usage: -- BODY_FILE API_KEY USER")
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.path = "/v1/chat/completions"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. key
  wrk.headers["X-Client-User-Id"] = user
end

function done(summary, latency, requests)
  bench_report(summary, latency)
  local path = os.getenv("BENCH_V1_QUANTILES")
  if path and path ~= "" then
    -- wrk 4.1 gives Lua percentiles, not its histogram: 0.5% steps to 90%, then 0.1%.
    local f = assert(io.open(path, "w"))
    local q = 0
    while q < 1000 do
      q = q + (q < 900 and 5 or 1)
      -- percentile(100) is 0 in wrk 4.1: the top is the maximum.
      f:write(string.format("%.1f %d\n", q / 10, q == 1000 and latency.max or latency:percentile(q / 10)))
    end
    f:close()
  end
end
