
/*
 * Copyright (C) Echelon
 *
 * Every SQL statement of the module, and the schema migrations.
 *
 * Statements are prepared once per connection under their names; every
 * value travels as a parameter.  Times are taken from the database clock:
 * the module passes durations, never instants it computed itself.
 */


#include "ngx_echelon.h"


/* version 1: accounts, billing data, the delivery queue and its ledger */

#define NGX_ECHELON_SCHEMA_1                                                 \
"CREATE FUNCTION echelon_id(prefix text) RETURNS text "                      \
"LANGUAGE sql VOLATILE AS $$ "                                               \
"  SELECT prefix || '_' "                                                    \
"         || substr(replace(gen_random_uuid()::text, '-', ''), 1, 24) $$;"   \
                                                                             \
"CREATE FUNCTION echelon_time(t timestamptz) RETURNS text "                  \
"LANGUAGE sql IMMUTABLE AS $$ "                                              \
"  SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') $$;"\
                                                                             \
"CREATE SEQUENCE echelon_claim_seq;"                                         \
                                                                             \
"CREATE TABLE accounts ("                                                    \
"  id text PRIMARY KEY DEFAULT echelon_id('acct'),"                          \
"  name text NOT NULL,"                                                      \
"  plan text NOT NULL CHECK (plan IN ('starter', 'growth', 'scale')),"       \
"  api_key_hash text NOT NULL UNIQUE,"                                       \
"  created_at timestamptz NOT NULL DEFAULT clock_timestamp());"              \
                                                                             \
"CREATE TABLE stripe_integrations ("                                         \
"  account_id text PRIMARY KEY REFERENCES accounts ON DELETE CASCADE,"       \
"  signing_secrets text[] NOT NULL,"                                         \
"  updated_at timestamptz NOT NULL DEFAULT now());"                          \
                                                                             \
"CREATE TABLE channels ("                                                    \
"  account_id text NOT NULL REFERENCES accounts ON DELETE CASCADE,"          \
"  kind text NOT NULL CHECK (kind IN ('email', 'sms', 'whatsapp')),"         \
"  sender text NOT NULL,"                                                    \
"  updated_at timestamptz NOT NULL DEFAULT now(),"                           \
"  PRIMARY KEY (account_id, kind));"                                         \
                                                                             \
"CREATE TABLE employees ("                                                   \
"  id text PRIMARY KEY DEFAULT echelon_id('emp'),"                           \
"  account_id text NOT NULL REFERENCES accounts ON DELETE CASCADE,"          \
"  name text NOT NULL,"                                                      \
"  role text NOT NULL,"                                                      \
"  tone text NOT NULL,"                                                      \
"  channels text[] NOT NULL,"                                                \
"  enabled boolean NOT NULL DEFAULT true,"                                   \
"  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),"               \
"  deleted_at timestamptz);"                                                 \
"CREATE INDEX employees_account"                                             \
"  ON employees (account_id, created_at DESC, id DESC);"                     \
                                                                             \
"CREATE TABLE triggers ("                                                    \
"  id text PRIMARY KEY DEFAULT echelon_id('trg'),"                           \
"  account_id text NOT NULL REFERENCES accounts ON DELETE CASCADE,"          \
"  employee_id text NOT NULL REFERENCES employees ON DELETE CASCADE,"        \
"  event text NOT NULL,"                                                     \
"  channel text NOT NULL,"                                                   \
"  subject text,"                                                            \
"  body text NOT NULL,"                                                      \
"  delay_seconds integer NOT NULL DEFAULT 0 CHECK (delay_seconds >= 0),"     \
"  unless_paid boolean NOT NULL DEFAULT false,"                              \
"  every_days integer,"                                                      \
"  max_times integer,"                                                       \
"  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),"               \
"  deleted_at timestamptz);"                                                 \
"CREATE INDEX triggers_event ON triggers (account_id, event)"                \
"  WHERE deleted_at IS NULL;"                                                \
"CREATE INDEX triggers_employee"                                             \
"  ON triggers (employee_id, created_at DESC, id DESC);"                     \
                                                                             \
"CREATE TABLE contacts ("                                                    \
"  id text PRIMARY KEY DEFAULT echelon_id('ctc'),"                           \
"  account_id text NOT NULL REFERENCES accounts ON DELETE CASCADE,"          \
"  name text,"                                                               \
"  email text,"                                                              \
"  phone text,"                                                              \
"  whatsapp text,"                                                           \
"  timezone text NOT NULL DEFAULT 'UTC',"                                    \
"  locale text,"                                                             \
"  external_id text,"                                                        \
"  source_version bigint NOT NULL DEFAULT 0,"                                \
"  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),"               \
"  updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),"               \
"  UNIQUE (account_id, external_id));"                                       \
                                                                             \
"CREATE TABLE invoices ("                                                    \
"  id text PRIMARY KEY DEFAULT echelon_id('inv'),"                           \
"  account_id text NOT NULL REFERENCES accounts ON DELETE CASCADE,"          \
"  contact_id text NOT NULL REFERENCES contacts ON DELETE CASCADE,"          \
"  external_id text,"                                                        \
"  number text,"                                                             \
"  amount_due bigint NOT NULL,"                                              \
"  amount_paid bigint NOT NULL DEFAULT 0,"                                   \
"  currency text NOT NULL,"                                                  \
"  due_at timestamptz,"                                                      \
"  url text,"                                                                \
"  status text NOT NULL DEFAULT 'open' CHECK (status IN"                     \
"    ('draft', 'open', 'paid', 'void', 'uncollectible')),"                   \
"  source_version bigint NOT NULL DEFAULT 0,"                                \
"  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),"               \
"  updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),"               \
"  UNIQUE (account_id, external_id));"                                       \
                                                                             \
"CREATE TABLE events ("                                                      \
"  account_id text NOT NULL REFERENCES accounts ON DELETE CASCADE,"          \
"  source text NOT NULL,"                                                    \
"  event_id text NOT NULL,"                                                  \
"  type text NOT NULL,"                                                      \
"  created bigint,"                                                          \
"  outcome text NOT NULL,"                                                   \
"  received_at timestamptz NOT NULL DEFAULT now(),"                          \
"  PRIMARY KEY (account_id, source, event_id));"                             \
                                                                             \
"CREATE TABLE deliveries ("                                                  \
"  id text PRIMARY KEY DEFAULT echelon_id('dlv'),"                           \
"  account_id text NOT NULL REFERENCES accounts ON DELETE CASCADE,"          \
"  employee_id text NOT NULL REFERENCES employees ON DELETE CASCADE,"        \
"  trigger_id text NOT NULL REFERENCES triggers ON DELETE CASCADE,"          \
"  event text NOT NULL,"                                                     \
"  channel text NOT NULL,"                                                   \
"  contact_id text NOT NULL REFERENCES contacts ON DELETE CASCADE,"          \
"  invoice_id text REFERENCES invoices ON DELETE CASCADE,"                   \
"  occurrence text NOT NULL,"                                                \
"  status text NOT NULL DEFAULT 'scheduled' CHECK (status IN"                \
"    ('scheduled', 'sending', 'sent', 'delivered', 'failed', 'cancelled',"   \
"     'skipped')),"                                                          \
"  reason text,"                                                             \
"  attempts integer NOT NULL DEFAULT 0,"                                     \
"  due_at timestamptz NOT NULL,"                                             \
"  lease_until timestamptz,"                                                 \
"  claim_token bigint,"                                                      \
"  address text,"                                                            \
"  subject text,"                                                            \
"  body text,"                                                               \
"  provider_id text,"                                                        \
"  sent_at timestamptz,"                                                     \
"  delivered_at timestamptz,"                                                \
"  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),"               \
"  updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),"               \
"  UNIQUE (trigger_id, occurrence));"                                        \
"CREATE INDEX deliveries_due ON deliveries (due_at)"                         \
"  WHERE status = 'scheduled';"                                              \
"CREATE INDEX deliveries_lease ON deliveries (lease_until)"                  \
"  WHERE status = 'sending';"                                                \
"CREATE INDEX deliveries_feed"                                               \
"  ON deliveries (employee_id, created_at DESC, id DESC);"                   \
"CREATE INDEX deliveries_contact"                                            \
"  ON deliveries (contact_id, created_at DESC, id DESC);"                    \
                                                                             \
"CREATE TABLE delivery_attempts ("                                           \
"  delivery_id text NOT NULL REFERENCES deliveries ON DELETE CASCADE,"       \
"  attempt integer NOT NULL,"                                                \
"  outcome text NOT NULL,"                                                   \
"  error text,"                                                              \
"  finished_at timestamptz NOT NULL DEFAULT now(),"                          \
"  PRIMARY KEY (delivery_id, attempt));"


/*
 * version 1, continued: the fan-out and the Stripe ingest, each one
 * transaction with the statement that calls it
 */

#define NGX_ECHELON_SCHEMA_1_FUNCTIONS                                       \
"CREATE FUNCTION echelon_fanout(p_account text, p_event text,"               \
"    p_contact text, p_invoice text, p_occurrence text) RETURNS integer "    \
"LANGUAGE plpgsql AS $fn$ "                                                  \
"DECLARE n integer; "                                                        \
"BEGIN "                                                                     \
"  INSERT INTO deliveries (account_id, employee_id, trigger_id, event,"      \
"                          channel, contact_id, invoice_id, occurrence,"     \
"                          due_at)"                                          \
"  SELECT t.account_id, t.employee_id, t.id, t.event, t.channel, p_contact," \
"         p_invoice, p_occurrence,"                                          \
"         now() + make_interval(secs => t.delay_seconds)"                    \
"    FROM triggers t JOIN employees e ON e.id = t.employee_id"               \
"   WHERE t.account_id = p_account AND t.event = p_event"                    \
"     AND t.deleted_at IS NULL AND e.deleted_at IS NULL"                     \
"  ON CONFLICT (trigger_id, occurrence) DO NOTHING; "                        \
"  GET DIAGNOSTICS n = ROW_COUNT; "                                          \
"  RETURN n; "                                                               \
"END $fn$;"                                                                  \
                                                                             \
