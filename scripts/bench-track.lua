-- wrk script for scripts/bench-track.sh: GETs the paths of a file (one /path per line)
-- in turn, so that every request carries one of many distinct tokens.
--   wrk ... -s scripts/bench-track.lua http://127.0.0.1:PORT -- PATHS_FILE
-- Each wrk thread reads the file and starts at its own offset. Headers given with -H
-- (the browser User-Agent) go with every request (wrk.format uses wrk.headers).

local next_thread = 0

function setup(thread)
  thread:set("thread_index", next_thread)
  next_thread = next_thread + 1
end

local paths = {}
local i = 0

function init(args)
  local file = args[1]
  if file == nil then
    error("usage: wrk ... -s bench-track.lua URL -- PATHS_FILE")
  end
  for line in io.lines(file) do
    if #line > 0 then
      paths[#paths + 1] = line
    end
  end
  if #paths == 0 then
    error("no paths in " .. file)
  end
  -- Threads start far apart in the list (thread_index is set by setup()).
  i = ((thread_index or 0) * 7919) % #paths
end

function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
