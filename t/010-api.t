# The billing API: accounts, keys, channels, employees, triggers and
# contacts, each rule answered with a JSON error that names the field.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/inc";
use Echelon;
use Test::Nginx::Socket 'no_plan';

Echelon::setup_account(plan => 'starter');

our $auth = "Authorization: Bearer $ENV{TEST_NGINX_API_KEY}\n"
          . "Content-Type: application/json";
our $admin = "Authorization: Bearer $Echelon::ADMIN_TOKEN\n"
           . "Content-Type: application/json";
our $emp = $ENV{TEST_NGINX_EMPLOYEE};

# the key is stored only as its SHA-256, never as itself
my $key = $ENV{TEST_NGINX_API_KEY};
is(Echelon::sql("SELECT count(*) FROM accounts WHERE api_key_hash = "
                . "encode(sha256('$key'), 'hex')"), 1,
   'the API key is stored as its SHA-256');
is(Echelon::sql("SELECT count(*) FROM accounts WHERE api_key_hash = '$key'"),
   0, 'the API key itself is not stored');

# another account and its employee, for the isolation blocks
our $other = Echelon::sql("INSERT INTO accounts (name, plan, api_key_hash) "
    . "VALUES ('Other', 'starter', repeat('0', 64)) RETURNING id");
our $other_emp = Echelon::sql("INSERT INTO employees (account_id, name, "
    . "role, tone, channels) VALUES ('$other', 'Theirs', 'billing', "
    . "'formal', '{email}') RETURNING id");
our $other_trg = Echelon::sql("INSERT INTO triggers (account_id, "
    . "employee_id, event, channel, body) VALUES ('$other', '$other_emp', "
    . "'invoice.issued', 'email', 'x') RETURNING id");
our $other_ctc = Echelon::sql("INSERT INTO contacts (account_id, name) "
    . "VALUES ('$other', 'Their Client') RETURNING id");
our $other_inv = Echelon::sql("INSERT INTO invoices (account_id, "
    . "contact_id, amount_due, currency) VALUES ('$other', '$other_ctc', 1, "
    . "'usd') RETURNING id");

Echelon::default_blocks(Echelon::http_config(), <<'CONF');
    location /v1/ { echelon_api; }
CONF

no_shuffle();
no_long_string();
run_tests();

is(Echelon::sql("SELECT c.name || ' ' || (t.deleted_at IS NULL) || ' ' || "
                . "i.status || ' ' || (e.deleted_at IS NULL) "
                . "FROM contacts c, triggers t, invoices i, employees e "
                . "WHERE c.id = '$other_ctc' AND t.id = '$other_trg' "
                . "AND i.id = '$other_inv' AND e.id = '$other_emp'"),
   'Their Client true open true',
   "another account's data is unchanged by the requests that were refused");

__DATA__

=== TEST 1: the admin token creates an account and shows its key once
--- request
POST /v1/accounts
{"name": "Globex", "plan": "growth"}
--- more_headers eval
$main::admin
--- error_code: 201
--- response_body_like: ^\{"id":"acct_[0-9a-f]{24}","name":"Globex","plan":"growth","api_key":"ek_[A-Za-z0-9_-]{32}","created_at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"\}$



=== TEST 2: the key authenticates its account
--- request
GET /v1/account
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like eval
qr/^\{"id":"$ENV{TEST_NGINX_ACCOUNT}","name":"Acme Studio","plan":"starter","created_at":"[-0-9T:]+Z"\}$/



=== TEST 3: an API key cannot create accounts
--- request
POST /v1/accounts
{"name": "Initech", "plan": "starter"}
--- more_headers eval
$main::auth
--- error_code: 401
--- response_body_like: ^\{"error":\{"code":"unauthorized","message":"the admin token is not valid"\}\}$



=== TEST 4: without echelon_admin_token, account creation is 403
--- http_config eval
my $c = Echelon::http_config();
$c =~ s/echelon_admin_token [^\n]*\n//;
$c
--- request
POST /v1/accounts
{"name": "Initech", "plan": "starter"}
--- more_headers eval
$main::admin
--- error_code: 403
--- response_body_like: "code":"forbidden"



=== TEST 5: an unknown plan is 422 naming the field
--- request
POST /v1/accounts
{"name": "Initech", "plan": "platinum"}
--- more_headers eval
$main::admin
--- error_code: 422
--- response_body
{"error":{"code":"invalid_value","message":"\"plan\" must be one of \"starter\", \"growth\", \"scale\"","field":"plan"}}



