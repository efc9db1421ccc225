-- wrk script: the request a provider transport sends for one SMS, a
-- Twilio-shaped form POST (item 3's anchor: wrk straight at the HTTP
-- sink, bench/sink.conf.in).
wrk.method = "POST"
wrk.path = "/2010-04-01/Accounts/ACbench/Messages.json"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic QUNiZW5jaDpiZW5jaC10b2tlbg=="
wrk.body = "To=%2B15550100001&From=%2B15550000000&Body=Hello+Jenny+Rosen%2C+"
   .. "invoice+ACME-0001+for+%241%2C250.00+is+due+December+18%2C+2026%3A+"
   .. "https%3A%2F%2Finvoice.stripe.com%2Fi%2Facct_bench%2Fin_bench0001+"
   .. "--+Billing%2C+Acme+Studio"