"CREATE FUNCTION echelon_stripe_invoice(p_account text, o jsonb,"            \
"    p_version bigint, OUT contact_id text, OUT invoice_id text) "           \
"LANGUAGE plpgsql AS $fn$ "                                                  \
"DECLARE customer text; "                                                    \
"BEGIN "                                                                     \
"  customer := CASE jsonb_typeof(o->'customer')"                             \
"                WHEN 'object' THEN o->'customer'->>'id'"                    \
"                ELSE o->>'customer' END; "                                  \
"  IF customer IS NULL THEN "                                                \
"    customer := 'invoice:' || (o->>'id'); "                                 \
"  END IF; "                                                                 \
"  INSERT INTO contacts AS c (account_id, external_id, name, email,"         \
"                             source_version)"                               \
"  VALUES (p_account, customer, o->>'customer_name', o->>'customer_email',"  \
"          p_version)"                                                       \
"  ON CONFLICT (account_id, external_id) DO UPDATE"                          \
"     SET name = coalesce(c.name, EXCLUDED.name),"                           \
"         email = coalesce(c.email, EXCLUDED.email),"                        \
"         updated_at = clock_timestamp()"                                    \
"  RETURNING c.id INTO contact_id; "                                         \
"  INSERT INTO invoices AS i (account_id, contact_id, external_id, number,"  \
"      amount_due, amount_paid, currency, due_at, url, status,"              \
"      source_version)"                                                      \
"  VALUES (p_account, contact_id, o->>'id', o->>'number',"                   \
"      coalesce((o->>'amount_due')::bigint, 0),"                             \
"      coalesce((o->>'amount_paid')::bigint, 0),"                            \
"      lower(coalesce(o->>'currency', 'usd')),"                              \
"      to_timestamp((o->>'due_date')::bigint),"                              \
"      o->>'hosted_invoice_url', 'open', p_version)"                         \
"  ON CONFLICT (account_id, external_id) DO UPDATE"                          \
"     SET number = coalesce(EXCLUDED.number, i.number),"                     \
"         amount_due = CASE WHEN EXCLUDED.source_version >= i.source_version"\
"                           THEN EXCLUDED.amount_due ELSE i.amount_due END," \
"         currency = EXCLUDED.currency,"                                     \
"         due_at = CASE WHEN EXCLUDED.source_version >= i.source_version"    \
"                       THEN EXCLUDED.due_at ELSE i.due_at END,"             \
"         url = coalesce(EXCLUDED.url, i.url),"                              \
"         source_version = greatest(i.source_version,"                       \
"                                   EXCLUDED.source_version),"               \
"         updated_at = clock_timestamp()"                                    \
"  RETURNING i.id INTO invoice_id; "                                         \
"END $fn$;"                                                                  \
                                                                             \
"CREATE FUNCTION echelon_stripe_event(p_account text, p_event jsonb) "       \
"RETURNS text LANGUAGE plpgsql AS $fn$ "                                     \
"DECLARE "                                                                   \
"  v_type text := p_event->>'type'; "                                        \
"  v_created bigint := coalesce((p_event->>'created')::bigint, 0); "         \
"  o jsonb := p_event->'data'->'object'; "                                   \
"  v_outcome text := 'ignored'; "                                            \
"  r record; "                                                               \
"BEGIN "                                                                     \
"  IF v_type IN ('invoice.finalized', 'invoice.sent') THEN "                 \
"    IF jsonb_typeof(o) <> 'object' OR o->>'id' IS NULL THEN "               \
"      RAISE EXCEPTION 'event data.object is not an invoice'"                \
"        USING ERRCODE = '22023'; "                                          \
"    END IF; "                                                               \
"    v_outcome := 'processed'; "                                             \
"  END IF; "                                                                 \
"  INSERT INTO events (account_id, source, event_id, type, created, outcome)"\
"  VALUES (p_account, 'stripe', p_event->>'id', v_type, v_created,"          \
"          v_outcome)"                                                       \
"  ON CONFLICT DO NOTHING; "                                                 \
"  IF NOT FOUND THEN "                                                       \
"    RETURN 'duplicate'; "                                                   \
"  END IF; "                                                                 \
"  IF v_outcome = 'processed' THEN "                                         \
"    r := echelon_stripe_invoice(p_account, o, v_created); "                 \
"    PERFORM echelon_fanout(p_account, 'invoice.issued', r.contact_id,"      \
"                           r.invoice_id, r.invoice_id); "                   \
"  END IF; "                                                                 \
"  RETURN v_outcome; "                                                       \
"END $fn$;"                                                                  \
                                                                             \
"INSERT INTO echelon_schema (version) VALUES (1);"


/*
 * version 2: every trigger.  Time-based deliveries are created ahead with
 * their due_at; closing an invoice cancels what is pending for it, a new
 * due date moves it.  Stripe events carry their creation time as a
 * version: an older event never moves an invoice or a contact backwards.
 */

#define NGX_ECHELON_SCHEMA_2                                                 \
"ALTER TABLE deliveries ADD COLUMN seq integer NOT NULL DEFAULT 0;"          \
"ALTER TABLE triggers ALTER COLUMN body DROP NOT NULL;"                      \
"ALTER TABLE contacts ADD COLUMN address jsonb;"                             \
"ALTER TABLE invoices ADD COLUMN payment_failures integer NOT NULL"          \
"  DEFAULT 0;"                                                               \
"CREATE INDEX deliveries_invoice ON deliveries (invoice_id)"                 \
"  WHERE status = 'scheduled';"                                              \
                                                                             \
"CREATE TABLE payments ("                                                    \
"  id text PRIMARY KEY DEFAULT echelon_id('pay'),"                           \
"  account_id text NOT NULL REFERENCES accounts ON DELETE CASCADE,"          \
"  invoice_id text NOT NULL REFERENCES invoices ON DELETE CASCADE,"          \
"  amount bigint NOT NULL,"                                                  \
"  currency text NOT NULL,"                                                  \
"  external_id text,"                                                        \
"  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),"               \
"  UNIQUE (account_id, external_id));"                                       \
                                                                             \
"CREATE TABLE idempotency_keys ("                                            \
"  account_id text NOT NULL,"                                                \
"  key text NOT NULL,"                                                       \
"  request_hash text NOT NULL,"                                              \
"  status integer,"                                                          \
"  response text,"                                                           \
"  created_at timestamptz NOT NULL DEFAULT now(),"                           \
"  PRIMARY KEY (account_id, key));"                                          \
                                                                             \
"CREATE FUNCTION echelon_due(t triggers, p_due timestamptz, p_seq integer)"  \
"  RETURNS timestamptz LANGUAGE sql IMMUTABLE AS $$"                         \
"  SELECT p_due + make_interval(days => coalesce(t.every_days, 0) * p_seq)"  \
"               + make_interval(secs => t.delay_seconds) $$;"                \
                                                                             \
"CREATE FUNCTION echelon_schedule_unpaid(p_invoice text) RETURNS integer "   \
"LANGUAGE plpgsql AS $fn$ "                                                  \
"DECLARE i invoices; n integer; "                                            \
"BEGIN "                                                                     \
"  SELECT * INTO i FROM invoices WHERE id = p_invoice; "                     \
"  IF i.due_at IS NULL OR i.status <> 'open' THEN RETURN 0; END IF; "        \
"  INSERT INTO deliveries (account_id, employee_id, trigger_id, event,"      \
"                          channel, contact_id, invoice_id, occurrence,"     \
"                          seq, due_at)"                                     \
"  SELECT t.account_id, t.employee_id, t.id, t.event, t.channel,"            \
"         i.contact_id, i.id, i.id || '#' || s, s,"                          \
"         echelon_due(t, i.due_at, s)"                                       \
"    FROM triggers t JOIN employees e ON e.id = t.employee_id"               \
"    CROSS JOIN LATERAL generate_series("                                    \
"      CASE t.event WHEN 'invoice.overdue' THEN 0 ELSE 1 END,"               \
"      CASE t.event WHEN 'invoice.overdue' THEN 0"                           \
"                   ELSE coalesce(t.max_times, 0) END) s"                    \
"   WHERE t.account_id = i.account_id AND t.deleted_at IS NULL"              \
"     AND e.deleted_at IS NULL"                                              \
"     AND t.event IN ('invoice.overdue', 'invoice.unpaid_repeated')"         \
"  ON CONFLICT (trigger_id, occurrence) DO NOTHING; "                        \
"  GET DIAGNOSTICS n = ROW_COUNT; "                                          \
"  RETURN n; "                                                               \
"END $fn$;"                                                                  \
                                                                             \
