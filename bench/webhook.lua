-- wrk script: POSTs pre-signed Stripe events (bench/sign.pl) to
-- /webhooks/stripe/<account>, each line of the file once. Thread k of n
-- takes lines k, k+n, k+2n... so that no event id is sent twice; a thread
-- that runs out starts over (its repeats are then duplicates, counted and
-- reported by done() so that the run can be voided).
--
--   wrk -t THREADS ... -s bench/webhook.lua URL -- REQUESTS_FILE ACCOUNT THREADS

local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

function init(args)
   local file, account = args[1], args[2]
   local nthreads = tonumber(args[3])
   local path = "/webhooks/stripe/" .. account
   requests = {}
   local k, i = 0, 0
   for line in io.lines(file) do
      if i % nthreads == id then
         local sig, body = line:match("^([^\t]+)\t(.*)$")
         k = k + 1
         requests[k] = wrk.format("POST", path, {
            ["Content-Type"] = "application/json; charset=utf-8",
            ["Stripe-Signature"] = sig,
         }, body)
      end
      i = i + 1
   end
   nrequests = k
   index = 0
   repeats = 0
end

function request()
   index = index + 1
   if index > nrequests then
      index = 1
      repeats = repeats + 1
   end
   return requests[index]
end

function done(summary, latency, requests)
   local wrapped = 0
   for _, t in ipairs(threads) do
      wrapped = wrapped + t:get("repeats")
   end
   io.write(string.format("pre-signed requests ran out: %d times\n", wrapped))
end
