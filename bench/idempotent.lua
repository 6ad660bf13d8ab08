-- post.lua plus an Idempotency-Key that is unique per request: BENCH_RUN (unique per wrk run),
-- the thread number and a per-thread counter, so no request replays another one's answer.
dofile(os.getenv("BENCH_LUA_DIR") .. "/post.lua")

local threads = 0
function setup(thread)
   threads = threads + 1
   thread:set("thread_number", threads)
end

local run = os.getenv("BENCH_RUN") or "run"
local counter = 0
function request()
   counter = counter + 1
   wrk.headers["Idempotency-Key"] = string.format("%s-%d-%d", run, thread_number, counter)
   return wrk.format()
end