"CREATE FUNCTION echelon_move_unpaid(p_invoice text) RETURNS void "          \
"LANGUAGE plpgsql AS $fn$ "                                                  \
"DECLARE i invoices; "                                                       \
"BEGIN "                                                                     \
"  SELECT * INTO i FROM invoices WHERE id = p_invoice; "                     \
"  IF i.due_at IS NULL THEN "                                                \
"    PERFORM echelon_cancel(p_invoice, 'unpaid',"                            \
"                           'the invoice no longer has a due date'); "       \
"    RETURN; "                                                               \
"  END IF; "                                                                 \
"  UPDATE deliveries d SET due_at = echelon_due(t, i.due_at, d.seq),"        \
"         updated_at = now()"                                                \
"    FROM triggers t"                                                        \
"   WHERE t.id = d.trigger_id AND d.invoice_id = p_invoice"                  \
"     AND d.status = 'scheduled'"                                            \
"     AND d.event IN ('invoice.overdue', 'invoice.unpaid_repeated'); "       \
"  PERFORM echelon_schedule_unpaid(p_invoice); "                             \
"END $fn$;"                                                                  \
                                                                             \
/* what: 'unpaid' (reminders and unless-paid), 'all' but confirmations */    \
"CREATE FUNCTION echelon_cancel(p_invoice text, p_what text,"                \
"    p_reason text) RETURNS integer "                                        \
"LANGUAGE plpgsql AS $fn$ "                                                  \
"DECLARE n integer; "                                                        \
"BEGIN "                                                                     \
"  UPDATE deliveries d SET status = 'cancelled', reason = p_reason,"         \
"         updated_at = now()"                                                \
"    FROM triggers t"                                                        \
"   WHERE t.id = d.trigger_id AND d.invoice_id = p_invoice"                  \
"     AND d.status = 'scheduled'"                                            \
"     AND d.event <> 'payment.received'"                                     \
"     AND (p_what = 'all' OR t.unless_paid"                                  \
"          OR d.event IN ('invoice.overdue', 'invoice.unpaid_repeated')); "  \
"  GET DIAGNOSTICS n = ROW_COUNT; "                                          \
"  RETURN n; "                                                               \
"END $fn$;"                                                                  \
                                                                             \
/* an invoice issued: its messages now, its reminders ahead */               \
"CREATE FUNCTION echelon_invoice_issued(p_invoice text) RETURNS void "       \
"LANGUAGE plpgsql AS $fn$ "                                                  \
"DECLARE i invoices; "                                                       \
"BEGIN "                                                                     \
"  SELECT * INTO i FROM invoices WHERE id = p_invoice; "                     \
"  PERFORM echelon_fanout(i.account_id, 'invoice.issued', i.contact_id,"     \
"                         i.id, i.id); "                                     \
"  IF i.status IN ('paid', 'void', 'uncollectible') THEN "                   \
"    PERFORM echelon_cancel(i.id, 'unpaid', 'the invoice is ' || i.status);" \
"  ELSE "                                                                    \
"    PERFORM echelon_schedule_unpaid(i.id); "                                \
"  END IF; "                                                                 \
"END $fn$;"                                                                  \
                                                                             \
/* a payment recorded: the invoice paid in full closes */                    \
"CREATE FUNCTION echelon_payment(p_account text, p_invoice text,"            \
"    p_amount bigint, p_external text, OUT payment_id text,"                 \
"    OUT invoice_status text, OUT amount_paid bigint) "                      \
"LANGUAGE plpgsql AS $fn$ "                                                  \
"DECLARE i invoices; "                                                       \
"BEGIN "                                                                     \
"  SELECT * INTO i FROM invoices WHERE id = p_invoice FOR UPDATE; "          \
"  INSERT INTO payments (account_id, invoice_id, amount, currency,"          \
"                        external_id)"                                       \
"  VALUES (p_account, p_invoice, p_amount, i.currency, p_external)"          \
"  RETURNING id INTO payment_id; "                                           \
"  UPDATE invoices u SET amount_paid = u.amount_paid + p_amount,"            \
"         status = CASE WHEN u.amount_paid + p_amount >= u.amount_due"       \
"                       THEN 'paid' ELSE u.status END,"                      \
"         updated_at = clock_timestamp()"                                    \
"   WHERE u.id = p_invoice RETURNING * INTO i; "                             \
"  IF i.status = 'paid' THEN "                                               \
"    PERFORM echelon_cancel(i.id, 'unpaid', 'the invoice was paid'); "       \
"  END IF; "                                                                 \
"  PERFORM echelon_fanout(p_account, 'payment.received', i.contact_id,"      \
"                         i.id, 'payment:' || payment_id); "                 \
"  invoice_status := i.status; "                                             \
"  amount_paid := i.amount_paid; "                                           \
"END $fn$;"                                                                  \
                                                                             \
/* a contact's billing details changed: name, email, phone or address */     \
"CREATE FUNCTION echelon_details_changed(p_account text, p_contact text,"    \
"    p_change text) RETURNS integer "                                        \
"LANGUAGE sql AS $$ "                                                        \
"  SELECT echelon_fanout(p_account, 'billing_details.updated', p_contact,"   \
"                        NULL, 'contact:' || p_contact || ':' || p_change)"  \
"$$;"                                                                        \
                                                                             \
"DROP FUNCTION echelon_stripe_invoice(text, jsonb, bigint);"                 \
                                                                             \
/* Stripe's text, or NULL when it is no email address we would send to */    \
"CREATE FUNCTION echelon_email(t text) RETURNS text "                        \
"LANGUAGE sql IMMUTABLE AS $$ "                                              \
"  SELECT CASE WHEN t ~ ('^[^@\\s<>(),;:\"]+@[^@\\s<>(),;:\"]+'"              \
"                        || '\\.[^@\\s<>(),;:\"]+$')"                          \
"               AND length(t) <= 320 THEN t END $$;"                         \
                                                                             \
"CREATE FUNCTION echelon_stripe_invoice(p_account text, o jsonb,"            \
"    p_version bigint, p_status text, OUT contact_id text,"                  \
"    OUT invoice_id text, OUT moved boolean, OUT status text) "              \
"LANGUAGE plpgsql AS $fn$ "                                                  \
"DECLARE customer text; old_due timestamptz; new_due timestamptz; "          \
"        newer boolean; cur text; amount bigint; "                           \
"BEGIN "                                                                     \
"  customer := CASE jsonb_typeof(o->'customer')"                             \
"                WHEN 'object' THEN o->'customer'->>'id'"                    \
"                ELSE o->>'customer' END; "                                  \
"  IF customer IS NULL THEN "                                                \
"    customer := 'invoice:' || (o->>'id'); "                                 \
"  END IF; "                                                                 \
"  cur := lower(o->>'currency'); "                                           \
"  amount := (o->>'amount_due')::bigint; "                                   \
"  IF cur IS NULL OR cur !~ '^[a-z]{3}$' OR amount IS NULL OR amount < 0"    \
"     OR length(o->>'id') > 255 OR length(customer) > 255"                   \
"     OR length(o->>'number') > 255"                                         \
"     OR length(o->>'hosted_invoice_url') > 2048 THEN "                      \
"    RAISE EXCEPTION 'the invoice lacks an amount or a currency, or has "    \
"fields out of range' USING ERRCODE = '22023'; "                             \
"  END IF; "                                                                 \
"  INSERT INTO contacts AS c (account_id, external_id, name, email,"         \
"                             source_version)"                               \
"  VALUES (p_account, customer, left(o->>'customer_name', 200),"             \
"          echelon_email(o->>'customer_email'), 0)"                          \
"  ON CONFLICT (account_id, external_id) DO UPDATE"                          \
"     SET name = coalesce(c.name, EXCLUDED.name),"                           \
"         email = coalesce(c.email, EXCLUDED.email)"                         \
"  RETURNING c.id INTO contact_id; "                                         \
"  new_due := to_timestamp((o->>'due_date')::bigint); "                      \
"  SELECT i.id, i.due_at, p_version >= i.source_version"                     \
"    INTO invoice_id, old_due, newer"                                        \
"    FROM invoices i"                                                        \
"   WHERE i.account_id = p_account AND i.external_id = o->>'id'"             \
"   FOR UPDATE; "                                                            \
"  IF invoice_id IS NULL THEN "                                              \
"    INSERT INTO invoices (account_id, contact_id, external_id, number,"     \
"        amount_due, amount_paid, currency, due_at, url, status,"            \
"        source_version)"                                                    \
"    VALUES (p_account, contact_id, o->>'id', o->>'number', amount,"         \
"        greatest(coalesce((o->>'amount_paid')::bigint, 0), 0), cur,"        \
"        new_due, o->>'hosted_invoice_url', p_status, p_version)"            \
"    RETURNING id INTO invoice_id; "                                         \
"    moved := false; "                                                       \
"    status := p_status; "                                                   \
"    RETURN; "                                                               \
"  END IF; "                                                                 \
/* an older event moves nothing but a status forward */                      \
"  UPDATE invoices i SET"                                                    \
"         number = CASE WHEN newer"                                          \
"           THEN coalesce(o->>'number', i.number) ELSE i.number END,"        \
"         url = CASE WHEN newer"                                             \
"           THEN coalesce(o->>'hosted_invoice_url', i.url) ELSE i.url END,"  \
"         amount_due = CASE WHEN newer THEN amount ELSE i.amount_due END,"   \
"         currency = CASE WHEN newer THEN cur ELSE i.currency END,"          \
"         amount_paid = greatest(i.amount_paid,"                             \
"           coalesce((o->>'amount_paid')::bigint, 0)),"                      \
"         due_at = CASE WHEN newer THEN new_due ELSE i.due_at END,"          \
"         status = CASE"                                                     \
"           WHEN i.status = 'paid' THEN i.status"                            \
"           WHEN i.status = 'void' THEN i.status"                            \
"           WHEN p_status = 'open' AND i.status <> 'draft' THEN i.status"    \
"           ELSE p_status END,"                                              \
"         source_version = greatest(i.source_version, p_version),"           \
"         updated_at = clock_timestamp()"                                    \
"   WHERE i.id = invoice_id RETURNING i.status INTO status; "               \
"  moved := newer AND old_due IS DISTINCT FROM new_due; "                    \
"END $fn$;"                                                                  \
                                                                             \
