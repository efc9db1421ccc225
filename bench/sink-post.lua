-- wrk script: the request Echelon's Twilio transport sends for one SMS
-- (item 3's anchor: wrk straight at the HTTP sink, bench/sink.conf.in),
-- with the body of a delivery Echelon sent (bench/sms-request.pl) and the
-- same headers (src/ngx_echelon_text.c).
--
--   wrk ... -s bench/sink-post.lua URL -- REQUEST_FILE

function init(args)
   local f = assert(io.open(args[1]))
   local id = f:read("*l")
   local body = f:read("*l")
   f:close()
   req = wrk.format("POST", "/2010-04-01/Accounts/ACbench/Messages.json", {
      ["Authorization"] = "Basic QUNiZW5jaDpiZW5jaC10b2tlbg==",
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["Accept"] = "application/json",
      ["I-Twilio-Idempotency-Token"] = id,
   }, body)
end

function request()
   return req
end