=== TEST 6: no key is 401
--- request
GET /v1/account
--- error_code: 401
--- response_body_like: ^\{"error":\{"code":"unauthorized",



=== TEST 7: a wrong key is 401
--- request
GET /v1/account
--- more_headers
Authorization: Bearer ek_wrong
--- error_code: 401
--- response_body_like: "message":"the API key is not valid"



=== TEST 8: malformed JSON is 400
--- request
POST /v1/employees
{"name": "x",
--- more_headers eval
$main::auth
--- error_code: 400
--- response_body_like: ^\{"error":\{"code":"invalid_json","message":"[^"]+"\}\}$



=== TEST 9: a body that is not JSON is 415
--- request
POST /v1/employees
name=x
--- more_headers eval
"Authorization: Bearer $ENV{TEST_NGINX_API_KEY}\nContent-Type: application/x-www-form-urlencoded"
--- error_code: 415
--- response_body_like: "code":"unsupported_media_type"



=== TEST 10: an employee on SMS is not in the starter plan
--- request
POST /v1/employees
{"name": "Billing", "role": "billing", "channels": ["email", "sms"], "tone": "friendly"}
--- more_headers eval
$main::auth
--- error_code: 422
--- response_body_like: ^\{"error":\{"code":"channel_not_in_plan","message":"the starter plan does not include sms","field":"channels"\}\}$



=== TEST 11: an unknown role is 422
--- request
POST /v1/employees
{"name": "Sales", "role": "sales", "channels": ["email"]}
--- more_headers eval
$main::auth
--- error_code: 422
--- response_body_like: "code":"unknown_role","message":".+?","field":"role"



=== TEST 12: an unknown tone is 422
--- request
POST /v1/employees
{"name": "Billing", "role": "billing", "channels": ["email"], "tone": "sarcastic"}
--- more_headers eval
$main::auth
--- error_code: 422
--- response_body_like: "code":"invalid_value",.*"field":"tone"



=== TEST 13: a name that is not a string is 400
--- request
POST /v1/employees
{"name": 42, "role": "billing"}
--- more_headers eval
$main::auth
--- error_code: 400
--- response_body
{"error":{"code":"invalid_type","message":"\"name\" must be a string","field":"name"}}



=== TEST 14: employees are listed newest first
--- request
GET /v1/employees
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like: ^\{"data":\[\{"id":"emp_\w+","name":"Billing \S+ Accounts Receivable","role":"billing","tone":"friendly","channels":\["email"\],"enabled":true,"created_at":"[^"]+"\}\],"has_more":false,"next_cursor":null\}$



=== TEST 15: a trigger with an unknown template variable is 422
--- request eval
"POST /v1/employees/$main::emp/triggers
{\"event\": \"invoice.issued\", \"channel\": \"email\", \"delay\": \"0\",
 \"template\": {\"subject\": \"Invoice {{invoice.number}}\", \"body\": \"Hi {{contact.nickname}}\"}}"
--- more_headers eval
$main::auth
--- error_code: 422
--- response_body
{"error":{"code":"unknown_variable","message":"unknown template variable \"contact.nickname\"","field":"template.body"}}



=== TEST 16: a trigger with a bad delay is 422
--- request eval
"POST /v1/employees/$main::emp/triggers
{\"event\": \"invoice.issued\", \"channel\": \"email\", \"delay\": \"soon\",
 \"template\": {\"subject\": \"s\", \"body\": \"b\"}}"
--- more_headers eval
$main::auth
--- error_code: 422
--- response_body_like: "code":"invalid_delay",.*"field":"delay"



=== TEST 17: a template that is not an object is 400
--- request eval
"POST /v1/employees/$main::emp/triggers
{\"event\": \"invoice.issued\", \"channel\": \"email\", \"template\": \"Hi\"}"
--- more_headers eval
$main::auth
--- error_code: 400
--- response_body_like: "code":"invalid_type",.*"field":"template"



=== TEST 18: a trigger 7 days later unless paid is created
--- request eval
"POST /v1/employees/$main::emp/triggers
{\"event\": \"invoice.issued\", \"channel\": \"email\", \"delay\": \"7d\", \"unless\": \"paid\",
 \"template\": {\"subject\": \"Reminder: {{invoice.number}}\", \"body\": \"Hi {{ contact.name }}, {{invoice.amount}} is still open.\"}}"
--- more_headers eval
$main::auth
--- error_code: 201
--- response_body_like: ^\{"id":"trg_\w+","employee":"emp_\w+","event":"invoice.issued","channel":"email","template":\{"subject":"Reminder: \{\{invoice.number\}\}","body":"Hi \{\{ contact.name \}\}, \{\{invoice.amount\}\} is still open."\},"delay_seconds":604800,"unless":"paid","created_at":"[^"]+"\}$



=== TEST 19: the employee's triggers are listed
--- request eval
"GET /v1/employees/$main::emp/triggers"
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body_like: ^\{"data":\[\{"id":"trg_\w+",.*"delay_seconds":604800,.*\}\],"has_more":false,"next_cursor":null\}$



=== TEST 20: a trigger on a channel the employee does not use is 422
--- request eval
"POST /v1/employees/$main::emp/triggers
{\"event\": \"invoice.issued\", \"channel\": \"sms\", \"template\": {\"body\": \"b\"}}"
--- more_headers eval
$main::auth
--- error_code: 422
--- response_body_like: "code":"channel_not_in_plan"



=== TEST 21: a contact is created
--- request
POST /v1/contacts
{"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+442071234567", "timezone": "Europe/London", "external_id": "crm-1"}
--- more_headers eval
$main::auth
--- error_code: 201
--- response_body_like: ^\{"id":"ctc_\w+","name":"Ada Lovelace","email":"ada\@example.com","phone":"\+442071234567","whatsapp":null,"timezone":"Europe/London","locale":null,"external_id":"crm-1","created_at":"[^"]+"\}$



=== TEST 22: the same external_id again is 409
--- request
POST /v1/contacts
{"name": "Ada Again", "external_id": "crm-1"}
--- more_headers eval
$main::auth
--- error_code: 409
--- response_body_like: "code":"duplicate",.*"field":"external_id"



=== TEST 23: an unknown time zone is 422
--- request
POST /v1/contacts
{"name": "Bob", "timezone": "Mars/Olympus"}
--- more_headers eval
$main::auth
--- error_code: 422
--- response_body_like: "code":"invalid_timezone"



=== TEST 24: a bad email address is 422
--- request
POST /v1/contacts
{"name": "Bob", "email": "bob at example"}
--- more_headers eval
$main::auth
--- error_code: 422
--- response_body_like: "code":"invalid_email",.*"field":"email"



=== TEST 25: an unknown employee is 404
--- request eval
"GET /v1/employees/emp_does_not_exist"
--- more_headers eval
$main::auth
--- error_code: 404
--- response_body_like: ^\{"error":\{"code":"not_found",



=== TEST 26: another account's employee is 404 exactly like an unknown one
--- request eval
"GET /v1/employees/$main::other_emp"
--- more_headers eval
$main::auth
--- error_code: 404
--- response_body eval
my $b = qq{{"error":{"code":"not_found","message":"no employee with the id \\"$main::other_emp\\""}}\n};
$b



=== TEST 27: another account's activity feed is 404 too
--- request eval
"GET /v1/employees/$main::other_emp/activity"
--- more_headers eval
$main::auth
--- error_code: 404
--- response_body_like: ^\{"error":\{"code":"not_found",



=== TEST 28: an unknown endpoint is 404 in JSON
--- request
GET /v1/nothing/here
--- more_headers eval
$main::auth
--- error_code: 404
--- response_body_like: "code":"not_found"



=== TEST 29: a wrong method is 405 in JSON
--- request
DELETE /v1/accounts
--- more_headers eval
$main::auth
--- error_code: 405
--- response_body_like: "code":"method_not_allowed"



=== TEST 29a: an id that cannot be ours, without a key, is 401 first
--- request
GET /v1/employees/bad.id/activity
--- error_code: 401
--- response_body_like: "code":"unauthorized"



=== TEST 29a2: and with the key, the 404 of any unknown id
--- request
GET /v1/deliveries/bad.id
--- more_headers eval
$main::auth
--- error_code: 404
--- response_body_like: "code":"not_found","message":"no delivery with the id \\"bad.id\\""



=== TEST 29b: the Allow header names HEAD beside GET
--- request
DELETE /v1/account
--- more_headers eval
$main::auth
--- error_code: 405
--- response_headers
Allow: GET, HEAD, PATCH
--- response_body_like: "code":"method_not_allowed"



=== TEST 29c: HEAD is GET without the body
--- request
HEAD /v1/account
--- more_headers eval
$main::auth
--- error_code: 200
--- response_headers
Content-Type: application/json
--- response_body



=== TEST 30: the channels say what the plan allows
--- request
GET /v1/channels
--- more_headers eval
$main::auth
--- error_code: 200
--- response_body
{"data":[{"channel":"email","from":"Acme Billing <billing@acme.test>","connected":true,"allowed_by_plan":true},{"channel":"sms","from":null,"connected":false,"allowed_by_plan":false},{"channel":"whatsapp","from":null,"connected":false,"allowed_by_plan":false}],"has_more":false,"next_cursor":null}



=== TEST 31: connecting SMS on starter is 422
--- request
PUT /v1/channels/sms
{"from": "+15550000000"}
--- more_headers eval
$main::auth
--- error_code: 422
--- response_body_like: "code":"channel_not_in_plan"



=== TEST 31: another account's trigger, contact and invoice are 404 too
--- request eval
["GET /v1/triggers/$main::other_trg", "PATCH /v1/triggers/$main::other_trg\n{\"delay\": 5}",
 "DELETE /v1/triggers/$main::other_trg", "GET /v1/contacts/$main::other_ctc",
 "PATCH /v1/contacts/$main::other_ctc\n{\"name\": \"Mine\"}",
 "GET /v1/contacts/$main::other_ctc/activity", "GET /v1/invoices/$main::other_inv",
 "POST /v1/invoices/$main::other_inv/void",
 "POST /v1/invoices/$main::other_inv/payments\n{\"amount\": 1, \"currency\": \"usd\"}",
 "DELETE /v1/employees/$main::other_emp"]
--- more_headers eval
$main::auth
--- error_code eval
[(404) x 10]
--- response_body_like eval
[(qr/^\{"error":\{"code":"not_found","message":"no \w+ with the id/) x 10]
