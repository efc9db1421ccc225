-- 10,000 contacts of the bench account, each with an email address and
-- a phone number.
-- psql -v account=... -f bench/sql/contacts.sql
INSERT INTO contacts (account_id, name, email, phone, external_id)
SELECT :'account', 'Contact ' || i, 'contact' || i || '@bench.test',
       '+1555' || lpad(i::text, 7, '0'), 'bench:' || i
  FROM generate_series(1, 10000) i;