"CREATE FUNCTION echelon_stripe_customer(p_account text, o jsonb,"           \
"    prev jsonb, p_version bigint, p_event text) RETURNS void "              \
"LANGUAGE plpgsql AS $fn$ "                                                  \
"DECLARE c contacts; addr jsonb; "                                           \
"BEGIN "                                                                     \
"  IF jsonb_typeof(o) IS DISTINCT FROM 'object' OR o->>'id' IS NULL"        \
"     OR length(o->>'id') > 255 THEN "                                       \
"    RAISE EXCEPTION 'event data.object is not a customer'"                  \
"      USING ERRCODE = '22023'; "                                            \
"  END IF; "                                                                 \
"  addr := CASE WHEN jsonb_typeof(o->'address') = 'object'"                  \
"               THEN o->'address' END; "                                     \
"  SELECT * INTO c FROM contacts"                                            \
"   WHERE account_id = p_account AND external_id = o->>'id' FOR UPDATE; "    \
"  IF c.id IS NULL THEN "                                                    \
"    INSERT INTO contacts (account_id, external_id, name, email, phone,"     \
"                          address, source_version)"                         \
"    VALUES (p_account, o->>'id', o->>'name', o->>'email', o->>'phone',"     \
"            addr, p_version); "                                             \
"    RETURN; "                                                               \
"  END IF; "                                                                 \
"  IF p_version < c.source_version THEN RETURN; END IF; "                    \
"  UPDATE contacts SET name = left(o->>'name', 200),"                        \
"         email = echelon_email(o->>'email'),"                               \
"         phone = left(o->>'phone', 32), address = addr,"                    \
"         source_version = p_version, updated_at = clock_timestamp()"        \
"   WHERE id = c.id; "                                                       \
"  IF jsonb_typeof(prev) = 'object'"                                         \
"     AND prev ?| ARRAY['name', 'email', 'phone', 'address'] THEN "          \
"    PERFORM echelon_details_changed(p_account, c.id, p_event); "            \
"  END IF; "                                                                 \
"END $fn$;"                                                                  \
                                                                             \
"CREATE OR REPLACE FUNCTION echelon_stripe_event(p_account text,"            \
"    p_event jsonb) RETURNS text "                                           \
"LANGUAGE plpgsql AS $fn$ "                                                  \
"DECLARE "                                                                   \
"  v_type text := p_event->>'type'; "                                        \
"  v_created bigint := coalesce((p_event->>'created')::bigint, 0); "         \
"  o jsonb := p_event->'data'->'object'; "                                   \
"  v_outcome text := 'processed'; "                                          \
"  r record; pay text; "                                                     \
"BEGIN "                                                                     \
"  IF v_type NOT IN ('invoice.finalized', 'invoice.sent', 'invoice.updated',"\
"      'invoice.overdue', 'invoice.payment_failed', 'invoice.paid',"         \
"      'invoice.voided', 'invoice.marked_uncollectible',"                    \
"      'customer.updated') THEN "                                            \
"    v_outcome := 'ignored'; "                                               \
"  ELSIF v_type LIKE 'invoice.%'"                                            \
"        AND (jsonb_typeof(o) IS DISTINCT FROM 'object'"                     \
"             OR o->>'id' IS NULL) THEN "                                    \
"    RAISE EXCEPTION 'event data.object is not an invoice'"                  \
"      USING ERRCODE = '22023'; "                                            \
"  END IF; "                                                                 \
"  IF length(p_event->>'id') NOT BETWEEN 1 AND 255"                          \
"     OR length(v_type) > 255 THEN "                                         \
"    RAISE EXCEPTION 'the event id is empty or too long'"                    \
"      USING ERRCODE = '22023'; "                                            \
"  END IF; "                                                                 \
"  INSERT INTO events (account_id, source, event_id, type, created, outcome)"\
"  VALUES (p_account, 'stripe', p_event->>'id', v_type, v_created,"          \
"          v_outcome)"                                                       \
"  ON CONFLICT DO NOTHING; "                                                 \
"  IF NOT FOUND THEN RETURN 'duplicate'; END IF; "                           \
"  IF v_outcome = 'ignored' THEN RETURN v_outcome; END IF; "                 \
"  IF v_type = 'customer.updated' THEN "                                     \
"    PERFORM echelon_stripe_customer(p_account, o,"                          \
"        p_event->'data'->'previous_attributes', v_created,"                 \
"        p_event->>'id'); "                                                  \
"    RETURN v_outcome; "                                                     \
"  END IF; "                                                                 \
"  r := echelon_stripe_invoice(p_account, o, v_created,"                     \
"         CASE v_type WHEN 'invoice.paid' THEN 'paid'"                       \
"                     WHEN 'invoice.voided' THEN 'void'"                     \
"                     WHEN 'invoice.marked_uncollectible'"                   \
"                          THEN 'uncollectible'"                             \
"                     ELSE 'open' END); "                                    \
"  IF r.moved AND r.status = 'open' THEN "                                   \
"    PERFORM echelon_move_unpaid(r.invoice_id); "                            \
"  END IF; "                                                                 \
"  IF v_type IN ('invoice.finalized', 'invoice.sent') THEN "                 \
"    PERFORM echelon_invoice_issued(r.invoice_id); "                         \
"  ELSIF v_type = 'invoice.overdue' THEN "                                   \
"    PERFORM echelon_schedule_unpaid(r.invoice_id); "                        \
"  ELSIF v_type = 'invoice.payment_failed' THEN "                            \
"    UPDATE invoices SET payment_failures = payment_failures + 1"            \
"     WHERE id = r.invoice_id; "                                             \
"  ELSIF v_type = 'invoice.paid' AND r.status = 'paid' THEN "                \
"    INSERT INTO payments (account_id, invoice_id, amount, currency,"        \
"                          external_id)"                                     \
"    SELECT p_account, i.id, i.amount_paid, i.currency,"                     \
"           'stripe:' || i.external_id || ':paid'"                           \
"      FROM invoices i WHERE i.id = r.invoice_id"                            \
"    ON CONFLICT (account_id, external_id) DO NOTHING"                       \
"    RETURNING id INTO pay; "                                                \
"    PERFORM echelon_cancel(r.invoice_id, 'unpaid',"                         \
"                           'the invoice was paid'); "                       \
"    IF pay IS NOT NULL THEN "                                               \
"      PERFORM echelon_fanout(p_account, 'payment.received', r.contact_id,"  \
"                             r.invoice_id, 'payment:' || pay); "            \
"    END IF; "                                                               \
"  ELSIF v_type = 'invoice.voided' AND r.status = 'void' THEN "              \
"    PERFORM echelon_cancel(r.invoice_id, 'all',"                            \
"                           'the invoice was voided'); "                     \
"  ELSIF v_type = 'invoice.marked_uncollectible'"                            \
"        AND r.status = 'uncollectible' THEN "                               \
"    PERFORM echelon_cancel(r.invoice_id, 'unpaid',"                         \
"                           'the invoice was marked uncollectible'); "       \
"  END IF; "                                                                 \
"  RETURN v_outcome; "                                                       \
"END $fn$;"                                                                  \
                                                                             \
"CREATE FUNCTION echelon_invoice_create(p_account text, p_contact text,"     \
"    p_number text, p_amount bigint, p_currency text, p_due timestamptz,"    \
"    p_url text, p_external text) RETURNS SETOF invoices "                   \
"LANGUAGE plpgsql AS $fn$ "                                                  \
"DECLARE i invoices; "                                                       \
"BEGIN "                                                                     \
"  INSERT INTO invoices (account_id, contact_id, number, amount_due,"        \
"                        currency, due_at, url, external_id)"                \
"  SELECT p_account, c.id, p_number, p_amount, p_currency, p_due, p_url,"    \
"         p_external"                                                        \
"    FROM contacts c WHERE c.account_id = p_account AND c.id = p_contact"    \
"  RETURNING * INTO i; "                                                     \
"  IF i.id IS NULL THEN RETURN; END IF; "                                    \
"  PERFORM echelon_invoice_issued(i.id); "                                   \
"  RETURN NEXT i; "                                                          \
"END $fn$;"                                                                  \
                                                                             \
"CREATE FUNCTION echelon_invoice_void(p_account text, p_invoice text,"      \
"    OUT inv invoices, OUT voided boolean) "                                 \
"LANGUAGE plpgsql AS $fn$ "                                                  \
"BEGIN "                                                                     \
"  UPDATE invoices SET status = 'void', updated_at = clock_timestamp()"      \
"   WHERE account_id = p_account AND id = p_invoice"                         \
"     AND status IN ('draft', 'open', 'uncollectible')"                      \
"  RETURNING * INTO inv; "                                                   \
"  voided := inv.id IS NOT NULL; "                                           \
"  IF voided THEN "                                                          \
"    PERFORM echelon_cancel(inv.id, 'all', 'the invoice was voided'); "      \
"  ELSE "                                                                    \
"    SELECT * INTO inv FROM invoices"                                        \
"     WHERE account_id = p_account AND id = p_invoice; "                     \
"  END IF; "                                                                 \
"END $fn$;"                                                                  \
                                                                             \
