-- wrk script for the limits-and-idempotency section of scripts/bench.sh:
-- new-conversation turns (X-API-Key) spread over USERS users, optionally
-- each with a unique Idempotency-Key.
--
--   wrk ... -s resilience.lua http://127.0.0.1:PORT -- API_KEY USERS KEYS RUN
--
-- KEYS is "keys" (send Idempotency-Key) or "none"; RUN is a tag that makes
-- keys unique across runs. done() prints one line starting with "BENCH ".

dofile("scripts/bench/report.lua")

local thread_count = 0

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
end

local MESSAGE = "Can you summarise where we are with the Kubernetes rollout and what is still open?"

function init(args)
  local key = args[1]
  users = tonumber(args[2])
  keys = args[3] == "keys"
  run = args[4] or "run"
  assert(key and users and users > 0, "usage: -- API_KEY USERS KEYS RUN")
  wrk.method = "POST"
  wrk.path = "/api/ai/chat"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-API-Key"] = key
  n = 0
end

function request()
  n = n + 1
  local user = string.format("00000000-0000-4000-8000-%012d", (n * 7919 + tid) % users)
  local body = '{"user_message":"' .. MESSAGE .. '","client_user_id":"' .. user .. '"}'
  local headers = nil
  if keys then
    -- wrk.format uses either these headers or wrk.headers, not both.
    headers = {}
    for k, v in pairs(wrk.headers) do headers[k] = v end
    headers["Idempotency-Key"] = run .. "-" .. tid .. "-" .. n
  end
  return wrk.format(nil, nil, headers, body)
end

function done(summary, latency, requests)
  bench_report(summary, latency)
end
