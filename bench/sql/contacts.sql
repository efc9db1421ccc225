-- 10,000 contacts of the bench account, each with an email address.
-- psql -v account=... -f bench/sql/contacts.sql
INSERT INTO contacts (account_id, name, email, external_id)
SELECT :'account', 'Contact ' || i, 'contact' || i || '@bench.test',
       'bench:' || i
  FROM generate_series(1, 10000) i;
