-- The guestbook workload of bench/stack.sh for wrk: each request is, at
-- random, a static file, a read of the API or a post to it.
--
-- Environment:
--   MIX          "static/read/post" percentages, e.g. "90/8/2" (default)
--   STATIC_PATH  the static file (default /static/style.css)
--   RUN_ID       a name unique to this run: every post's text is
--                "sb-RUN_ID-THREAD-N", also sent as its Idempotency-Key
--   WRK_LOG      when set, each thread writes one line per answer to
--                WRK_LOG.THREAD: "time 201 TEXT" for an acknowledged post,
--                "time STATUS" for any other answer (time: Unix seconds)
-- At the end, one line: "stackbench {json}" with requests, seconds,
-- errors (connect, read, write, timeout, status = answers not 2xx/3xx),
-- req/s, the latency percentiles in ms, and how many requests of each kind
-- were sent (static, reads, posts; sent, not answered: the last few may
-- still have been in flight when the leg ended).
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_usec; } stackbench_timeval;
int gettimeofday(stackbench_timeval *tv, void *tz);
]]
local tv = ffi.new("stackbench_timeval")
local function now()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) + tonumber(tv.tv_usec) / 1e6
end

local threads = {}
local next_id = 1
function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local static_pct, read_pct
local static_path = os.getenv("STATIC_PATH") or "/static/style.css"
local run_id = os.getenv("RUN_ID") or "run"
local count = 0
-- Requests sent per kind (read back per thread in done()).
sent_static, sent_read, sent_post = 0, 0, 0
local log
-- Formatted in init(): wrk sets the Host header just before it.
local read_request, static_request

function init(args)
  local s, r, p = (os.getenv("MIX") or "90/8/2"):match("^(%d+)/(%d+)/(%d+)$")
  if not s or tonumber(s) + tonumber(r) + tonumber(p) ~= 100 then
    error("MIX must be three percentages adding up to 100, like 90/8/2")
  end
  static_pct, read_pct = tonumber(s), tonumber(s) + tonumber(r)
  read_request = wrk.format("GET", "/api/messages?limit=20")
  static_request = wrk.format("GET", static_path)
  math.randomseed(thread_id * 7919 + os.time())
  local prefix = os.getenv("WRK_LOG")
  if prefix and prefix ~= "" then
    log = io.open(prefix .. "." .. thread_id, "w")
  end
end


function request()
  local roll = math.random(100)
  if roll <= static_pct then
    sent_static = sent_static + 1
    return static_request
  elseif roll <= read_pct then
    sent_read = sent_read + 1
    return read_request
  end
  sent_post = sent_post + 1
  count = count + 1
  local text = string.format("sb-%s-%d-%d", run_id, thread_id, count)
  return wrk.format("POST", "/api/messages",
    { ["Content-Type"] = "application/json", ["Idempotency-Key"] = text },
    string.format('{"author": "wrk", "text": "%s"}', text))
end

if os.getenv("WRK_LOG") and os.getenv("WRK_LOG") ~= "" then
  function response(status, headers, body)
    if status == 201 then
      local text = body:match('"text": ?"(sb%-[^"]+)"')
      if text then
        log:write(string.format("%.6f 201 %s\n", now(), text))
        return
      end
    end
    if status >= 300 then
      log:write(string.format("%.6f %d\n", now(), status))
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  local static, reads, posts = 0, 0, 0
  for _, t in ipairs(threads) do
    static = static + (t:get("sent_static") or 0)
    reads = reads + (t:get("sent_read") or 0)
    posts = posts + (t:get("sent_post") or 0)
  end
  io.write(string.format(
    'stackbench {"requests": %d, "seconds": %.3f, "rps": %.1f, "connect": %d, "read": %d, "write": %d, ' ..
    '"timeout": %d, "status": %d, "p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, ' ..
    '"sent_static": %d, "sent_read": %d, "sent_post": %d}\n',
    summary.requests, secs, summary.requests / secs, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000, static, reads, posts))
end
