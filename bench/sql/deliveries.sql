-- Deliveries :first .. :last of the bench's employee, scheduled ahead: due
-- from tomorrow on, one a second, created over the past 30 days (the
-- activity feed's history), to the 10,000 contacts of contacts.sql in
-- turn. Foreign keys are known to hold, so their checks are off for the
-- load (session_replication_role).
-- psql -v account=... -v employee=... -v trigger=... -v first=1 -v last=N
SET session_replication_role = replica;
CREATE TEMP TABLE bench_contacts AS
SELECT id, row_number() OVER (ORDER BY id) - 1 AS k
  FROM contacts
 WHERE account_id = :'account' AND external_id LIKE 'bench:%';
INSERT INTO deliveries (id, account_id, employee_id, trigger_id, event,
                        channel, contact_id, occurrence, status, due_at,
                        created_at, updated_at)
SELECT 'dlv_' || substr(md5(i::text), 1, 24), :'account', :'employee',
       :'trigger', 'payment.received', 'email', c.id, 'ahead:' || i,
       'scheduled', now() + interval '1 day' + i * interval '1 second',
       now() - interval '30 days' + i * (interval '30 days' / :last),
       now() - interval '30 days' + i * (interval '30 days' / :last)
  FROM generate_series(:first, :last) i
  JOIN bench_contacts c
    ON c.k = i % (SELECT count(*) FROM bench_contacts);
DROP TABLE bench_contacts;
RESET session_replication_role;