"CREATE FUNCTION echelon_contact_patch(p_account text, p_contact text,"      \
"    p jsonb, OUT c contacts, OUT changed boolean) "                         \
"LANGUAGE plpgsql AS $fn$ "                                                  \
"DECLARE old contacts; "                                                     \
"BEGIN "                                                                     \
"  SELECT * INTO old FROM contacts"                                          \
"   WHERE account_id = p_account AND id = p_contact FOR UPDATE; "            \
"  IF old.id IS NULL THEN RETURN; END IF; "                                  \
"  IF p ? 'timezone' AND NOT EXISTS (SELECT 1 FROM pg_timezone_names"        \
"                                    WHERE name = p->>'timezone') THEN "     \
"    RAISE EXCEPTION 'unknown time zone' USING ERRCODE = '22023'; "          \
"  END IF; "                                                                 \
"  UPDATE contacts SET"                                                      \
"         name = CASE WHEN p ? 'name' THEN p->>'name' ELSE name END,"        \
"         email = CASE WHEN p ? 'email' THEN p->>'email' ELSE email END,"    \
"         phone = CASE WHEN p ? 'phone' THEN p->>'phone' ELSE phone END,"    \
"         whatsapp = CASE WHEN p ? 'whatsapp' THEN p->>'whatsapp'"           \
"                         ELSE whatsapp END,"                                \
"         address = CASE WHEN p ? 'address' THEN"                            \
"                     CASE WHEN jsonb_typeof(p->'address') = 'null'"         \
"                          THEN NULL ELSE p->'address' END"                  \
"                   ELSE address END,"                                       \
"         timezone = coalesce(p->>'timezone', timezone),"                    \
"         locale = CASE WHEN p ? 'locale' THEN p->>'locale'"                 \
"                       ELSE locale END,"                                    \
"         updated_at = clock_timestamp()"                                    \
"   WHERE id = old.id RETURNING * INTO c; "                                  \
"  changed := (c.name, c.email, c.phone, c.address)"                         \
"              IS DISTINCT FROM (old.name, old.email, old.phone,"            \
"                                old.address); "                             \
"  IF changed THEN "                                                         \
"    PERFORM echelon_details_changed(p_account, c.id,"                       \
"        (extract(epoch FROM c.updated_at) * 1000000)::bigint::text); "      \
"  END IF; "                                                                 \
"END $fn$;"                                                                  \
                                                                             \
"INSERT INTO echelon_schema (version) VALUES (2);"



/*
 * version 3: provider status callbacks.  A status may arrive before the
 * provider's answer to our request is written down: every status is kept,
 * and finishing a delivery applies the ones already there.  Statuses only
 * move forward: sent, then delivered or failed.
 */

#define NGX_ECHELON_SCHEMA_3                                                 \
"CREATE TABLE provider_statuses ("                                           \
"  account_id text NOT NULL REFERENCES accounts ON DELETE CASCADE,"          \
"  provider_id text NOT NULL,"                                               \
"  status text NOT NULL,"                                                    \
"  reason text,"                                                             \
"  received_at timestamptz NOT NULL DEFAULT now(),"                          \
"  PRIMARY KEY (account_id, provider_id, status));"                          \
"CREATE INDEX deliveries_provider ON deliveries (provider_id)"               \
"  WHERE provider_id IS NOT NULL;"                                           \
                                                                             \
"CREATE FUNCTION echelon_apply_status(p_account text, p_provider text,"      \
"    p_status text, p_reason text) RETURNS integer "                         \
"LANGUAGE plpgsql AS $fn$ "                                                  \
"DECLARE n integer; "                                                        \
"BEGIN "                                                                     \
"  UPDATE deliveries SET status = p_status,"                                 \
"         delivered_at = CASE WHEN p_status = 'delivered' THEN now()"        \
"                             ELSE delivered_at END,"                        \
"         reason = CASE WHEN p_status = 'failed' THEN p_reason"              \
"                       ELSE reason END,"                                    \
"         updated_at = now()"                                                \
"   WHERE account_id = p_account AND provider_id = p_provider"               \
"     AND status = 'sent' AND p_status IN ('delivered', 'failed'); "         \
"  GET DIAGNOSTICS n = ROW_COUNT; "                                          \
"  RETURN n; "                                                               \
"END $fn$;"                                                                  \
                                                                             \
"CREATE FUNCTION echelon_provider_statuses(p_account text, p jsonb)"         \
"    RETURNS integer "                                                       \
"LANGUAGE plpgsql AS $fn$ "                                                  \
"DECLARE s record; n integer := 0; "                                         \
"BEGIN "                                                                     \
"  FOR s IN SELECT * FROM jsonb_to_recordset(p)"                             \
"             AS x(id text, status text, reason text) LOOP "                 \
"    IF s.id IS NULL OR length(s.id) > 255 OR s.status IS NULL THEN "        \
"      CONTINUE; "                                                           \
"    END IF; "                                                               \
"    INSERT INTO provider_statuses (account_id, provider_id, status, reason)"\
"    VALUES (p_account, s.id, s.status, left(s.reason, 500))"                \
"    ON CONFLICT DO NOTHING; "                                               \
"    n := n + echelon_apply_status(p_account, s.id, s.status, s.reason); "   \
"  END LOOP; "                                                               \
"  RETURN n; "                                                               \
"END $fn$;"                                                                  \
                                                                             \
/* a claim's result; a stale claim (another token) changes nothing */       \
"CREATE FUNCTION echelon_finish(p_id text, p_token bigint, p_status text,"   \
"    p_reason text, p_address text, p_subject text, p_body text,"            \
"    p_retry integer, p_outcome text, p_provider text) RETURNS boolean "     \
"LANGUAGE plpgsql AS $fn$ "                                                  \
"DECLARE d deliveries; s record; "                                           \
"BEGIN "                                                                     \
"  UPDATE deliveries SET"                                                    \
"         status = CASE WHEN p_retry IS NULL THEN p_status"                  \
"                       ELSE 'scheduled' END,"                               \
"         due_at = CASE WHEN p_retry IS NULL THEN due_at"                    \
"                  ELSE now() + make_interval(secs => p_retry) END,"         \
"         reason = p_reason,"                                                \
"         address = coalesce(p_address, address),"                           \
"         subject = coalesce(p_subject, subject),"                           \
"         body = coalesce(p_body, body),"                                    \
"         provider_id = coalesce(p_provider, provider_id),"                  \
"         attempts = attempts + CASE WHEN p_outcome IS NULL THEN 0"          \
"                                    ELSE 1 END,"                            \
"         sent_at = CASE WHEN p_status = 'sent' THEN now()"                  \
"                        ELSE sent_at END,"                                  \
"         lease_until = NULL, claim_token = NULL, updated_at = now()"        \
"   WHERE id = p_id AND claim_token = p_token"                               \
"  RETURNING * INTO d; "                                                     \
"  IF d.id IS NULL THEN RETURN false; END IF; "                              \
"  IF p_outcome IS NOT NULL THEN "                                           \
"    INSERT INTO delivery_attempts (delivery_id, attempt, outcome, error)"   \
"    VALUES (d.id, d.attempts, p_outcome, p_reason); "                       \
"  END IF; "                                                                 \
"  IF p_provider IS NOT NULL AND d.status = 'sent' THEN "                    \
"    FOR s IN SELECT status, reason FROM provider_statuses"                  \
"              WHERE account_id = d.account_id AND provider_id = p_provider" \
"              ORDER BY received_at LOOP "                                   \
"      PERFORM echelon_apply_status(d.account_id, p_provider, s.status,"     \
"                                   s.reason); "                             \
"    END LOOP; "                                                             \
"  END IF; "                                                                 \
"  RETURN true; "                                                            \
"END $fn$;"                                                                  \
                                                                             \
"INSERT INTO echelon_schema (version) VALUES (3);"


/* version 4: the activity feed's one shape, for every list of it */

#define NGX_ECHELON_SCHEMA_4                                                 \
"CREATE VIEW echelon_feed AS "                                               \
"SELECT d.id, d.account_id, d.employee_id, d.trigger_id, d.event,"           \
"       d.channel, d.contact_id, c.name AS contact_name,"                    \
"       coalesce(d.address, CASE d.channel WHEN 'email' THEN c.email"        \
"                WHEN 'sms' THEN c.phone ELSE c.whatsapp END) AS address,"   \
"       d.invoice_id, d.status, d.reason, d.attempts,"                       \
"       echelon_time(d.due_at) AS due_at,"                                   \
"       echelon_time(d.sent_at) AS sent_at,"                                 \
"       echelon_time(d.delivered_at) AS delivered_at,"                       \
"       echelon_time(d.created_at) AS created_at,"                           \
"       d.created_at AS created, d.subject, d.body"                          \
"  FROM deliveries d JOIN contacts c ON c.id = d.contact_id;"                \
                                                                             \
"INSERT INTO echelon_schema (version) VALUES (4);"


/*
 * version 5: a reminder trigger added later covers the invoices already
 * open, for the reminder times still ahead (none is sent for a time past)
 */

