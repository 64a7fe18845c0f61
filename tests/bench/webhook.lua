-- wrk script for tests/bench/webhook.py: cycles through pre-signed requests read from a file, one per line
-- as "<path>\t<x-line-signature>\t<body>". wrk's threads each take every n-th line (so no event is sent twice
-- while the file lasts) and count the 200s; done() prints one JSON line that the benchmark reads.
-- Arguments after "--": <file> <number of wrk threads>.
local counter = 0
local threads = {}
local lines = {}
local index = 0
ok = 0
wrapped = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local total, n = tonumber(args[2]), 0
  for line in io.lines(args[1]) do
    if n % total == id then
      local path, signature, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      lines[#lines + 1] = wrk.format("POST", path, {["Content-Type"] = "application/json; charset=utf-8",
                                                    ["x-line-signature"] = signature}, body)
    end
    n = n + 1
  end
end

function request()
  index = index + 1
  if index > #lines then
    index, wrapped = 1, 1
  end
  return lines[index]
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  end
end

function done(summary, latency, requests)
  local total_ok, any_wrapped = 0, 0
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    any_wrapped = math.max(any_wrapped, thread:get("wrapped"))
  end
  local e = summary.errors
  io.write(string.format('WRK {"requests": %d, "ok": %d, "seconds": %.6f, "socket_errors": %d, ' ..
    '"non_2xx": %d, "timeouts": %d, "p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, "wrapped": %d}\n',
    summary.requests, total_ok, summary.duration / 1e6, e.connect + e.read + e.write, e.status, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000, any_wrapped))
end
