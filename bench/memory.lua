-- wrk script for item 6: a mix of API requests, and a stop after a given
-- number of answers. Of every 50 requests: 47 GET /v1/account, one
-- activity page of 50 items, one 404 (an unknown employee), one 401 (a
-- wrong key).
--
--   wrk -t THREADS ... -s bench/memory.lua URL -- API_KEY EMPLOYEE TOTAL THREADS

function init(args)
   local key, employee = args[1], args[2]
   quota = math.floor(tonumber(args[3]) / tonumber(args[4]))
   local auth = { Authorization = "Bearer " .. key }
   local mix = {
      wrk.format("GET", "/v1/employees/" .. employee .. "/activity?limit=50", auth),
      wrk.format("GET", "/v1/employees/emp_000000000000000000000000/activity", auth),
      wrk.format("GET", "/v1/account", { Authorization = "Bearer wrong" }),
   }
   local account = wrk.format("GET", "/v1/account", auth)
   requests = {}
   for i = 1, 50 do
      requests[i] = mix[i] or account
   end
   sent, answered = 0, 0
end

function request()
   sent = sent + 1
   return requests[(sent - 1) % 50 + 1]
end

function response(status, headers, body)
   answered = answered + 1
   if answered >= quota then
      wrk.thread:stop()
   end
end