#define NGX_ECHELON_SCHEMA_5                                                 \
"CREATE FUNCTION echelon_backfill(t triggers) RETURNS integer "              \
"LANGUAGE plpgsql AS $fn$ "                                                  \
"DECLARE n integer; "                                                        \
"BEGIN "                                                                     \
"  IF t.event NOT IN ('invoice.overdue', 'invoice.unpaid_repeated') THEN "   \
"    RETURN 0; "                                                             \
"  END IF; "                                                                 \
"  INSERT INTO deliveries (account_id, employee_id, trigger_id, event,"      \
"                          channel, contact_id, invoice_id, occurrence,"     \
"                          seq, due_at)"                                     \
"  SELECT t.account_id, t.employee_id, t.id, t.event, t.channel,"            \
"         i.contact_id, i.id, i.id || '#' || s, s,"                          \
"         echelon_due(t, i.due_at, s)"                                       \
"    FROM invoices i"                                                        \
"    CROSS JOIN LATERAL generate_series("                                    \
"      CASE t.event WHEN 'invoice.overdue' THEN 0 ELSE 1 END,"               \
"      CASE t.event WHEN 'invoice.overdue' THEN 0"                           \
"                   ELSE coalesce(t.max_times, 0) END) s"                    \
"   WHERE i.account_id = t.account_id AND i.status = 'open'"                 \
"     AND i.due_at IS NOT NULL"                                              \
"     AND echelon_due(t, i.due_at, s) > now()"                               \
"  ON CONFLICT (trigger_id, occurrence) DO NOTHING; "                        \
"  GET DIAGNOSTICS n = ROW_COUNT; "                                          \
"  RETURN n; "                                                               \
"END $fn$;"                                                                  \
                                                                             \
"INSERT INTO echelon_schema (version) VALUES (5);"


/*
 * version 6: a payment confirmation "unless paid" could never go out; the
 * API refuses it, the table too (NOT VALID: rows of before stay as they are)
 */

#define NGX_ECHELON_SCHEMA_6                                                 \
"ALTER TABLE triggers ADD CONSTRAINT triggers_condition_met"                 \
"  CHECK (NOT (event = 'payment.received' AND unless_paid)) NOT VALID;"      \
                                                                             \
"INSERT INTO echelon_schema (version) VALUES (6);"


ngx_echelon_migration_t  ngx_echelon_migrations[] = {
    { 1, NGX_ECHELON_SCHEMA_1 NGX_ECHELON_SCHEMA_1_FUNCTIONS },
    { 2, NGX_ECHELON_SCHEMA_2 },
    { 3, NGX_ECHELON_SCHEMA_3 },
    { 4, NGX_ECHELON_SCHEMA_4 },
    { 5, NGX_ECHELON_SCHEMA_5 },
    { 6, NGX_ECHELON_SCHEMA_6 },
    { 0, NULL }
};


