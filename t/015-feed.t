# The activity feed as the outside reads it: the employee's feed, the
# contact's and one delivery, byte for byte, with text that is hard to
# write as JSON (quotes, backslashes, control characters, non-ASCII and
# bytes that are not UTF-8, kept by a SQL_ASCII database), and the errors in
# the order they are checked: key, then owner, then parameters.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/inc";
use Echelon;
use Test::Nginx::Socket 'no_plan';

Echelon::setup_account(plan => 'starter', encoding => 'SQL_ASCII');

our $auth = "Authorization: Bearer $ENV{TEST_NGINX_API_KEY}";
our $emp = $ENV{TEST_NGINX_EMPLOYEE};
our $acct = $ENV{TEST_NGINX_ACCOUNT};

Echelon::sql(<<"SQL" . <<'SQL');
INSERT INTO triggers (id, account_id, employee_id, event, channel, body)
  VALUES ('trg_feed_1', '$acct', '$emp', 'invoice.issued', 'email', 'x');
INSERT INTO contacts (id, account_id, name, email)
  VALUES ('ctc_feed_b', '$acct', 'Plain B', 'b\@feed.test');
INSERT INTO invoices (id, account_id, contact_id, amount_due, currency)
  VALUES ('inv_feed_1', '$acct', 'ctc_feed_b', 1250, 'usd');
SQL
INSERT INTO contacts (id, account_id, name, email)
  SELECT 'ctc_feed_a', account_id,
         E'Zo\xc3\xab "Q" \\ b\x01\x1f\x7f\t\n\r\b\f \xe2\x82\xac '
         || E'\xf0\x9f\x98\x80 ff\xff tr\xe2\x82 ov\xc0\xaf su\xed\xa0\x80 '
         || E'big\xf4\x90\x80\x80 .', 'a@feed.test'
    FROM triggers WHERE id = 'trg_feed_1';
INSERT INTO deliveries (id, account_id, employee_id, trigger_id, event,
    channel, contact_id, invoice_id, occurrence, status, reason, attempts,
    due_at, sent_at, delivered_at, created_at, address, subject, body)
  SELECT d.id, t.account_id, t.employee_id, t.id, 'invoice.issued',
         d.channel, d.contact_id, d.invoice_id, d.id, d.status, d.reason,
         d.attempts, d.due_at::timestamptz, d.sent_at::timestamptz,
         d.delivered_at::timestamptz, d.due_at::timestamptz, d.address,
         d.subject, d.body
    FROM triggers t, (VALUES
      ('dlv_feed_1', 'email', 'ctc_feed_a', 'inv_feed_1', 'failed',
       E'550 "no" \\ \x02', 2, '2026-01-02 03:04:05+00', NULL, NULL, NULL,
       E'Invoice "INV-1" caf\xc3\xa9 end\xe2\x82', E'Hi\n"A" \\ \xff'),
      ('dlv_feed_2', 'sms', 'ctc_feed_a', NULL, 'skipped',
       E'poison \xe2\xc0\x80 x', 0, '2026-01-02 03:05:00+00', NULL, NULL,
       NULL, 'S2', NULL),
      ('dlv_feed_3', 'email', 'ctc_feed_b', NULL, 'delivered', NULL, 1,
       '2026-01-02 03:06:00+00', '2026-01-02 03:06:01+00',
       '2026-01-02 03:06:02+00', E'b\tb@feed.test', E'\xf8\x90\x80\x80 x',
       NULL))
      AS d (id, channel, contact_id, invoice_id, status, reason, attempts,
            due_at, sent_at, delivered_at, address, subject, body)
   WHERE t.id = 'trg_feed_1';
INSERT INTO delivery_attempts (delivery_id, attempt, outcome, error,
    finished_at) VALUES
  ('dlv_feed_1', 1, 'transient', E'421 "busy" \\ \x03',
   '2026-01-02 03:04:06+00'),
  ('dlv_feed_1', 2, 'permanent', E'550 caf\xc3\xa9', '2026-01-02 03:04:07+00');
SQL

# an employee of the account without deliveries, and a deleted one
our $quiet = Echelon::sql("INSERT INTO employees (account_id, name, role, "
    . "tone, channels) VALUES ('$acct', 'Quiet', 'billing', 'formal', "
    . "'{email}') RETURNING id");
