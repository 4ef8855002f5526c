-- wrk script for scripts/bench.sh: proxy-shape chat turns (X-API-Key +
-- client_user_id), half continuing existing conversations, half starting new ones.
--
--   wrk ... -s chat.lua http://127.0.0.1:PORT -- IDS_FILE USER_ID API_KEY THREADS [MIX]
--
-- IDS_FILE holds one existing conversation id a line, all owned by USER_ID.
-- Thread t of THREADS takes every THREADS-th id, so no two threads continue
-- the same conversation, and cycles through its share.
-- MIX is "mixed" (default: every other turn new), "new" or "continue" (for
-- finding out what each kind of turn costs).
-- done() prints one machine-readable line starting with "BENCH ".

dofile("scripts/bench/report.lua")

local thread_count = 0
local threads = {}

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

local MESSAGE = "Can you summarise where we are with the Kubernetes rollout and what is still open?"

function init(args)
  local ids_file, user, key, nthreads = args[1], args[2], args[3], tonumber(args[4])
  mix = args[5] or "mixed"
  assert(mix == "mixed" or mix == "new" or mix == "continue", "MIX must be mixed, new or continue")
  assert(ids_file and user and key and nthreads, "usage: -- IDS_FILE USER_ID API_KEY THREADS")
  ids = {}
  local i = 0
  for line in io.lines(ids_file) do
    if line ~= "" then
      if i % nthreads == tid then ids[#ids + 1] = line end
      i = i + 1
    end
  end
  assert(#ids > 0, "no conversation ids for thread " .. tid .. " in " .. ids_file)
  wrk.method = "POST"
  wrk.path = "/api/ai/chat"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-API-Key"] = key
  new_body = '{"user_message":"' .. MESSAGE .. '","client_user_id":"' .. user .. '"}'
  continue_prefix = '{"conversation_id":"'
  continue_suffix = '","user_message":"' .. MESSAGE .. '","client_user_id":"' .. user .. '"}'
  n = 0
  next_id = 0
end

function request()
  n = n + 1
  local body
  if mix == "new" or (mix == "mixed" and n % 2 == 0) then
    body = new_body
  else
    next_id = next_id % #ids + 1
    body = continue_prefix .. ids[next_id] .. continue_suffix
  end
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  bench_report(summary, latency)
end
