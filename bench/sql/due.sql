-- :count deliveries of the bench's employee on :channel (email or sms,
-- with :trigger of that channel) due at :due (a timestamptz expression)
-- plus i * :spacing, i from 0, tagged with :tag in their occurrence, to
-- the 10,000 contacts of bench/sql/contacts.sql in turn.
-- psql -v account=... -v employee=... -v trigger=... -v channel=email
--      -v tag=... -v count=N -v due="now()"
--      -v spacing="interval '1 millisecond'"
CREATE TEMP TABLE bench_contacts AS
SELECT id, row_number() OVER (ORDER BY id) - 1 AS k
  FROM contacts
 WHERE account_id = :'account' AND external_id LIKE 'bench:%';
INSERT INTO deliveries (account_id, employee_id, trigger_id, event, channel,
                        contact_id, occurrence, due_at)
SELECT :'account', :'employee', :'trigger', 'payment.received', :'channel',
       c.id, :'tag' || ':' || i, :due + i * :spacing
  FROM generate_series(0, :count - 1) i
  JOIN bench_contacts c
    ON c.k = i % (SELECT count(*) FROM bench_contacts);
DROP TABLE bench_contacts;
