-- wrk script: GET a list of paths in turn (the Authorization header comes from wrk -H).
--
--   wrk -t T -c C -d 10s --latency -H "Authorization: Bearer ..." -s bench/reads/get_paths.lua \
--       http://127.0.0.1:PORT -- /api/v1/prescriptions/1 /api/v1/prescriptions/2 ...
--
-- Thread k starts at path k so that threads do not move in step. done() prints one line
-- "BENCH_JSON {...}" with counts and latency in microseconds; errors_status counts the
-- answers with a status above 399 (wrk's own count), which the driver treats as a failed load.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   table.insert(threads, thread)
   counter = counter + 1
end

function init(args)
   paths = {}
   for _, path in ipairs(args) do
      paths[#paths + 1] = wrk.format("GET", path)
   end
   if #paths == 0 then
      error("usage: -- PATH [PATH ...]")
   end
   idx = id % #paths
end

function request()
   idx = idx + 1
   if idx > #paths then
      idx = 1
   end
   return paths[idx]
end

function done(summary, latency, requests)
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d,' ..
      '"latency_mean_us":%.1f,"latency_max_us":%d,' ..
      '"latency_p50_us":%d,"latency_p90_us":%d,"latency_p99_us":%d,"latency_p999_us":%d}\n',
      summary.requests, summary.duration, summary.bytes,
      summary.errors.connect, summary.errors.read, summary.errors.write,
      summary.errors.status, summary.errors.timeout,
      latency.mean, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
