-- wrk script: POST pre-signed webhook events, each request line used once.
--
--   wrk -t T -c C -d 10s --latency -s bench/webhooks/post_signed.lua \
--       http://127.0.0.1:PORT/webhooks/platform -- REQUESTS_FILE T
--
-- REQUESTS_FILE has one request per line: "<X-Signature value>\t<JSON body>"
-- (written by bench/webhooks/events.py; wrk's Lua has no HMAC). Thread k of T
-- sends lines k, k+T, k+2T, ... so no two threads send the same event. If a
-- thread runs out of lines it starts again (duplicates!) and counts a wrap;
-- done() reports wraps so that the driver can reject or redo the run.
-- Every thread counts the requests it issued ("sent"), the responses it got
-- ("answered") and the 2xx among them ("ok"): when the load stops, sent -
-- answered requests were still in flight (or lost to a socket error), so the
-- driver's row check is exact: rows stored == ok + (sent - answered).
-- done() prints one line "BENCH_JSON {...}" with counts and latency (microseconds).

local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   table.insert(threads, thread)
   counter = counter + 1
end

function init(args)
   local path = args[1]
   local nthreads = tonumber(args[2] or "1")
   if path == nil then
      error("usage: -- REQUESTS_FILE THREADS")
   end
   reqs = {}
   local i = 0
   for line in io.lines(path) do
      if i % nthreads == id then
         local tab = line:find("\t", 1, true)
         if tab then
            local sig = line:sub(1, tab - 1)
            local body = line:sub(tab + 1)
            reqs[#reqs + 1] = wrk.format("POST", wrk.path, {
               ["Content-Type"] = "application/json",
               ["X-Signature"] = sig,
            }, body)
         end
      end
      i = i + 1
   end
   if #reqs == 0 then
      error("no requests for thread " .. id .. " in " .. path)
   end
   pool = #reqs
   idx = 0
   sent = 0
   verified = false
   answered = 0
   ok = 0
   wrapped = 0
end

function request()
   if id == 0 and not verified then
      -- wrk (script_verify_request, wrk.c) calls request() once on thread 0 before
      -- any connection exists, to check the request parses; nothing is sent.
      verified = true
      return reqs[1]
   end
   idx = idx + 1
   if idx > pool then
      idx = 1
      wrapped = wrapped + 1
   end
   sent = sent + 1
   return reqs[idx]
end

function response(status, headers, body)
   answered = answered + 1
   if status >= 200 and status < 300 then
      ok = ok + 1
   end
end

function done(summary, latency, requests)
   local sent, answered, ok, wrapped, pool = 0, 0, 0, 0, 0
   for _, t in ipairs(threads) do
      sent = sent + (t:get("sent") or 0)
      answered = answered + (t:get("answered") or 0)
      ok = ok + (t:get("ok") or 0)
      wrapped = wrapped + (t:get("wrapped") or 0)
      pool = pool + (t:get("pool") or 0)
   end
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d,' ..
      '"latency_mean_us":%.1f,"latency_stdev_us":%.1f,"latency_min_us":%d,"latency_max_us":%d,' ..
      '"latency_p50_us":%d,"latency_p90_us":%d,"latency_p99_us":%d,"latency_p999_us":%d,' ..
      '"sent":%d,"answered":%d,"ok":%d,"pool":%d,"wrapped":%d}\n',
      summary.requests, summary.duration, summary.bytes,
      summary.errors.connect, summary.errors.read, summary.errors.write,
      summary.errors.status, summary.errors.timeout,
      latency.mean, latency.stdev, latency.min, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      sent, answered, ok, pool, wrapped))
end