our $gone = Echelon::sql("INSERT INTO employees (account_id, name, role, "
    . "tone, channels, deleted_at) VALUES ('$acct', 'Gone', 'billing', "
    . "'formal', '{email}', now()) RETURNING id");

# another account with a key of its own (revoked by a block below), its
# employee and its contact
our $second_key = 'ek_feed_second_key';
our $second = Echelon::sql("INSERT INTO accounts (name, plan, api_key_hash) "
    . "VALUES ('Second', 'starter', "
    . "encode(sha256('$second_key'::bytea), 'hex')) RETURNING id");
our $second_emp = Echelon::sql("INSERT INTO employees (account_id, name, "
    . "role, tone, channels) VALUES ('$second', 'Theirs', 'billing', "
    . "'formal', '{email}') RETURNING id");
our $second_ctc = Echelon::sql("INSERT INTO contacts (account_id, name) "
    . "VALUES ('$second', 'Their Client') RETURNING id");

# the items as today's answers write them
our $R = "\xef\xbf\xbd";
our $name_a = q|Zo| . "\xc3\xab" . q| \"Q\" \\\\ b\u0001\u001F| . "\x7f"
    . q|\t\n\r\b\f | . "\xe2\x82\xac \xf0\x9f\x98\x80 ff$R tr$R$R ov$R$R "
    . "su$R$R$R big$R$R$R$R .";