ngx_echelon_sql_t  ngx_echelon_sql[] = {

    /* NGX_ECHELON_SQL_AUTH: $1 api key hash */
    { "echelon_auth",
      "SELECT id, name, plan, echelon_time(created_at) AS created_at "
      "FROM accounts WHERE api_key_hash = $1", 1 },

    /* NGX_ECHELON_SQL_ACCOUNT_CREATE: $1 name, $2 plan, $3 key hash */
    { "echelon_account_create",
      "INSERT INTO accounts (name, plan, api_key_hash) VALUES ($1, $2, $3) "
      "RETURNING id, name, plan, echelon_time(created_at) AS created_at", 3 },

    /* NGX_ECHELON_SQL_ACCOUNT_GET: $1 account */
    { "echelon_account_get",
      "SELECT id, name, plan, echelon_time(created_at) AS created_at "
      "FROM accounts WHERE id = $1", 1 },

    /* NGX_ECHELON_SQL_STRIPE_PUT: $1 account, $2 JSON array of secrets */
    { "echelon_stripe_put",
      "INSERT INTO stripe_integrations AS s (account_id, signing_secrets) "
      "VALUES ($1, ARRAY(SELECT jsonb_array_elements_text($2::jsonb))) "
      "ON CONFLICT (account_id) DO UPDATE "
      "SET signing_secrets = EXCLUDED.signing_secrets, updated_at = now() "
      "RETURNING cardinality(s.signing_secrets) AS secrets, "
      "echelon_time(s.updated_at) AS updated_at", 2 },

    /* NGX_ECHELON_SQL_STRIPE_SECRETS: $1 account */
    { "echelon_stripe_secrets",
      "SELECT unnest(signing_secrets) AS secret "
      "FROM stripe_integrations WHERE account_id = $1", 1 },

    /* NGX_ECHELON_SQL_STRIPE_EVENT: $1 account, $2 event */
    { "echelon_stripe_event",
      "SELECT echelon_stripe_event($1, $2::jsonb) AS outcome", 2 },

    /* NGX_ECHELON_SQL_CHANNEL_PUT: $1 account, $2 kind, $3 sender */
    { "echelon_channel_put",
      "INSERT INTO channels AS c (account_id, kind, sender) "
      "VALUES ($1, $2, $3) ON CONFLICT (account_id, kind) DO UPDATE "
      "SET sender = EXCLUDED.sender, updated_at = now() "
      "RETURNING c.kind, c.sender, echelon_time(c.updated_at) AS updated_at",
      3 },

    /* NGX_ECHELON_SQL_CHANNEL_LIST: $1 account */
    { "echelon_channel_list",
      "SELECT kind, sender, echelon_time(updated_at) AS updated_at "
      "FROM channels WHERE account_id = $1", 1 },

    /*
     * NGX_ECHELON_SQL_EMPLOYEE_CREATE: $1 account, $2 name, $3 role,
     * $4 tone, $5 JSON array of channels; a channel other than email that
     * the account has not connected comes back as missing_channel
     */
    { "echelon_employee_create",
      "WITH missing AS ("
      "  SELECT ch FROM jsonb_array_elements_text($5::jsonb) ch"
      "   WHERE ch <> 'email' AND NOT EXISTS ("
      "     SELECT 1 FROM channels WHERE account_id = $1 AND kind = ch)"
      "   LIMIT 1), "
      "ins AS ("
      "  INSERT INTO employees (account_id, name, role, tone, channels)"
      "  SELECT $1, $2, $3, $4,"
      "         ARRAY(SELECT jsonb_array_elements_text($5::jsonb))"
      "   WHERE NOT EXISTS (SELECT 1 FROM missing)"
      "  RETURNING *) "
      "SELECT (SELECT ch FROM missing) AS missing_channel, ins.id, ins.name,"
      "       ins.role, ins.tone, array_to_json(ins.channels) AS channels,"
      "       ins.enabled, echelon_time(ins.created_at) AS created_at "
      "  FROM (SELECT 1) one LEFT JOIN ins ON true", 5 },

    /* NGX_ECHELON_SQL_EMPLOYEE_GET: $1 account, $2 employee */
    { "echelon_employee_get",
      "SELECT id, name, role, tone, array_to_json(channels) AS channels,"
      "       enabled, echelon_time(created_at) AS created_at "
      "  FROM employees "
      " WHERE account_id = $1 AND id = $2 AND deleted_at IS NULL", 2 },

    /* NGX_ECHELON_SQL_EMPLOYEE_LIST: $1 account, $2 cursor, $3 limit */
    { "echelon_employee_list",
      "SELECT id, name, role, tone, array_to_json(channels) AS channels,"
      "       enabled, echelon_time(created_at) AS created_at "
      "  FROM employees "
      " WHERE account_id = $1 AND deleted_at IS NULL"
      "   AND ($2::text IS NULL OR (created_at, id) < ("
      "        SELECT created_at, id FROM employees"
      "         WHERE account_id = $1 AND id = $2))"
      " ORDER BY created_at DESC, id DESC LIMIT $3", 3 },

    /*
     * NGX_ECHELON_SQL_TRIGGER_CREATE: $1 account, $2 employee, $3 event,
     * $4 channel, $5 subject, $6 body, $7 delay seconds, $8 unless paid,
     * $9 every days, $10 max times; a reminder trigger is
     * also scheduled for the invoices already open (echelon_backfill)
     */
    { "echelon_trigger_create",
      "WITH e AS ("
      "  SELECT id, channels FROM employees"
      "   WHERE account_id = $1 AND id = $2 AND deleted_at IS NULL), "
      "ins AS ("
      "  INSERT INTO triggers (account_id, employee_id, event, channel,"
      "                        subject, body, delay_seconds, unless_paid,"
      "                        every_days, max_times)"
      "  SELECT $1, e.id, $3, $4, $5, $6, $7, $8, $9, $10 FROM e"
      "   WHERE $4 = ANY (e.channels)"
      "  RETURNING *), "
      "bf AS (SELECT echelon_backfill(ROW(ins.*)::triggers) AS n FROM ins) "
      "SELECT (SELECT count(*) FROM e) AS employees, ins.id, ins.employee_id,"
      "       (SELECT n FROM bf) AS backfilled,"
      "       ins.event, ins.channel, ins.subject, ins.body,"
      "       ins.delay_seconds, ins.unless_paid, ins.every_days,"
      "       ins.max_times, echelon_time(ins.created_at) AS created_at "
      "  FROM (SELECT 1) one LEFT JOIN ins ON true", 10 },

    /* NGX_ECHELON_SQL_TRIGGER_LIST: $1 account, $2 employee */
    { "echelon_trigger_list",
      "SELECT id, employee_id, event, channel, subject, body, delay_seconds,"
      "       unless_paid, every_days, max_times,"
      "       echelon_time(created_at) AS created_at "
      "  FROM triggers "
      " WHERE account_id = $1 AND employee_id = $2 AND deleted_at IS NULL"
      " ORDER BY created_at DESC, id DESC", 2 },

    /*
     * NGX_ECHELON_SQL_CONTACT_CREATE: $1 account, $2 name, $3 email,
     * $4 phone, $5 whatsapp, $6 timezone, $7 locale, $8 external id
     */
    { "echelon_contact_create",
      "INSERT INTO contacts (account_id, name, email, phone, whatsapp,"
      "                      timezone, locale, external_id) "
      "SELECT $1, $2, $3, $4, $5, coalesce($6, 'UTC'), $7, $8"
      " WHERE $6::text IS NULL"
      "    OR EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $6) "
      "RETURNING id, name, email, phone, whatsapp, timezone, locale,"
      "          external_id, echelon_time(created_at) AS created_at", 8 },

    /* NGX_ECHELON_SQL_CONTACT_GET: $1 account, $2 contact */
    { "echelon_contact_get",
      "SELECT id, name, email, phone, whatsapp, timezone, locale,"
      "       external_id, echelon_time(created_at) AS created_at "
      "  FROM contacts WHERE account_id = $1 AND id = $2", 2 },

    /*
     * NGX_ECHELON_SQL_ACTIVITY: $1 api key hash, $2 employee, $3 status,
     * $4 channel, $5 contact, $6 since, $7 cursor, $8 limit; no row: no
     * account has the key; "owner" null: no such employee in the account;
     * "id" null: an empty page
     */
    { "echelon_activity",
      "SELECT e.id AS owner, f.id, f.trigger_id, f.event, f.channel,"
      "       f.contact_id, f.contact_name, f.address, f.invoice_id,"
      "       f.status, f.reason, f.attempts, f.due_at, f.sent_at,"
      "       f.delivered_at, f.created_at, f.subject "
      "  FROM accounts a"
      "  LEFT JOIN employees e"
      "    ON e.account_id = a.id AND e.id = $2 AND e.deleted_at IS NULL"
      "  LEFT JOIN LATERAL ("
      "    SELECT id, trigger_id, event, channel, contact_id, contact_name,"
      "           address, invoice_id, status, reason, attempts, due_at,"
      "           sent_at, delivered_at, created_at, subject, created"
      "      FROM echelon_feed"
      "     WHERE account_id = e.account_id AND employee_id = e.id"
      "       AND ($3::text IS NULL OR status = $3)"
      "       AND ($4::text IS NULL OR channel = $4)"
      "       AND ($5::text IS NULL OR contact_id = $5)"
      "       AND ($6::timestamptz IS NULL OR created >= $6)"
      "       AND ($7::text IS NULL OR (created, id) < ("
      "            SELECT created_at, id FROM deliveries"
      "             WHERE account_id = e.account_id AND id = $7))"
      "     ORDER BY created DESC, id DESC LIMIT $8) f ON true "
      " WHERE a.api_key_hash = $1"
      " ORDER BY f.created DESC, f.id DESC", 8 },

    /*
     * NGX_ECHELON_SQL_DELIVERY_GET: $1 api key hash, $2 delivery; no row:
     * no account has the key; "id" null: no such delivery in the account
     */
    { "echelon_delivery_get",
      "SELECT f.id, f.trigger_id, f.event, f.channel, f.contact_id,"
      "       f.contact_name, f.address, f.invoice_id, f.status, f.reason,"
      "       f.attempts, f.due_at, f.sent_at, f.delivered_at,"
      "       f.created_at, f.subject, f.body,"
      "       (SELECT json_agg(json_build_object('attempt', a.attempt,"
      "                'outcome', a.outcome, 'error', a.error,"
      "                'finished_at', echelon_time(a.finished_at))"
      "                ORDER BY a.attempt)"
      "          FROM delivery_attempts a WHERE a.delivery_id = f.id)"
      "         AS attempt_history "
      "  FROM accounts k"
      "  LEFT JOIN echelon_feed f ON f.account_id = k.id AND f.id = $2 "
      " WHERE k.api_key_hash = $1", 2 },

    /* NGX_ECHELON_SQL_ACCOUNT_PLAN: $1 account, $2 plan */
    { "echelon_account_plan",
      "UPDATE accounts SET plan = $2 WHERE id = $1 "
      "RETURNING id, name, plan, echelon_time(created_at) AS created_at", 2 },

    /*
     * NGX_ECHELON_SQL_EMPLOYEE_PATCH: $1 account, $2 employee, $3 name,
     * $4 tone, $5 JSON array of channels, $6 enabled; NULL keeps a field
     */
    { "echelon_employee_patch",
      "WITH missing AS ("
      "  SELECT ch FROM jsonb_array_elements_text(coalesce($5::jsonb,"
      "                 '[]')) ch"
      "   WHERE ch <> 'email' AND NOT EXISTS ("
      "     SELECT 1 FROM channels WHERE account_id = $1 AND kind = ch)"
      "   LIMIT 1), "
      "upd AS ("
      "  UPDATE employees SET name = coalesce($3, name),"
      "         tone = coalesce($4, tone),"
      "         channels = CASE WHEN $5::jsonb IS NULL THEN channels ELSE"
      "           ARRAY(SELECT jsonb_array_elements_text($5::jsonb)) END,"
      "         enabled = coalesce($6::boolean, enabled)"
      "   WHERE account_id = $1 AND id = $2 AND deleted_at IS NULL"
      "     AND NOT EXISTS (SELECT 1 FROM missing)"
      "  RETURNING *) "
      "SELECT (SELECT ch FROM missing) AS missing_channel,"
      "       (SELECT count(*) FROM employees WHERE account_id = $1"
      "           AND id = $2 AND deleted_at IS NULL) AS employees,"
      "       upd.id, upd.name, upd.role, upd.tone,"
      "       array_to_json(upd.channels) AS channels, upd.enabled,"
      "       echelon_time(upd.created_at) AS created_at "
      "  FROM (SELECT 1) one LEFT JOIN upd ON true", 6 },

    /* NGX_ECHELON_SQL_EMPLOYEE_DELETE: $1 account, $2 employee */
    { "echelon_employee_delete",
      "WITH e AS ("
      "  UPDATE employees SET deleted_at = now(), enabled = false"
      "   WHERE account_id = $1 AND id = $2 AND deleted_at IS NULL"
      "  RETURNING id), "
      "c AS ("
      "  UPDATE deliveries SET status = 'cancelled',"
      "         reason = 'the employee was deleted', updated_at = now()"
      "   WHERE employee_id IN (SELECT id FROM e) AND status = 'scheduled'"
      "  RETURNING id) "
      "SELECT id, (SELECT count(*) FROM c) AS cancelled FROM e", 2 },

    /* NGX_ECHELON_SQL_TRIGGER_GET: $1 account, $2 trigger */
    { "echelon_trigger_get",
      "SELECT id, employee_id, event, channel, subject, body, delay_seconds,"
      "       unless_paid, every_days, max_times,"
      "       echelon_time(created_at) AS created_at "
      "  FROM triggers "
      " WHERE account_id = $1 AND id = $2 AND deleted_at IS NULL", 2 },

    /*
     * NGX_ECHELON_SQL_TRIGGER_PATCH: $1 account, $2 trigger, $3 subject,
     * $4 body, $5 delay seconds, $6 unless paid, $7 every days,
     * $8 max times; NULL keeps a field
     */
    { "echelon_trigger_patch",
      "UPDATE triggers SET subject = coalesce($3, subject),"
      "       body = coalesce($4, body),"
      "       delay_seconds = coalesce($5::integer, delay_seconds),"
      "       unless_paid = coalesce($6::boolean, unless_paid),"
      "       every_days = coalesce($7::integer, every_days),"
      "       max_times = coalesce($8::integer, max_times) "
      " WHERE account_id = $1 AND id = $2 AND deleted_at IS NULL "
      "RETURNING id, employee_id, event, channel, subject, body,"
      "          delay_seconds, unless_paid, every_days, max_times,"
      "          echelon_time(created_at) AS created_at", 8 },

    /* NGX_ECHELON_SQL_TRIGGER_DELETE: $1 account, $2 trigger */
    { "echelon_trigger_delete",
      "WITH t AS ("
      "  UPDATE triggers SET deleted_at = now()"
      "   WHERE account_id = $1 AND id = $2 AND deleted_at IS NULL"
      "  RETURNING id), "
      "c AS ("
      "  UPDATE deliveries SET status = 'cancelled',"
      "         reason = 'the trigger was deleted', updated_at = now()"
      "   WHERE trigger_id IN (SELECT id FROM t) AND status = 'scheduled'"
      "  RETURNING id) "
      "SELECT id, (SELECT count(*) FROM c) AS cancelled FROM t", 2 },

    /* NGX_ECHELON_SQL_CONTACT_PATCH: $1 account, $2 contact, $3 patch */
    { "echelon_contact_patch",
      "SELECT (r.c).id, (r.c).name, (r.c).email, (r.c).phone,"
      "       (r.c).whatsapp, (r.c).address::text AS address,"
      "       (r.c).timezone, (r.c).locale, (r.c).external_id,"
      "       echelon_time((r.c).created_at) AS created_at, r.changed "
      "  FROM echelon_contact_patch($1, $2, $3::jsonb) r", 3 },

    /*
     * NGX_ECHELON_SQL_CONTACT_ACTIVITY: $1 api key hash, $2 contact,
     * $3 status, $4 channel, $5 since, $6 cursor, $7 limit; no row, "owner"
     * null, "id" null: as for NGX_ECHELON_SQL_ACTIVITY
     */
    { "echelon_contact_activity",
      "SELECT c.id AS owner, f.id, f.trigger_id, f.event, f.channel,"
      "       f.contact_id, f.contact_name, f.address, f.invoice_id,"
      "       f.status, f.reason, f.attempts, f.due_at, f.sent_at,"
      "       f.delivered_at, f.created_at, f.subject "
      "  FROM accounts a"
      "  LEFT JOIN contacts c ON c.account_id = a.id AND c.id = $2"
      "  LEFT JOIN LATERAL ("
      "    SELECT id, trigger_id, event, channel, contact_id, contact_name,"
      "           address, invoice_id, status, reason, attempts, due_at,"
      "           sent_at, delivered_at, created_at, subject, created"
      "      FROM echelon_feed"
      "     WHERE account_id = c.account_id AND contact_id = c.id"
      "       AND ($3::text IS NULL OR status = $3)"
      "       AND ($4::text IS NULL OR channel = $4)"
      "       AND ($5::timestamptz IS NULL OR created >= $5)"
      "       AND ($6::text IS NULL OR (created, id) < ("
      "            SELECT created_at, id FROM deliveries"
      "             WHERE account_id = c.account_id AND id = $6))"
      "     ORDER BY created DESC, id DESC LIMIT $7) f ON true "
      " WHERE a.api_key_hash = $1"
      " ORDER BY f.created DESC, f.id DESC", 7 },

    /*
     * NGX_ECHELON_SQL_INVOICE_CREATE: $1 account, $2 contact, $3 number,
     * $4 amount due, $5 currency, $6 due date, $7 url, $8 external id
     */
    { "echelon_invoice_create",
      "SELECT id, contact_id, number, amount_due, amount_paid, currency,"
      "       echelon_time(due_at) AS due_date, url, status, external_id,"
      "       echelon_time(created_at) AS created_at "
      "  FROM echelon_invoice_create($1, $2, $3, $4, $5, $6, $7, $8)", 8 },

    /* NGX_ECHELON_SQL_INVOICE_GET: $1 account, $2 invoice */
    { "echelon_invoice_get",
      "SELECT id, contact_id, number, amount_due, amount_paid, currency,"
      "       echelon_time(due_at) AS due_date, url, status, external_id,"
      "       echelon_time(created_at) AS created_at "
      "  FROM invoices WHERE account_id = $1 AND id = $2", 2 },

    /* NGX_ECHELON_SQL_INVOICE_VOID: $1 account, $2 invoice */
    { "echelon_invoice_void",
      "SELECT (r.inv).id, (r.inv).contact_id, (r.inv).number,"
      "       (r.inv).amount_due, (r.inv).amount_paid, (r.inv).currency,"
      "       echelon_time((r.inv).due_at) AS due_date, (r.inv).url,"
      "       (r.inv).status, (r.inv).external_id,"
      "       echelon_time((r.inv).created_at) AS created_at, r.voided "
      "  FROM echelon_invoice_void($1, $2) r", 2 },

    /*
     * NGX_ECHELON_SQL_PAYMENT_CREATE: $1 account, $2 invoice, $3 amount,
     * $4 currency; a payment is recorded only on an invoice that is open
     * in that currency, else what is wrong comes back
     */
    { "echelon_payment_create",
      "WITH i AS ("
      "  SELECT id, status, currency FROM invoices"
      "   WHERE account_id = $1 AND id = $2 FOR UPDATE) "
      "SELECT i.status AS prior_status, i.currency,"
      "       (p.r).payment_id, (p.r).invoice_status, (p.r).amount_paid "
      "  FROM i LEFT JOIN LATERAL ("
      "    SELECT echelon_payment($1, i.id, $3::bigint, NULL) AS r"
      "     WHERE i.status IN ('draft', 'open', 'uncollectible')"
      "       AND i.currency = $4) p ON true", 4 },

    /*
     * NGX_ECHELON_SQL_IDEMPOTENCY_BEGIN: $1 account, $2 key, $3 request
     * hash; inserted is true for the first request with the key, else the
     * stored answer (status NULL while the first is still running)
     */
    { "echelon_idempotency_begin",
      "WITH ins AS ("
      "  INSERT INTO idempotency_keys (account_id, key, request_hash)"
      "  VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING key) "
      "SELECT EXISTS (SELECT 1 FROM ins) AS inserted, k.request_hash,"
      "       k.status, k.response "
      "  FROM (SELECT 1) one LEFT JOIN idempotency_keys k"
      "    ON k.account_id = $1 AND k.key = $2", 3 },

    /*
     * NGX_ECHELON_SQL_IDEMPOTENCY_END: $1 account, $2 key, $3 status,
     * $4 response; NULL status forgets the key (the request failed)
     */
    { "echelon_idempotency_end",
      "WITH del AS ("
      "  DELETE FROM idempotency_keys"
      "   WHERE account_id = $1 AND key = $2 AND $3::integer IS NULL) "
      "UPDATE idempotency_keys SET status = $3::integer, response = $4"
      " WHERE account_id = $1 AND key = $2 AND $3::integer IS NOT NULL", 4 },

    /*
     * NGX_ECHELON_SQL_RESCUE: $1 max attempts; claims whose lease ran out
     * go back, each counted as an attempt whose result is unknown, so that
     * a delivery whose result can never be stored ends after the last
     */
    { "echelon_rescue",
      "WITH r AS ("
      "  UPDATE deliveries SET attempts = attempts + 1,"
      "         status = CASE WHEN attempts + 1 >= $1::integer"
      "                       THEN 'failed' ELSE 'scheduled' END,"
      "         reason = CASE WHEN attempts + 1 >= $1::integer"
      "                       THEN 'gave up after ' || (attempts + 1)"
      "                            || ' attempts: the result of the last'"
      "                            || ' was never stored'"
      "                       ELSE reason END,"
      "         lease_until = NULL, claim_token = NULL, updated_at = now()"
      "   WHERE id IN (SELECT id FROM deliveries"
      "                 WHERE status = 'sending' AND lease_until < now()"
      "                 LIMIT 1000 FOR UPDATE SKIP LOCKED)"
      "  RETURNING id, attempts) "
      "INSERT INTO delivery_attempts (delivery_id, attempt, outcome, error) "
      "SELECT id, attempts, 'transient',"
      "       'its lease ran out before its result was stored' FROM r "
      "ON CONFLICT DO NOTHING", 1 },

    /*
     * NGX_ECHELON_SQL_CLAIM: $1 batch, $2 lease seconds; returns each
     * claimed delivery with what its message needs, as of now
     */
    { "echelon_claim",
      "WITH due AS ("
      "  SELECT d.id FROM deliveries d"
      "    JOIN employees e ON e.id = d.employee_id"
      "   WHERE d.status = 'scheduled' AND d.due_at <= now() AND e.enabled"
      "   ORDER BY d.due_at LIMIT $1"
      "   FOR UPDATE OF d SKIP LOCKED), "
      "claimed AS ("
      "  UPDATE deliveries d SET status = 'sending',"
      "         claim_token = nextval('echelon_claim_seq'),"
      "         lease_until = now() + make_interval(secs => $2),"
      "         updated_at = now()"
      "    FROM due WHERE d.id = due.id"
      "  RETURNING d.*) "
      "SELECT d.id, d.claim_token, d.attempts, d.channel, d.event,"
      "       d.account_id,"
      "       c.name AS contact_name, c.email, c.phone, c.whatsapp,"
      "       i.id AS invoice_id, i.number, i.amount_due, i.currency,"
      "       to_char(i.due_at AT TIME ZONE c.timezone, 'FMMonth FMDD, YYYY')"
      "         AS due_date,"
      "       i.url, i.status AS invoice_status,"
      "       t.subject AS template_subject, t.body AS template_body,"
      "       t.unless_paid, t.deleted_at IS NOT NULL AS trigger_deleted,"
      "       e.name AS employee_name, e.tone,"
      "       e.deleted_at IS NOT NULL AS employee_deleted,"
      "       d.channel = ANY (e.channels) AS channel_enabled,"
      "       a.name AS account_name, a.plan, ch.sender "
      "  FROM claimed d"
      "  JOIN contacts c ON c.id = d.contact_id"
      "  JOIN triggers t ON t.id = d.trigger_id"
      "  JOIN employees e ON e.id = d.employee_id"
      "  JOIN accounts a ON a.id = d.account_id"
      "  LEFT JOIN invoices i ON i.id = d.invoice_id"
      "  LEFT JOIN channels ch"
      "         ON ch.account_id = d.account_id AND ch.kind = d.channel", 2 },

    /*
     * NGX_ECHELON_SQL_FINISH: $1 a JSON array of results, one object a
     * delivery: id, claim token, status, reason, address, subject, body,
     * retry in seconds (null when final), attempt outcome (null when
     * nothing was sent) and the provider's message id; written in one
     * transaction, in the order of the ids so that two never wait on each
     * other's rows crosswise
     */
    { "echelon_finish",
      "SELECT count(*) FILTER (WHERE echelon_finish(f.id, f.token, f.status,"
      "                 f.reason, f.address, f.subject, f.body, f.retry_in,"
      "                 f.outcome, f.provider_id)) AS finished "
      "  FROM (SELECT * FROM json_to_recordset($1::json) AS r(id text,"
      "          token bigint, status text, reason text, address text,"
      "          subject text, body text, retry_in integer, outcome text,"
      "          provider_id text)"
      "        ORDER BY id) f", 1 },

    /* NGX_ECHELON_SQL_PROVIDER_STATUS: $1 account, $2 JSON statuses */
    { "echelon_provider_status",
      "SELECT echelon_provider_statuses($1, $2::jsonb) AS applied", 2 },

    { NULL, NULL, 0 }
};