our $d1 = q|{"id":"dlv_feed_1","trigger":"trg_feed_1",|
    . q|"event":"invoice.issued","channel":"email",|
    . q|"contact":{"id":"ctc_feed_a","name":"| . $name_a
    . q|","address":"a@feed.test"},"invoice":"inv_feed_1",|
    . q|"status":"failed","reason":"550 \"no\" \\\\ \u0002","attempts":2,|
    . q|"due_at":"2026-01-02T03:04:05Z","sent_at":null,|
    . q|"delivered_at":null,"created_at":"2026-01-02T03:04:05Z",|
    . q|"subject":"Invoice \"INV-1\" caf| . "\xc3\xa9 end$R$R" . q|"}|;
our $d2 = q|{"id":"dlv_feed_2","trigger":"trg_feed_1",|
    . q|"event":"invoice.issued","channel":"sms",|
    . q|"contact":{"id":"ctc_feed_a","name":"| . $name_a
    . q|","address":null},"invoice":null,"status":"skipped",|
    . q|"reason":"poison | . "$R$R$R" . q| x",|
    . q|"attempts":0,"due_at":"2026-01-02T03:05:00Z","sent_at":null,|
    . q|"delivered_at":null,"created_at":"2026-01-02T03:05:00Z",|
    . q|"subject":"S2"}|;
our $d3 = q|{"id":"dlv_feed_3","trigger":"trg_feed_1",|
    . q|"event":"invoice.issued","channel":"email",|
    . q|"contact":{"id":"ctc_feed_b","name":"Plain B",|
    . q|"address":"b\tb@feed.test"},"invoice":null,"status":"delivered",|
    . q|"reason":null,"attempts":1,"due_at":"2026-01-02T03:06:00Z",|
    . q|"sent_at":"2026-01-02T03:06:01Z",|
    . q|"delivered_at":"2026-01-02T03:06:02Z",|
    . q|"created_at":"2026-01-02T03:06:00Z",|
    . q|"subject":"| . "$R$R$R$R" . q| x"}|;

sub page {
    my ($more, $next, @items) = @_;
    return '{"data":[' . join(',', @items) . '],"has_more":' . $more
           . ',"next_cursor":' . $next . "}\n";
}

sub error {
    my ($code, $message, $field) = @_;
    return '{"error":{"code":"' . $code . '","message":"' . $message . '"'
           . (defined $field ? ',"field":"' . $field . '"' : '') . "}}\n";
}

sub no_employee {
    return error('not_found', qq|no employee with the id \\"$_[0]\\"|);
}

sub no_contact {
    return error('not_found', qq|no contact with the id \\"$_[0]\\"|);
}

our $bad_key = error('unauthorized', 'the API key is not valid');
our $bad_limit = error('invalid_parameter', '\"limit\" must be from 1 to 100',
                       'limit');
our $bad_since = error('invalid_parameter',
                       '\"since\" must be an RFC 3339 time', 'since');

Echelon::default_blocks(Echelon::http_config(extra => 'echelon_scheduler off;'),
                        <<'CONF');
    location /v1/ { echelon_api; }
CONF

no_shuffle();
no_long_string();
run_tests();

__DATA__

=== TEST 1: the employee's feed, newest first, every string as before
--- request eval
"GET /v1/employees/$main::emp/activity"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_headers
Content-Type: application/json
--- response_body eval
main::page('false', 'null', $main::d3, $main::d2, $main::d1)



=== TEST 2: a page of two says there is more and where it goes on
--- request eval
"GET /v1/employees/$main::emp/activity?limit=2"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body eval
main::page('true', '"dlv_feed_2"', $main::d3, $main::d2)



=== TEST 3: the next page from the cursor
--- request eval
"GET /v1/employees/$main::emp/activity?limit=2&cursor=dlv_feed_2"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body eval
main::page('false', 'null', $main::d1)



=== TEST 4: a page exactly full has no more
--- request eval
"GET /v1/employees/$main::emp/activity?limit=3"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body eval
main::page('false', 'null', $main::d3, $main::d2, $main::d1)



=== TEST 5: filters: status and channel, contact, since
--- request eval
["GET /v1/employees/$main::emp/activity?status=failed&channel=email",
 "GET /v1/employees/$main::emp/activity?contact=ctc_feed_b",
 "GET /v1/employees/$main::emp/activity?since=2026-01-02T03:05:00Z"]
--- more_headers eval
$main::auth
--- error_code eval
[200, 200, 200]
--- response_body eval
[main::page('false', 'null', $main::d1),
 main::page('false', 'null', $main::d3),
 main::page('false', 'null', $main::d3, $main::d2)]



=== TEST 6: an unknown cursor, or another account's, gives an empty page
--- request eval
"GET /v1/employees/$main::emp/activity?cursor=dlv_nope"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body eval
main::page('false', 'null')



=== TEST 7: an employee without deliveries has an empty page, not a 404
--- request eval
"GET /v1/employees/$main::quiet/activity"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body eval
main::page('false', 'null')



=== TEST 8: an unknown employee's feed is 404
--- request
GET /v1/employees/emp_nope/activity
--- more_headers eval
$main::auth
--- error_code: 404
--- response_body eval
main::no_employee('emp_nope')



=== TEST 9: another account's employee is 404 exactly as an unknown one
--- request eval
"GET /v1/employees/$main::second_emp/activity"
--- more_headers eval
$main::auth
--- error_code: 404
--- response_body eval
main::no_employee($main::second_emp)



=== TEST 10: a deleted employee's feed is 404
--- request eval
"GET /v1/employees/$main::gone/activity"
--- more_headers eval
$main::auth
--- error_code: 404
--- response_body eval
main::no_employee($main::gone)



=== TEST 11: the contact's feed, with the same items
--- request
GET /v1/contacts/ctc_feed_a/activity?limit=1
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body eval
main::page('true', '"dlv_feed_2"', $main::d2)



=== TEST 12: the contact's feed from its cursor, filtered
--- request
GET /v1/contacts/ctc_feed_a/activity?cursor=dlv_feed_2&status=failed
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body eval
main::page('false', 'null', $main::d1)



=== TEST 13: an unknown contact's feed and another account's are 404 alike
--- request eval
["GET /v1/contacts/ctc_nope/activity",
 "GET /v1/contacts/$main::second_ctc/activity"]
--- more_headers eval
$main::auth
--- error_code eval
[404, 404]
--- response_body eval
[main::no_contact('ctc_nope'), main::no_contact($main::second_ctc)]



=== TEST 14: one delivery adds its message and its attempts
--- request
GET /v1/deliveries/dlv_feed_1
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body eval
substr($main::d1, 0, -1)
. q|,"body":"Hi\n\"A\" \\\\ | . "$main::R" . q|","attempt_history":[|
. q|{"attempt":1,"outcome":"transient","error":"421 \"busy\" \\\\ \u0003",|
. q|"finished_at":"2026-01-02T03:04:06Z"},|
. q|{"attempt":2,"outcome":"permanent","error":"550 caf| . "\xc3\xa9"
. q|","finished_at":"2026-01-02T03:04:07Z"}]}| . "\n"



=== TEST 15: one delivery without attempts, and an unknown one
--- request eval
["GET /v1/deliveries/dlv_feed_3", "GET /v1/deliveries/dlv_nope"]
--- more_headers eval
$main::auth
--- error_code eval
[200, 404]
--- response_body eval
[substr($main::d3, 0, -1) . qq|,"body":null,"attempt_history":[]}\n|,
 main::error('not_found', 'no delivery with the id \"dlv_nope\"')]



=== TEST 16: a bad limit or cursor is 400
--- request eval
["GET /v1/employees/$main::emp/activity?limit=0",
 "GET /v1/employees/$main::emp/activity?limit=101",
 "GET /v1/employees/$main::emp/activity?limit=ten",
 "GET /v1/employees/$main::emp/activity?cursor=%FF",
 "GET /v1/contacts/ctc_feed_a/activity?limit=0"]
--- more_headers eval
$main::auth
--- error_code eval
[400, 400, 400, 400, 400]
--- response_body eval
[$main::bad_limit, $main::bad_limit, $main::bad_limit,
 main::error('invalid_parameter', '\"cursor\" is the next_cursor of a list',
             'cursor'),
 $main::bad_limit]



=== TEST 17: a bad since is 400, a bad status 422, a bad contact 400
--- request eval
["GET /v1/employees/$main::emp/activity?since=not-a-time",
 "GET /v1/contacts/ctc_feed_a/activity?since=2026-13-45",
 "GET /v1/employees/$main::emp/activity?status=lost",
 "GET /v1/employees/$main::emp/activity?contact=c%20d"]
--- more_headers eval
$main::auth
--- error_code eval
[400, 400, 422, 400]
--- response_body eval
[$main::bad_since, $main::bad_since,
 main::error('invalid_value', '\"status\" must be one of \"scheduled\", '
             . '\"sending\", \"sent\", \"delivered\", \"failed\", '
             . '\"cancelled\", \"skipped\"', 'status'),
 main::error('invalid_parameter', '\"contact\" is a contact id', 'contact')]



=== TEST 17b: since holds to RFC 3339: no words PostgreSQL would read, no NUL
--- request eval
["GET /v1/employees/$main::emp/activity?since=infinity",
 "GET /v1/employees/$main::emp/activity?since=epoch",
 "GET /v1/employees/$main::emp/activity?since=2020-01-01%00junk",
 "GET /v1/employees/$main::emp/activity?since=2026-01-02T03:05:00.123%2B01:00"]
--- more_headers eval
$main::auth
--- error_code eval
[400, 400, 400, 200]
--- response_body_like eval
[qr/"field":"since"/, qr/"field":"since"/, qr/"field":"since"/,
 qr/^\{"data":/]



=== TEST 18: an unknown employee or contact is 404 before its parameters
--- request eval
["GET /v1/employees/emp_nope/activity?limit=0",
 "GET /v1/employees/$main::second_emp/activity?since=not-a-time",
 "GET /v1/contacts/$main::second_ctc/activity?cursor=%FF"]
--- more_headers eval
$main::auth
--- error_code eval
[404, 404, 404]
--- response_body eval
[main::no_employee('emp_nope'), main::no_employee($main::second_emp),
 main::no_contact($main::second_ctc)]



=== TEST 19: a bad key is 401 before anything else
--- request eval
["GET /v1/employees/$main::emp/activity",
 "GET /v1/employees/emp_nope/activity?limit=0",
 "GET /v1/contacts/ctc_feed_a/activity?since=not-a-time",
 "GET /v1/deliveries/dlv_feed_1"]
--- more_headers
Authorization: Bearer ek_wrong
--- error_code eval
[401, 401, 401, 401]
--- response_body eval
[($main::bad_key) x 4]



=== TEST 20: the other account's key reads its own feed
--- request eval
"GET /v1/employees/$main::second_emp/activity"
--- more_headers eval
"Authorization: Bearer $main::second_key"
--- error_code: 200
--- response_body eval
main::page('false', 'null')



=== TEST 21: once its key is revoked, the next request is refused
--- init
Echelon::sql("UPDATE accounts SET api_key_hash = repeat('f', 64) "
             . "WHERE id = '$main::second'");
--- request eval
["GET /v1/employees/$main::second_emp/activity",
 "GET /v1/contacts/$main::second_ctc/activity",
 "GET /v1/account"]
--- more_headers eval
"Authorization: Bearer $main::second_key"
--- error_code eval
[401, 401, 401]
--- response_body eval
[($main::bad_key) x 3]
