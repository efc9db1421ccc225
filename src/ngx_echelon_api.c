
/*
 * Copyright (C) Echelon
 *
 * The JSON billing API under /v1: routing, authentication, validation,
 * and one handler per resource and method.
 */


#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "ngx_echelon.h"


#define NGX_ECHELON_API_ANY      0
#define NGX_ECHELON_API_KEY      1
#define NGX_ECHELON_API_ADMIN    2
#define NGX_ECHELON_API_KEY_SQL  3      /* the statement checks the key */

#define NGX_ECHELON_NAME_MAX     200
#define NGX_ECHELON_TEXT_MAX     20000
#define NGX_ECHELON_DELAY_MAX    (366 * 86400)


typedef ngx_int_t (*ngx_echelon_api_start_pt)(ngx_echelon_ctx_t *ctx);


typedef struct {
    ngx_str_t                   status;
    ngx_str_t                   channel;
    ngx_str_t                   contact;
    ngx_str_t                   since;
    ngx_str_t                   cursor;
    ngx_int_t                   limit;
} ngx_echelon_feed_args_t;


typedef struct {
    ngx_echelon_sql_e           sql;
    ngx_echelon_feed_args_t     args;
    unsigned                    check:1;    /* the parameters are wrong */
    unsigned                    bad_since:1;
} ngx_echelon_feed_t;


typedef struct {
    ngx_str_t                   key;        /* what comes before the value */
    const char                 *column;
    ngx_uint_t                  integer;
} ngx_echelon_delivery_field_t;


typedef struct {
    ngx_uint_t                  method;
    const char                 *path[4];
    ngx_uint_t                  auth;
    ngx_echelon_api_start_pt    start;
} ngx_echelon_route_t;


static void ngx_echelon_api_body(ngx_http_request_t *r);
static ngx_echelon_route_t *ngx_echelon_api_route(ngx_echelon_ctx_t *ctx,
    ngx_int_t *rc);
static ngx_int_t ngx_echelon_api_authenticate(ngx_echelon_ctx_t *ctx,
    ngx_echelon_route_t *route);
static ngx_int_t ngx_echelon_api_authorized(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_api_unauthorized(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_api_key_hash(ngx_str_t *key, u_char *hex);

static ngx_int_t ngx_echelon_account_create(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_account_created(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_account_get(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_stripe_put(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_stripe_saved(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_channel_put(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_channel_saved(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_channel_list(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_channel_listed(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_employee_create(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_employee_created(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_employee_get(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_employee_list(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_employee_listed(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static json_t *ngx_echelon_employee_json(PGresult *res, int row);
static ngx_int_t ngx_echelon_trigger_create(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_trigger_created(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_trigger_list(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_trigger_listed(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static json_t *ngx_echelon_trigger_json(PGresult *res, int row);
static ngx_int_t ngx_echelon_contact_create(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_contact_created(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_contact_get(ngx_echelon_ctx_t *ctx);
static json_t *ngx_echelon_contact_json(PGresult *res, int row);
static ngx_int_t ngx_echelon_activity(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_contact_activity(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_feed(ngx_echelon_ctx_t *ctx,
    ngx_echelon_sql_e sql);
static ngx_int_t ngx_echelon_feed_query(ngx_echelon_ctx_t *ctx,
    ngx_echelon_feed_t *feed);
static ngx_int_t ngx_echelon_feed_listed(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_feed_args(ngx_echelon_ctx_t *ctx,
    ngx_echelon_feed_t *feed, ngx_int_t *rc);
static ngx_int_t ngx_echelon_feed_send(ngx_echelon_ctx_t *ctx, PGresult *res,
    ngx_int_t limit);
static ngx_int_t ngx_echelon_delivery_columns(ngx_echelon_ctx_t *ctx,
    PGresult *res, int *col);
static void ngx_echelon_delivery_write(ngx_echelon_json_out_t *out,
    PGresult *res, int row, int *col);
static ngx_int_t ngx_echelon_delivery_get(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_delivery_found(ngx_echelon_ctx_t *ctx,
    PGresult *res);

static ngx_int_t ngx_echelon_idempotency_begin(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_idempotency_found(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_idempotency_stored(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_account_plan(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_account_planned(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_employee_patch(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_employee_patched(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_employee_delete(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_deleted(ngx_echelon_ctx_t *ctx, PGresult *res);
static ngx_int_t ngx_echelon_trigger_get(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_trigger_patch(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_trigger_delete(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_contact_patch(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_contact_patched(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_invoice_create(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_invoice_created(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_invoice_get(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_invoice_void(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_invoice_voided(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static json_t *ngx_echelon_invoice_json(PGresult *res, int row);
static ngx_int_t ngx_echelon_payment_create(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_payment_created(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_channels_param(ngx_echelon_ctx_t *ctx,
    json_t *channels, ngx_int_t *rc);
static ngx_int_t ngx_echelon_not_connected(ngx_echelon_ctx_t *ctx,
    ngx_str_t *channel);
static ngx_int_t ngx_echelon_check_template(ngx_echelon_ctx_t *ctx,
    json_t *tmpl, ngx_uint_t subject_required, ngx_str_t *subject,
    ngx_str_t *body, ngx_int_t *rc);
static ngx_int_t ngx_echelon_field_integer(ngx_echelon_ctx_t *ctx,
    json_t *obj, const char *name, ngx_uint_t required, json_int_t min,
    json_int_t max, json_int_t *out, ngx_int_t *rc);
static ngx_int_t ngx_echelon_field_string(ngx_echelon_ctx_t *ctx,
    json_t *obj, const char *name, const char *path, ngx_uint_t required,
    size_t max, ngx_str_t *out, ngx_int_t *rc);
static ngx_int_t ngx_echelon_field_enum(ngx_echelon_ctx_t *ctx,
    const char *field, ngx_str_t *value, const char **allowed,
    ngx_int_t *rc);
static ngx_int_t ngx_echelon_reject(ngx_echelon_ctx_t *ctx,
    ngx_uint_t status, const char *code, const char *field,
    const char *fmt, ...);
static ngx_int_t ngx_echelon_get_one(ngx_echelon_ctx_t *ctx,
    ngx_echelon_sql_e sql, json_t *(*item)(PGresult *res, int row));
static ngx_int_t ngx_echelon_one_found(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_trigger_patched(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_not_found(ngx_echelon_ctx_t *ctx);
static ngx_int_t ngx_echelon_plan_allows(ngx_str_t *plan, ngx_str_t *channel);
static ngx_int_t ngx_echelon_phone_valid(ngx_str_t *phone);
static ngx_int_t ngx_echelon_email_valid(ngx_str_t *address);
static ngx_int_t ngx_echelon_parse_delay(json_t *delay, ngx_int_t *seconds);
static ngx_int_t ngx_echelon_list_args(ngx_echelon_ctx_t *ctx,
    ngx_str_t *cursor, ngx_int_t *limit, ngx_int_t *rc);
static ngx_int_t ngx_echelon_arg(ngx_echelon_ctx_t *ctx, const char *name,
    ngx_str_t *value);
static json_t *ngx_echelon_list_json(ngx_echelon_ctx_t *ctx, PGresult *res,
    json_t *(*item)(PGresult *res, int row));
static const char *ngx_echelon_str(ngx_echelon_ctx_t *ctx, ngx_int_t n);
static ngx_int_t ngx_echelon_param(ngx_echelon_ctx_t *ctx, ngx_str_t *v);
static const char *ngx_echelon_allowed(ngx_uint_t method);
static ngx_int_t ngx_echelon_is_code(ngx_str_t *code);
static ngx_int_t ngx_echelon_json_has(json_t *array, size_t n, json_t *v);
static ngx_int_t ngx_echelon_copy(ngx_echelon_ctx_t *ctx, ngx_str_t *v);


static const char  *ngx_echelon_plans[] = {
    "starter", "growth", "scale", NULL
};

static const char  *ngx_echelon_channels[] = {
    "email", "sms", "whatsapp", NULL
};

static const char  *ngx_echelon_tones[] = {
    "friendly", "professional", "formal", "firm", NULL
};

static const char  *ngx_echelon_events[] = {
    "invoice.issued", "invoice.overdue", "invoice.unpaid_repeated",
    "payment.received", "billing_details.updated", NULL
};

static const char  *ngx_echelon_statuses[] = {
    "scheduled", "sending", "sent", "delivered", "failed", "cancelled",
    "skipped", NULL
};


/* a delivery as the feed shows it, key by key */

static ngx_echelon_delivery_field_t  ngx_echelon_delivery_fields[] = {
    { ngx_string("{\"id\":"), "id", 0 },
    { ngx_string(",\"trigger\":"), "trigger_id", 0 },
    { ngx_string(",\"event\":"), "event", 0 },
    { ngx_string(",\"channel\":"), "channel", 0 },
    { ngx_string(",\"contact\":{\"id\":"), "contact_id", 0 },
    { ngx_string(",\"name\":"), "contact_name", 0 },
    { ngx_string(",\"address\":"), "address", 0 },
    { ngx_string("},\"invoice\":"), "invoice_id", 0 },
    { ngx_string(",\"status\":"), "status", 0 },
    { ngx_string(",\"reason\":"), "reason", 0 },
    { ngx_string(",\"attempts\":"), "attempts", 1 },
    { ngx_string(",\"due_at\":"), "due_at", 0 },
    { ngx_string(",\"sent_at\":"), "sent_at", 0 },
    { ngx_string(",\"delivered_at\":"), "delivered_at", 0 },
    { ngx_string(",\"created_at\":"), "created_at", 0 },
    { ngx_string(",\"subject\":"), "subject", 0 }
};

#define NGX_ECHELON_DELIVERY_FIELDS                                          \
    (sizeof(ngx_echelon_delivery_fields)                                     \
     / sizeof(ngx_echelon_delivery_field_t))


static ngx_echelon_route_t  ngx_echelon_routes[] = {

    { NGX_HTTP_POST, { "accounts", NULL }, NGX_ECHELON_API_ADMIN,
      ngx_echelon_account_create },

    { NGX_HTTP_GET, { "account", NULL }, NGX_ECHELON_API_KEY,
      ngx_echelon_account_get },

    { NGX_HTTP_PATCH, { "account", NULL }, NGX_ECHELON_API_ADMIN,
      ngx_echelon_account_plan },

    { NGX_HTTP_PUT, { "integrations", "stripe", NULL }, NGX_ECHELON_API_KEY,
      ngx_echelon_stripe_put },

    { NGX_HTTP_GET, { "channels", NULL }, NGX_ECHELON_API_KEY,
      ngx_echelon_channel_list },

    { NGX_HTTP_PUT, { "channels", "*", NULL }, NGX_ECHELON_API_KEY,
      ngx_echelon_channel_put },

    { NGX_HTTP_POST, { "employees", NULL }, NGX_ECHELON_API_KEY,
      ngx_echelon_employee_create },

    { NGX_HTTP_GET, { "employees", NULL }, NGX_ECHELON_API_KEY,
      ngx_echelon_employee_list },

    { NGX_HTTP_GET, { "employees", "*", NULL }, NGX_ECHELON_API_KEY,
      ngx_echelon_employee_get },

    { NGX_HTTP_PATCH, { "employees", "*", NULL }, NGX_ECHELON_API_KEY,
      ngx_echelon_employee_patch },

    { NGX_HTTP_DELETE, { "employees", "*", NULL }, NGX_ECHELON_API_KEY,
      ngx_echelon_employee_delete },

    { NGX_HTTP_GET, { "triggers", "*", NULL }, NGX_ECHELON_API_KEY,
      ngx_echelon_trigger_get },

    { NGX_HTTP_PATCH, { "triggers", "*", NULL }, NGX_ECHELON_API_KEY,
      ngx_echelon_trigger_patch },

    { NGX_HTTP_DELETE, { "triggers", "*", NULL }, NGX_ECHELON_API_KEY,
      ngx_echelon_trigger_delete },

    { NGX_HTTP_POST, { "employees", "*", "triggers", NULL },
      NGX_ECHELON_API_KEY, ngx_echelon_trigger_create },

    { NGX_HTTP_GET, { "employees", "*", "triggers", NULL },
      NGX_ECHELON_API_KEY, ngx_echelon_trigger_list },

    { NGX_HTTP_GET, { "employees", "*", "activity", NULL },
      NGX_ECHELON_API_KEY_SQL, ngx_echelon_activity },

    { NGX_HTTP_POST, { "contacts", NULL }, NGX_ECHELON_API_KEY,
      ngx_echelon_contact_create },

    { NGX_HTTP_GET, { "contacts", "*", NULL }, NGX_ECHELON_API_KEY,
      ngx_echelon_contact_get },

    { NGX_HTTP_PATCH, { "contacts", "*", NULL }, NGX_ECHELON_API_KEY,
      ngx_echelon_contact_patch },

    { NGX_HTTP_GET, { "contacts", "*", "activity", NULL },
      NGX_ECHELON_API_KEY_SQL, ngx_echelon_contact_activity },

    { NGX_HTTP_POST, { "invoices", NULL }, NGX_ECHELON_API_KEY,
      ngx_echelon_invoice_create },

    { NGX_HTTP_GET, { "invoices", "*", NULL }, NGX_ECHELON_API_KEY,
      ngx_echelon_invoice_get },

    { NGX_HTTP_POST, { "invoices", "*", "payments", NULL },
      NGX_ECHELON_API_KEY, ngx_echelon_payment_create },

    { NGX_HTTP_POST, { "invoices", "*", "void", NULL },
      NGX_ECHELON_API_KEY, ngx_echelon_invoice_void },

    { NGX_HTTP_GET, { "deliveries", "*", NULL }, NGX_ECHELON_API_KEY_SQL,
      ngx_echelon_delivery_get },

    { 0, { NULL }, 0, NULL }
};


ngx_int_t
ngx_echelon_api_handler(ngx_http_request_t *r)
{
    ngx_echelon_ctx_t  *ctx;

    ctx = ngx_echelon_ctx_create(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* "/v1/employees/emp_1/triggers": the parts after the version */

    ctx->nparts = ngx_echelon_split_path(&r->uri, 1, ctx->path, 4);

    if (ctx->nparts < 2 || ctx->nparts > 4
        || ctx->path[0].len != 2 || ngx_strncmp(ctx->path[0].data, "v1", 2))
    {
        ngx_http_discard_request_body(r);
        return ngx_echelon_send_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                      "no such endpoint", NULL);
    }

    return ngx_echelon_read_body(r, ngx_echelon_api_body);
}


static void
ngx_echelon_api_body(ngx_http_request_t *r)
{
    ngx_int_t             rc;
    ngx_echelon_ctx_t    *ctx;
    ngx_echelon_route_t  *route;

    ctx = ngx_http_get_module_ctx(r, ngx_http_echelon_module);

    route = ngx_echelon_api_route(ctx, &rc);

    if (route) {
        rc = ngx_echelon_api_authenticate(ctx, route);
    }

    if (rc != NGX_DONE) {
        ngx_echelon_finish(ctx, rc);
    }
}


/* the route of the request, or NULL with the answer sent and *rc set */

static ngx_echelon_route_t *
ngx_echelon_api_route(ngx_echelon_ctx_t *ctx, ngx_int_t *rc)
{
    u_char               *p, *allow;
    ngx_uint_t            i, found;
    ngx_str_t            *part;
    ngx_table_elt_t      *h;
    ngx_echelon_route_t  *rt;

    found = 0;
    allow = ngx_pnalloc(ctx->request->pool, 64);
    p = allow;

    for (rt = ngx_echelon_routes; rt->start; rt++) {

        for (i = 0; i < ctx->nparts - 1; i++) {
            part = &ctx->path[i + 1];

            if (rt->path[i] == NULL) {
                break;
            }

            if (rt->path[i][0] == '*') {
                continue;
            }

            if (ngx_strlen(rt->path[i]) != part->len
                || ngx_strncmp(rt->path[i], part->data, part->len) != 0)
            {
                break;
            }
        }

        if (i != ctx->nparts - 1 || rt->path[i] != NULL) {
            continue;
        }

        found = 1;

        /* HEAD is GET without the body (nginx's header filter drops it) */

        if (rt->method == ctx->request->method
            || (rt->method == NGX_HTTP_GET
                && ctx->request->method == NGX_HTTP_HEAD))
        {
            /*
             * an id that cannot be ours is as unknown as any other: looked
             * for as one that exists nowhere, once the key is checked
             */

            if (ctx->nparts > 2 && !ngx_echelon_id_valid(&ctx->path[2])) {
                ctx->unknown_id = 1;
            }

            return rt;
        }

        if (allow && p + 12 < allow + 64) {
            p = ngx_sprintf(p, "%s%s", p == allow ? "" : ", ",
                            ngx_echelon_allowed(rt->method));
        }
    }

    if (found && allow) {
        h = ngx_list_push(&ctx->request->headers_out.headers);
        if (h) {
            h->hash = 1;
            ngx_str_set(&h->key, "Allow");
            h->value.data = allow;
            h->value.len = p - allow;
        }
    }

    if (found) {
        *rc = ngx_echelon_reject(ctx, NGX_HTTP_NOT_ALLOWED,
                                 "method_not_allowed", NULL,
                                 "this endpoint does not accept %V",
                                 &ctx->request->method_name);
        return NULL;
    }

    *rc = ngx_echelon_reject(ctx, NGX_HTTP_NOT_FOUND, "not_found", NULL,
                             "no such endpoint");
    return NULL;
}


static ngx_int_t
ngx_echelon_api_authenticate(ngx_echelon_ctx_t *ctx,
    ngx_echelon_route_t *route)
{
    u_char           *hex, given[65], expected[65];
    ngx_str_t         key, *admin;
    ngx_table_elt_t  *h;

    h = ctx->request->headers_in.authorization;

    if (h == NULL || h->value.len <= sizeof("Bearer ") - 1
        || ngx_strncasecmp(h->value.data, (u_char *) "Bearer ",
                           sizeof("Bearer ") - 1) != 0)
    {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNAUTHORIZED, "unauthorized",
                                  NULL, "send \"Authorization: Bearer "
                                  "<api key>\"");
    }

    key.data = h->value.data + sizeof("Bearer ") - 1;
    key.len = h->value.len - (sizeof("Bearer ") - 1);

    if (route->auth == NGX_ECHELON_API_ADMIN) {

        /* compared as hashes: equal lengths, so no length leaks */

        admin = &ctx->emcf->admin_token;

        if (admin->len == 0) {
            return ngx_echelon_reject(ctx, NGX_HTTP_FORBIDDEN, "forbidden",
                                      NULL, "account creation is disabled "
                                      "on this server");
        }

        if (ngx_echelon_api_key_hash(&key, given) != NGX_OK
            || ngx_echelon_api_key_hash(admin, expected) != NGX_OK
            || CRYPTO_memcmp(given, expected, 64) != 0)
        {
            return ngx_echelon_reject(ctx, NGX_HTTP_UNAUTHORIZED,
                                      "unauthorized", NULL,
                                      "the admin token is not valid");
        }

        if (ctx->emcf->pool == NULL) {
            return ngx_echelon_reject(ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "store_unavailable", NULL,
                                      "no database is configured");
        }

        ctx->data = route;

        return route->start(ctx);
    }

    if (ctx->emcf->pool == NULL) {
        return ngx_echelon_reject(ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                  "store_unavailable", NULL,
                                  "no database is configured");
    }

    hex = ngx_pnalloc(ctx->request->pool, 65);
    if (hex == NULL || ngx_echelon_api_key_hash(&key, hex) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) hex);

    /* a route whose statement finds the account by the key's hash ($1) */

    if (route->auth == NGX_ECHELON_API_KEY_SQL) {
        ctx->route = route;
        return route->start(ctx);
    }

    ctx->data = route;
    ctx->query.sql = NGX_ECHELON_SQL_AUTH;

    ngx_echelon_run(ctx, ngx_echelon_api_authorized);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_api_authorized(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    ngx_echelon_route_t  *route;

    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK) {
        return ngx_echelon_db_error(ctx);
    }

    if (PQntuples(res) != 1) {
        return ngx_echelon_api_unauthorized(ctx);
    }

    ctx->account_id = ngx_echelon_pg_value(res, 0, "id");
    ctx->account_name = ngx_echelon_pg_value(res, 0, "name");
    ctx->account_plan = ngx_echelon_pg_value(res, 0, "plan");
    ctx->account_created = ngx_echelon_pg_value(res, 0, "created_at");

    /* copies: the result is freed when this step returns */

    if (ngx_echelon_copy(ctx, &ctx->account_id) != NGX_OK
        || ngx_echelon_copy(ctx, &ctx->account_name) != NGX_OK
        || ngx_echelon_copy(ctx, &ctx->account_plan) != NGX_OK
        || ngx_echelon_copy(ctx, &ctx->account_created) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* every statement of an account's request takes the account as $1 */

    ctx->query.nparams = 0;
    ngx_echelon_pg_param_cstr(&ctx->query,
                              (const char *) ctx->account_id.data);

    route = ctx->data;
    ctx->route = route;

    if (route->method != NGX_HTTP_GET
        && ngx_echelon_find_header(ctx->request, "Idempotency-Key"))
    {
        return ngx_echelon_idempotency_begin(ctx);
    }

    return route->start(ctx);
}


static ngx_int_t
ngx_echelon_api_unauthorized(ngx_echelon_ctx_t *ctx)
{
    return ngx_echelon_reject(ctx, NGX_HTTP_UNAUTHORIZED, "unauthorized",
                              NULL, "the API key is not valid");
}


/*
 * Idempotency-Key: the first request with a key runs and its answer is
 * kept; a repeat with the same method, path and body gets that answer; a
 * repeat with another request is a conflict.  A request that fails on
 * our side (5xx) forgets its key, so that the client may try again.
 */

static ngx_int_t
ngx_echelon_idempotency_begin(ngx_echelon_ctx_t *ctx)
{
    u_char               md[EVP_MAX_MD_SIZE], *hex;
    unsigned int         len;
    EVP_MD_CTX          *md_ctx;
    ngx_table_elt_t     *h;
    ngx_http_request_t  *r;

    r = ctx->request;
    h = ngx_echelon_find_header(r, "Idempotency-Key");

    if (!ngx_echelon_token_valid(h->value.data, h->value.len)) {
        return ngx_echelon_reject(ctx, NGX_HTTP_BAD_REQUEST,
                                  "invalid_idempotency_key", NULL,
                                  "an Idempotency-Key is 1 to 255 printable "
                                  "ASCII characters, without spaces");
    }

    if (ngx_echelon_body_bytes(r, &ctx->body) != NGX_OK) {
        return ngx_echelon_reject(ctx, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                  "body_too_large", NULL,
                                  "the request body is too large");
    }

    md_ctx = EVP_MD_CTX_new();
    hex = ngx_pnalloc(r->pool, 65);

    if (md_ctx == NULL || hex == NULL) {
        EVP_MD_CTX_free(md_ctx);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!EVP_DigestInit_ex(md_ctx, EVP_sha256(), NULL)
        || !EVP_DigestUpdate(md_ctx, r->method_name.data,
                             r->method_name.len)
        || !EVP_DigestUpdate(md_ctx, r->uri.data, r->uri.len)
        || !EVP_DigestUpdate(md_ctx, "?", 1)
        || !EVP_DigestUpdate(md_ctx, r->args.data, r->args.len)
        || !EVP_DigestUpdate(md_ctx, "\n", 1)
        || !EVP_DigestUpdate(md_ctx, ctx->body.data, ctx->body.len)
        || !EVP_DigestFinal_ex(md_ctx, md, &len))
    {
        EVP_MD_CTX_free(md_ctx);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    EVP_MD_CTX_free(md_ctx);

    *ngx_hex_dump(hex, md, len) = '\0';

    ctx->idem_key = h->value;
    ctx->idem_hash.data = hex;
    ctx->idem_hash.len = 2 * len;

    if (ngx_echelon_param(ctx, &ctx->idem_key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) hex);
    ctx->query.sql = NGX_ECHELON_SQL_IDEMPOTENCY_BEGIN;

    ngx_echelon_run(ctx, ngx_echelon_idempotency_found);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_idempotency_found(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    ngx_str_t             inserted, hash, status, response;
    ngx_echelon_route_t  *route;

    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK
        || PQntuples(res) != 1)
    {
        ngx_str_null(&ctx->idem_key);
        return ngx_echelon_db_error(ctx);
    }

    inserted = ngx_echelon_pg_value(res, 0, "inserted");

    if (inserted.len && inserted.data[0] == 't') {
        ctx->query.nparams = 1;
        route = ctx->route;
        return route->start(ctx);
    }

    /* a repeat: nothing runs, and nothing is stored again */

    hash = ngx_echelon_pg_value(res, 0, "request_hash");
    status = ngx_echelon_pg_value(res, 0, "status");
    response = ngx_echelon_pg_value(res, 0, "response");

    ctx->idem_status = 1;

    if (hash.len != ctx->idem_hash.len
        || ngx_strncmp(hash.data, ctx->idem_hash.data, hash.len) != 0)
    {
        return ngx_echelon_reject(ctx, NGX_HTTP_CONFLICT,
                                  "idempotency_key_reused", NULL,
                                  "this Idempotency-Key was used with "
                                  "another request");
    }

    if (status.data == NULL) {
        return ngx_echelon_reject(ctx, NGX_HTTP_CONFLICT,
                                  "idempotency_key_in_use", NULL,
                                  "a request with this Idempotency-Key is "
                                  "still running");
    }

    if (ngx_echelon_copy(ctx, &response) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_echelon_send_text(ctx->request,
                                 (ngx_uint_t) ngx_atoi(status.data,
                                                       status.len),
                                 &response);
}


ngx_int_t
ngx_echelon_idempotency_end(ngx_echelon_ctx_t *ctx)
{
    ngx_echelon_pg_query_t  *q;

    q = &ctx->query;

    ngx_memzero(q, sizeof(ngx_echelon_pg_query_t));
    ngx_echelon_pg_param_cstr(q, (const char *) ctx->account_id.data);

    if (ngx_echelon_param(ctx, &ctx->idem_key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->idem_status >= NGX_HTTP_INTERNAL_SERVER_ERROR) {
        ngx_echelon_pg_param_cstr(q, NULL);
        ngx_echelon_pg_param_cstr(q, NULL);

    } else {
        ngx_echelon_pg_param_cstr(q, ngx_echelon_str(ctx, ctx->idem_status));
        ngx_echelon_pg_param_cstr(q, (const char *) ctx->idem_response.data);
    }

    q->sql = NGX_ECHELON_SQL_IDEMPOTENCY_END;
    ngx_echelon_run(ctx, ngx_echelon_idempotency_stored);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_idempotency_stored(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK) {
        ngx_log_error(NGX_LOG_WARN, ctx->request->connection->log, 0,
                      "echelon: the answer to Idempotency-Key \"%V\" was "
                      "not stored", &ctx->idem_key);
    }

    return ngx_echelon_send_text(ctx->request, ctx->idem_status,
                                 &ctx->idem_response);
}


/* hex SHA-256 of an API key: keys are stored only as this */

static ngx_int_t
ngx_echelon_api_key_hash(ngx_str_t *key, u_char *hex)
{
    u_char        md[EVP_MAX_MD_SIZE];
    unsigned int  len;

    if (!EVP_Digest(key->data, key->len, md, &len, EVP_sha256(), NULL)) {
        return NGX_ERROR;
    }

    *ngx_hex_dump(hex, md, len) = '\0';

    return NGX_OK;
}


/* POST /v1/accounts */

static ngx_int_t
ngx_echelon_account_create(ngx_echelon_ctx_t *ctx)
{
    u_char     *hex, raw[24];
    ngx_int_t   rc;
    ngx_str_t   name, plan, key, bin, enc;

    rc = ngx_echelon_parse_body(ctx);
    if (ctx->json == NULL) {
        return rc;
    }

    if (ngx_echelon_field_string(ctx, ctx->json, "name", "name", 1,
                                 NGX_ECHELON_NAME_MAX, &name, &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "plan", "plan", 1, 16,
                                    &plan, &rc) != NGX_OK
        || ngx_echelon_field_enum(ctx, "plan", &plan, ngx_echelon_plans, &rc)
           != NGX_OK)
    {
        return rc;
    }

    /* "ek_" and 32 characters of base64url from 24 random bytes */

    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    key.data = ngx_pnalloc(ctx->request->pool, 3 + 32 + 1);
    hex = ngx_pnalloc(ctx->request->pool, 65);

    if (key.data == NULL || hex == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    bin.data = raw;
    bin.len = sizeof(raw);
    enc.data = key.data + 3;

    ngx_memcpy(key.data, "ek_", 3);
    ngx_encode_base64url(&enc, &bin);

    key.len = 3 + enc.len;
    key.data[key.len] = '\0';

    if (ngx_echelon_api_key_hash(&key, hex) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->data = key.data;

    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) name.data);
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) plan.data);
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) hex);
    ctx->query.sql = NGX_ECHELON_SQL_ACCOUNT_CREATE;

    ngx_echelon_run(ctx, ngx_echelon_account_created);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_account_created(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    json_t  *account;

    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK
        || PQntuples(res) != 1)
    {
        return ngx_echelon_db_error(ctx);
    }

    account = json_pack("{s:o, s:o, s:o, s:s, s:o}",
                        "id", ngx_echelon_json_column(res, 0, "id"),
                        "name", ngx_echelon_json_column(res, 0, "name"),
                        "plan", ngx_echelon_json_column(res, 0, "plan"),
                        "api_key", (char *) ctx->data,
                        "created_at",
                        ngx_echelon_json_column(res, 0, "created_at"));

    ngx_log_error(NGX_LOG_INFO, ctx->request->connection->log, 0,
                  "echelon: account %s created",
                  PQgetvalue(res, 0, PQfnumber(res, "id")));

    return ngx_echelon_send_json(ctx->request, NGX_HTTP_CREATED, account);
}


/* GET /v1/account */

static ngx_int_t
ngx_echelon_account_get(ngx_echelon_ctx_t *ctx)
{
    return ngx_echelon_send_json(ctx->request, NGX_HTTP_OK,
               json_pack("{s:o, s:o, s:o, s:o}",
                         "id", ngx_echelon_json_str(&ctx->account_id),
                         "name", ngx_echelon_json_str(&ctx->account_name),
                         "plan", ngx_echelon_json_str(&ctx->account_plan),
                         "created_at",
                         ngx_echelon_json_str(&ctx->account_created)));
}


/* PUT /v1/integrations/stripe */

static ngx_int_t
ngx_echelon_stripe_put(ngx_echelon_ctx_t *ctx)
{
    char       *text;
    size_t      i;
    json_t     *one, *many, *list, *s;
    ngx_int_t   rc;
    ngx_str_t   v;

    rc = ngx_echelon_parse_body(ctx);
    if (ctx->json == NULL) {
        return rc;
    }

    one = json_object_get(ctx->json, "signing_secret");
    many = json_object_get(ctx->json, "signing_secrets");

    if ((one == NULL) == (many == NULL)) {
        return ngx_echelon_reject(ctx, NGX_HTTP_BAD_REQUEST, "missing_field",
                                  "signing_secret", "give either "
                                  "\"signing_secret\" or \"signing_secrets\"");
    }

    if (one) {
        list = json_pack("[O]", one);

    } else {
        if (!json_is_array(many) || json_array_size(many) == 0
            || json_array_size(many) > 8)
        {
            return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                      "invalid_value", "signing_secrets",
                                      "\"signing_secrets\" must be a list of "
                                      "1 to 8 secrets");
        }

        list = json_incref(many);
    }

    json_array_foreach(list, i, s) {
        if (!json_is_string(s) || json_string_length(s) < 8
            || json_string_length(s) > 256)
        {
            json_decref(list);
            return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                      "invalid_value",
                                      one ? "signing_secret"
                                          : "signing_secrets",
                                      "a signing secret is a string of 8 to "
                                      "256 characters, as Stripe shows it "
                                      "(\"whsec_...\")");
        }
    }

    text = json_dumps(list, JSON_COMPACT);
    json_decref(list);

    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    v.data = (u_char *) text;
    v.len = ngx_strlen(text);

    rc = ngx_echelon_param(ctx, &v);
    free(text);

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->query.sql = NGX_ECHELON_SQL_STRIPE_PUT;
    ngx_echelon_run(ctx, ngx_echelon_stripe_saved);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_stripe_saved(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    u_char     *path;
    ngx_str_t   secrets;

    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK
        || PQntuples(res) != 1)
    {
        return ngx_echelon_db_error(ctx);
    }

    path = ngx_pnalloc(ctx->request->pool,
                       sizeof("/webhooks/stripe/") + ctx->account_id.len);
    if (path == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_sprintf(path, "/webhooks/stripe/%V%Z", &ctx->account_id);

    secrets = ngx_echelon_pg_value(res, 0, "secrets");

    return ngx_echelon_send_json(ctx->request, NGX_HTTP_OK,
               json_pack("{s:s, s:i, s:s, s:o}",
                         "provider", "stripe",
                         "secrets", (int) ngx_atoi(secrets.data, secrets.len),
                         "webhook_path", (char *) path,
                         "updated_at",
                         ngx_echelon_json_column(res, 0, "updated_at")));
}


/* PUT /v1/channels/{email|sms|whatsapp} */

static ngx_int_t
ngx_echelon_channel_put(ngx_echelon_ctx_t *ctx)
{
    ngx_int_t   rc;
    ngx_str_t   kind, from;

    kind = ctx->path[2];

    if (ngx_echelon_field_enum(NULL, NULL, &kind, ngx_echelon_channels, NULL)
        != NGX_OK)
    {
        return ngx_echelon_not_found(ctx);
    }

    rc = ngx_echelon_parse_body(ctx);
    if (ctx->json == NULL) {
        return rc;
    }

    if (ngx_echelon_field_string(ctx, ctx->json, "from", "from", 1, 320,
                                 &from, &rc) != NGX_OK)
    {
        return rc;
    }

    if (!ngx_echelon_plan_allows(&ctx->account_plan, &kind)) {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "channel_not_in_plan", "channel",
                                  "the %V plan does not include %V",
                                  &ctx->account_plan, &kind);
    }

    if (kind.data[0] == 'e' ? (!ngx_echelon_email_valid(&from)
                               || !ngx_echelon_smtp_sender_valid(&from))
                            : !ngx_echelon_phone_valid(&from))
    {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "invalid_value", "from",
                                  kind.data[0] == 'e'
                                  ? "\"from\" must be an email address, "
                                    "optionally as \"Name <address>\""
                                  : "\"from\" must be a phone number in "
                                    "E.164 form, such as +15550000000");
    }

    if (ngx_echelon_param(ctx, &kind) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) from.data);
    ctx->query.sql = NGX_ECHELON_SQL_CHANNEL_PUT;

    ngx_echelon_run(ctx, ngx_echelon_channel_saved);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_channel_saved(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK
        || PQntuples(res) != 1)
    {
        return ngx_echelon_db_error(ctx);
    }

    return ngx_echelon_send_json(ctx->request, NGX_HTTP_OK,
               json_pack("{s:o, s:o, s:b, s:b, s:o}",
                         "channel", ngx_echelon_json_column(res, 0, "kind"),
                         "from", ngx_echelon_json_column(res, 0, "sender"),
                         "connected", 1, "allowed_by_plan", 1,
                         "updated_at",
                         ngx_echelon_json_column(res, 0, "updated_at")));
}


/* GET /v1/channels */

static ngx_int_t
ngx_echelon_channel_list(ngx_echelon_ctx_t *ctx)
{
    ctx->query.sql = NGX_ECHELON_SQL_CHANNEL_LIST;
    ngx_echelon_run(ctx, ngx_echelon_channel_listed);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_channel_listed(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    int          i, row;
    json_t      *data, *from;
    ngx_str_t    kind, v;
    const char **k;

    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK) {
        return ngx_echelon_db_error(ctx);
    }

    data = json_array();

    for (k = ngx_echelon_channels; *k; k++) {
        kind.data = (u_char *) *k;
        kind.len = ngx_strlen(*k);
        row = -1;

        for (i = 0; i < PQntuples(res); i++) {
            v = ngx_echelon_pg_value(res, i, "kind");
            if (v.len == kind.len && ngx_strncmp(v.data, *k, v.len) == 0) {
                row = i;
            }
        }

        from = (row >= 0) ? ngx_echelon_json_column(res, row, "sender")
                          : json_null();

        json_array_append_new(data,
            json_pack("{s:s, s:o, s:b, s:b}", "channel", *k, "from", from,
                      "connected", row >= 0 || kind.data[0] == 'e',
                      "allowed_by_plan",
                      ngx_echelon_plan_allows(&ctx->account_plan, &kind)));
    }

    return ngx_echelon_send_json(ctx->request, NGX_HTTP_OK,
               json_pack("{s:o, s:b, s:n}", "data", data, "has_more", 0,
                         "next_cursor"));
}


/* POST /v1/employees */

static ngx_int_t
ngx_echelon_employee_create(ngx_echelon_ctx_t *ctx)
{
    json_t     *channels;
    ngx_int_t   rc;
    ngx_str_t   name, role, tone;

    rc = ngx_echelon_parse_body(ctx);
    if (ctx->json == NULL) {
        return rc;
    }

    if (ngx_echelon_field_string(ctx, ctx->json, "name", "name", 1,
                                 NGX_ECHELON_NAME_MAX, &name, &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "role", "role", 1, 32,
                                    &role, &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "tone", "tone", 0, 32,
                                    &tone, &rc) != NGX_OK)
    {
        return rc;
    }

    if (role.len != sizeof("billing") - 1
        || ngx_strncmp(role.data, "billing", role.len) != 0)
    {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "unknown_role", "role",
                                  "the only role is \"billing\"");
    }

    if (tone.data == NULL) {
        ngx_str_set(&tone, "professional");

    } else if (ngx_echelon_field_enum(ctx, "tone", &tone, ngx_echelon_tones,
                                      &rc) != NGX_OK)
    {
        return rc;
    }

    channels = json_object_get(ctx->json, "channels");

    if (channels == NULL) {
        channels = json_pack("[s]", "email");
        json_object_set_new(ctx->json, "channels", channels);
    }

    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) name.data);
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) role.data);
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) tone.data);

    if (ngx_echelon_channels_param(ctx, channels, &rc) != NGX_OK) {
        return rc;
    }

    ctx->query.sql = NGX_ECHELON_SQL_EMPLOYEE_CREATE;
    ngx_echelon_run(ctx, ngx_echelon_employee_created);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_employee_created(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    ngx_str_t  missing;

    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK
        || PQntuples(res) != 1)
    {
        return ngx_echelon_db_error(ctx);
    }

    missing = ngx_echelon_pg_value(res, 0, "missing_channel");

    if (missing.data) {
        return ngx_echelon_not_connected(ctx, &missing);
    }

    return ngx_echelon_send_json(ctx->request, NGX_HTTP_CREATED,
                                 ngx_echelon_employee_json(res, 0));
}


/* GET /v1/employees/{id} */

static ngx_int_t
ngx_echelon_employee_get(ngx_echelon_ctx_t *ctx)
{
    return ngx_echelon_get_one(ctx, NGX_ECHELON_SQL_EMPLOYEE_GET,
                               ngx_echelon_employee_json);
}


/* GET /v1/employees */

static ngx_int_t
ngx_echelon_employee_list(ngx_echelon_ctx_t *ctx)
{
    ngx_int_t  rc, limit;
    ngx_str_t  cursor;

    if (ngx_echelon_list_args(ctx, &cursor, &limit, &rc) != NGX_OK) {
        return rc;
    }

    if (ngx_echelon_param(ctx, &cursor) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_echelon_pg_param_cstr(&ctx->query, ngx_echelon_str(ctx, limit + 1));
    ctx->query.sql = NGX_ECHELON_SQL_EMPLOYEE_LIST;
    ctx->data = (void *) limit;

    ngx_echelon_run(ctx, ngx_echelon_employee_listed);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_employee_listed(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK) {
        return ngx_echelon_db_error(ctx);
    }

    return ngx_echelon_send_json(ctx->request, NGX_HTTP_OK,
               ngx_echelon_list_json(ctx, res, ngx_echelon_employee_json));
}


static json_t *
ngx_echelon_employee_json(PGresult *res, int row)
{
    json_t     *channels;
    ngx_str_t   v;

    v = ngx_echelon_pg_value(res, row, "channels");
    channels = json_loadb((const char *) v.data, v.len, 0, NULL);

    v = ngx_echelon_pg_value(res, row, "enabled");

    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:b, s:o}",
                     "id", ngx_echelon_json_column(res, row, "id"),
                     "name", ngx_echelon_json_column(res, row, "name"),
                     "role", ngx_echelon_json_column(res, row, "role"),
                     "tone", ngx_echelon_json_column(res, row, "tone"),
                     "channels", channels ? channels : json_array(),
                     "enabled", v.len && v.data[0] == 't',
                     "created_at",
                     ngx_echelon_json_column(res, row, "created_at"));
}


/* POST /v1/employees/{id}/triggers */

static ngx_int_t
ngx_echelon_trigger_create(ngx_echelon_ctx_t *ctx)
{
    json_t     *tmpl, *delay, *every, *times;
    ngx_int_t   rc, seconds;
    ngx_str_t   event, channel, subject, body, unless;

    rc = ngx_echelon_parse_body(ctx);
    if (ctx->json == NULL) {
        return rc;
    }

    if (ngx_echelon_field_string(ctx, ctx->json, "event", "event", 1, 64,
                                 &event, &rc) != NGX_OK
        || ngx_echelon_field_enum(ctx, "event", &event, ngx_echelon_events,
                                  &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "channel", "channel", 1,
                                    16, &channel, &rc) != NGX_OK
        || ngx_echelon_field_enum(ctx, "channel", &channel,
                                  ngx_echelon_channels, &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "unless", "unless", 0,
                                    16, &unless, &rc) != NGX_OK)
    {
        return rc;
    }

    /*
     * The template is optional: what it leaves out, the employee writes
     * in its tone (the subject, the body, or {{greeting}}, {{message}} and
     * {{closing}} inside the body).
     */

    ngx_str_null(&subject);
    ngx_str_null(&body);

    tmpl = json_object_get(ctx->json, "template");

    if (tmpl && ngx_echelon_check_template(ctx, tmpl, 0, &subject, &body,
                                           &rc)
                != NGX_OK)
    {
        return rc;
    }

    delay = json_object_get(ctx->json, "delay");
    seconds = 0;

    if (delay && ngx_echelon_parse_delay(delay, &seconds) != NGX_OK) {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "invalid_delay", "delay",
                                  "\"delay\" is a number of seconds or a "
                                  "duration such as \"0\", \"30m\", \"12h\" "
                                  "or \"7d\", at most 366 days");
    }

    if (unless.data
        && (unless.len != 4 || ngx_strncmp(unless.data, "paid", 4) != 0))
    {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "invalid_value", "unless",
                                  "the only condition is \"paid\"");
    }

    /* a confirmation of payment "unless paid" could never go out */

    if (unless.data
        && event.len == sizeof("payment.received") - 1
        && ngx_strncmp(event.data, "payment.received", event.len) == 0)
    {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "condition_never_met", "unless",
                                  "a payment.received message \"unless "
                                  "paid\" would never be sent");
    }

    every = json_object_get(ctx->json, "every_days");
    times = json_object_get(ctx->json, "max_times");

    if (event.len == sizeof("invoice.unpaid_repeated") - 1
        && ngx_strncmp(event.data, "invoice.unpaid_repeated", event.len) == 0)
    {
        if (!json_is_integer(every) || json_integer_value(every) < 1
            || json_integer_value(every) > 365)
        {
            return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                      "invalid_value", "every_days",
                                      "\"every_days\" must be a whole number "
                                      "of days from 1 to 365");
        }

        if (!json_is_integer(times) || json_integer_value(times) < 1
            || json_integer_value(times) > 100)
        {
            return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                      "invalid_value", "max_times",
                                      "\"max_times\" must be a whole number "
                                      "from 1 to 100");
        }

    } else if (every || times) {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "invalid_value",
                                  every ? "every_days" : "max_times",
                                  "\"every_days\" and \"max_times\" belong "
                                  "to invoice.unpaid_repeated only");
    }

    if (!ngx_echelon_plan_allows(&ctx->account_plan, &channel)) {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "channel_not_in_plan", "channel",
                                  "the %V plan does not include %V",
                                  &ctx->account_plan, &channel);
    }

    if (ngx_echelon_param(ctx, &ctx->path[2]) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) event.data);
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) channel.data);
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) subject.data);
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) body.data);
    ngx_echelon_pg_param_cstr(&ctx->query, ngx_echelon_str(ctx, seconds));
    ngx_echelon_pg_param_cstr(&ctx->query, unless.data ? "true" : "false");
    ngx_echelon_pg_param_cstr(&ctx->query,
                              every ? ngx_echelon_str(ctx,
                                          json_integer_value(every))
                                    : NULL);
    ngx_echelon_pg_param_cstr(&ctx->query,
                              times ? ngx_echelon_str(ctx,
                                          json_integer_value(times))
                                    : NULL);

    ctx->query.sql = NGX_ECHELON_SQL_TRIGGER_CREATE;
    ngx_echelon_run(ctx, ngx_echelon_trigger_created);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_trigger_created(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    ngx_str_t  employees, id;

    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK
        || PQntuples(res) != 1)
    {
        return ngx_echelon_db_error(ctx);
    }

    employees = ngx_echelon_pg_value(res, 0, "employees");

    if (employees.len != 1 || employees.data[0] != '1') {
        return ngx_echelon_not_found(ctx);
    }

    id = ngx_echelon_pg_value(res, 0, "id");

    if (id.data == NULL) {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "channel_not_enabled", "channel",
                                  "this employee does not use that channel; "
                                  "add it to the employee's channels first");
    }

    return ngx_echelon_send_json(ctx->request, NGX_HTTP_CREATED,
                                 ngx_echelon_trigger_json(res, 0));
}


/* GET /v1/employees/{id}/triggers */

static ngx_int_t
ngx_echelon_trigger_list(ngx_echelon_ctx_t *ctx)
{
    if (ngx_echelon_param(ctx, &ctx->path[2]) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->query.sql = NGX_ECHELON_SQL_EMPLOYEE_GET;
    ctx->data = (void *) 0;
    ngx_echelon_run(ctx, ngx_echelon_trigger_listed);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_trigger_listed(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    int      i;
    json_t  *data;

    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK) {
        return ngx_echelon_db_error(ctx);
    }

    if (ctx->query.sql == NGX_ECHELON_SQL_EMPLOYEE_GET) {
        if (PQntuples(res) != 1) {
            return ngx_echelon_not_found(ctx);
        }

        ctx->query.sql = NGX_ECHELON_SQL_TRIGGER_LIST;
        ngx_echelon_run(ctx, ngx_echelon_trigger_listed);

        return NGX_DONE;
    }

    data = json_array();

    for (i = 0; i < PQntuples(res); i++) {
        json_array_append_new(data, ngx_echelon_trigger_json(res, i));
    }

    return ngx_echelon_send_json(ctx->request, NGX_HTTP_OK,
               json_pack("{s:o, s:b, s:n}", "data", data, "has_more", 0,
                         "next_cursor"));
}


static json_t *
ngx_echelon_trigger_json(PGresult *res, int row)
{
    json_t     *trigger;
    ngx_str_t   v;

    v = ngx_echelon_pg_value(res, row, "delay_seconds");

    trigger = json_pack("{s:o, s:o, s:o, s:o, s:{s:o, s:o}, s:I}",
                        "id", ngx_echelon_json_column(res, row, "id"),
                        "employee",
                        ngx_echelon_json_column(res, row, "employee_id"),
                        "event", ngx_echelon_json_column(res, row, "event"),
                        "channel",
                        ngx_echelon_json_column(res, row, "channel"),
                        "template",
                        "subject",
                        ngx_echelon_json_column(res, row, "subject"),
                        "body", ngx_echelon_json_column(res, row, "body"),
                        "delay_seconds",
                        (json_int_t) ngx_atoi(v.data, v.len));

    v = ngx_echelon_pg_value(res, row, "unless_paid");

    json_object_set_new(trigger, "unless",
                        v.len && v.data[0] == 't' ? json_string("paid")
                                                  : json_null());

    v = ngx_echelon_pg_value(res, row, "every_days");
    if (v.data) {
        json_object_set_new(trigger, "every_days",
                            json_integer(ngx_atoi(v.data, v.len)));
    }

    v = ngx_echelon_pg_value(res, row, "max_times");
    if (v.data) {
        json_object_set_new(trigger, "max_times",
                            json_integer(ngx_atoi(v.data, v.len)));
    }

    json_object_set_new(trigger, "created_at",
                        ngx_echelon_json_column(res, row, "created_at"));

    return trigger;
}


/* POST /v1/contacts */

static ngx_int_t
ngx_echelon_contact_create(ngx_echelon_ctx_t *ctx)
{
    ngx_int_t   rc;
    ngx_str_t   name, email, phone, whatsapp, tz, locale, external;

    rc = ngx_echelon_parse_body(ctx);
    if (ctx->json == NULL) {
        return rc;
    }

    if (ngx_echelon_field_string(ctx, ctx->json, "name", "name", 0,
                                 NGX_ECHELON_NAME_MAX, &name, &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "email", "email", 0, 320,
                                    &email, &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "phone", "phone", 0, 16,
                                    &phone, &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "whatsapp", "whatsapp",
                                    0, 16, &whatsapp, &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "timezone", "timezone",
                                    0, 64, &tz, &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "locale", "locale", 0,
                                    35, &locale, &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "external_id",
                                    "external_id", 0, 255, &external, &rc)
           != NGX_OK)
    {
        return rc;
    }

    if (email.data && (!ngx_echelon_email_valid(&email)
                       || ngx_strlchr(email.data, email.data + email.len, '<')))
    {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "invalid_email", "email",
                                  "\"email\" is not an email address");
    }

    if (phone.data && !ngx_echelon_phone_valid(&phone)) {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "invalid_phone", "phone",
                                  "\"phone\" must be in E.164 form, such as "
                                  "+15550000000");
    }

    if (whatsapp.data && !ngx_echelon_phone_valid(&whatsapp)) {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "invalid_phone", "whatsapp",
                                  "\"whatsapp\" must be in E.164 form, such "
                                  "as +15550000000");
    }

    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) name.data);
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) email.data);
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) phone.data);
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) whatsapp.data);
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) tz.data);
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) locale.data);
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) external.data);

    ctx->query.sql = NGX_ECHELON_SQL_CONTACT_CREATE;
    ngx_echelon_run(ctx, ngx_echelon_contact_created);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_contact_created(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    if (res && ctx->query.status == NGX_ECHELON_PG_FAILED
        && ngx_strcmp(ctx->query.sqlstate, "23505") == 0)
    {
        return ngx_echelon_reject(ctx, NGX_HTTP_CONFLICT, "duplicate",
                                  "external_id", "a contact with this "
                                  "external_id exists already");
    }

    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK) {
        return ngx_echelon_db_error(ctx);
    }

    if (PQntuples(res) != 1) {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "invalid_timezone", "timezone",
                                  "\"timezone\" must be an IANA time zone "
                                  "such as \"Europe/Paris\"");
    }

    return ngx_echelon_send_json(ctx->request, NGX_HTTP_CREATED,
                                 ngx_echelon_contact_json(res, 0));
}


/* GET /v1/contacts/{id} */

static ngx_int_t
ngx_echelon_contact_get(ngx_echelon_ctx_t *ctx)
{
    return ngx_echelon_get_one(ctx, NGX_ECHELON_SQL_CONTACT_GET,
                               ngx_echelon_contact_json);
}


static json_t *
ngx_echelon_contact_json(PGresult *res, int row)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
                     "id", ngx_echelon_json_column(res, row, "id"),
                     "name", ngx_echelon_json_column(res, row, "name"),
                     "email", ngx_echelon_json_column(res, row, "email"),
                     "phone", ngx_echelon_json_column(res, row, "phone"),
                     "whatsapp",
                     ngx_echelon_json_column(res, row, "whatsapp"),
                     "timezone",
                     ngx_echelon_json_column(res, row, "timezone"),
                     "locale", ngx_echelon_json_column(res, row, "locale"),
                     "external_id",
                     ngx_echelon_json_column(res, row, "external_id"),
                     "created_at",
                     ngx_echelon_json_column(res, row, "created_at"));
}


/*
 * The activity feed: GET /v1/employees/{id}/activity and
 * GET /v1/contacts/{id}/activity.  One statement finds the account by its
 * key, checks that the employee or contact is the account's own and reads
 * the page, written straight into the answer.  Wrong parameters are told
 * after a wrong key and an unknown owner, as they always were: the
 * statement then runs without them, for no item, to learn which comes first.
 */

static ngx_int_t
ngx_echelon_activity(ngx_echelon_ctx_t *ctx)
{
    return ngx_echelon_feed(ctx, NGX_ECHELON_SQL_ACTIVITY);
}


static ngx_int_t
ngx_echelon_contact_activity(ngx_echelon_ctx_t *ctx)
{
    return ngx_echelon_feed(ctx, NGX_ECHELON_SQL_CONTACT_ACTIVITY);
}


static ngx_int_t
ngx_echelon_feed(ngx_echelon_ctx_t *ctx, ngx_echelon_sql_e sql)
{
    ngx_echelon_feed_t  *feed;

    feed = ngx_pcalloc(ctx->request->pool, sizeof(ngx_echelon_feed_t));
    if (feed == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    feed->sql = sql;
    feed->check = (ngx_echelon_feed_args(ctx, feed, NULL) != NGX_OK);

    ctx->data = feed;

    return ngx_echelon_feed_query(ctx, feed);
}


static ngx_int_t
ngx_echelon_feed_query(ngx_echelon_ctx_t *ctx, ngx_echelon_feed_t *feed)
{
    const char               *limit;
    ngx_echelon_pg_query_t   *q;
    ngx_echelon_feed_args_t  *a, none;

    q = &ctx->query;
    a = &feed->args;

    if (feed->check) {

        /* who asks, and for whose feed: no filter and no item */

        ngx_memzero(&none, sizeof(ngx_echelon_feed_args_t));
        none.limit = -1;
        a = &none;
    }

    /* one more than the page, to know whether there is more */

    limit = ngx_echelon_str(ctx, a->limit + 1);
    if (limit == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* $1, the key's hash, stays */

    q->nparams = 1;

    if (ngx_echelon_param(ctx, &ctx->path[2]) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_echelon_pg_param_cstr(q, (const char *) a->status.data);
    ngx_echelon_pg_param_cstr(q, (const char *) a->channel.data);

    if (feed->sql == NGX_ECHELON_SQL_ACTIVITY) {
        ngx_echelon_pg_param_cstr(q, (const char *) a->contact.data);
    }

    ngx_echelon_pg_param_cstr(q, (const char *) a->since.data);
    ngx_echelon_pg_param_cstr(q, (const char *) a->cursor.data);
    ngx_echelon_pg_param_cstr(q, limit);

    q->sql = feed->sql;
    ngx_echelon_run(ctx, ngx_echelon_feed_listed);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_feed_listed(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    ngx_int_t            rc;
    ngx_echelon_feed_t  *feed;

    feed = ctx->data;

    if (res && ctx->query.status == NGX_ECHELON_PG_FAILED
        && ctx->query.sqlstate[0] == '2' && ctx->query.sqlstate[1] == '2'
        && !feed->check)
    {
        /* "since" is not a time: told once the key and the owner are */

        feed->check = 1;
        feed->bad_since = 1;

        return ngx_echelon_feed_query(ctx, feed);
    }

    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK) {
        return ngx_echelon_db_error(ctx);
    }

    if (PQntuples(res) == 0) {
        return ngx_echelon_api_unauthorized(ctx);
    }

    if (PQgetisnull(res, 0, PQfnumber(res, "owner"))) {
        return ngx_echelon_not_found(ctx);
    }

    if (feed->bad_since) {
        return ngx_echelon_reject(ctx, NGX_HTTP_BAD_REQUEST,
                                  "invalid_parameter", "since",
                                  "\"since\" must be an RFC 3339 time");
    }

    if (feed->check) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        (void) ngx_echelon_feed_args(ctx, feed, &rc);
        return rc;
    }

    return ngx_echelon_feed_send(ctx, res, feed->args.limit);
}


/* the feed's parameters in the order they are checked; rc NULL only tests */

static ngx_int_t
ngx_echelon_feed_args(ngx_echelon_ctx_t *ctx, ngx_echelon_feed_t *feed,
    ngx_int_t *rc)
{
    ngx_echelon_ctx_t        *tell;
    ngx_echelon_feed_args_t  *a;

    a = &feed->args;
    tell = rc ? ctx : NULL;

    if (ngx_echelon_list_args(ctx, &a->cursor, &a->limit, rc) != NGX_OK) {
        return NGX_DECLINED;
    }

    if (ngx_echelon_arg(ctx, "status", &a->status) != NGX_OK
        || ngx_echelon_arg(ctx, "channel", &a->channel) != NGX_OK
        || ngx_echelon_arg(ctx, "contact", &a->contact) != NGX_OK
        || ngx_echelon_arg(ctx, "since", &a->since) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (a->since.data && !ngx_echelon_time_valid(&a->since, 1)) {
        if (rc) {
            *rc = ngx_echelon_reject(ctx, NGX_HTTP_BAD_REQUEST,
                                     "invalid_parameter", "since",
                                     "\"since\" must be an RFC 3339 time");
        }

        return NGX_DECLINED;
    }

    if (a->contact.data && !ngx_echelon_id_valid(&a->contact)) {
        if (rc) {
            *rc = ngx_echelon_reject(ctx, NGX_HTTP_BAD_REQUEST,
                                     "invalid_parameter", "contact",
                                     "\"contact\" is a contact id");
        }

        return NGX_DECLINED;
    }

    if ((a->status.data
         && ngx_echelon_field_enum(tell, "status", &a->status,
                                   ngx_echelon_statuses, rc) != NGX_OK)
        || (a->channel.data
            && ngx_echelon_field_enum(tell, "channel", &a->channel,
                                      ngx_echelon_channels, rc) != NGX_OK))
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* {"data": [...], "has_more", "next_cursor"} from limit + 1 rows */

static ngx_int_t
ngx_echelon_feed_send(ngx_echelon_ctx_t *ctx, PGresult *res, ngx_int_t limit)
{
    int                      i, n, col[NGX_ECHELON_DELIVERY_FIELDS];
    size_t                   size;
    ngx_uint_t               f, more;
    ngx_echelon_json_out_t   out;

    if (ngx_echelon_delivery_columns(ctx, res, col) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the owner's row without an item is an empty page */

    n = PQgetisnull(res, 0, col[0]) ? 0 : PQntuples(res);
    more = (n > limit);

    if (more) {
        n = limit;
    }

    /* room for the page as it most often is, in one buffer */

    size = 64;

    for (i = 0; i < n; i++) {
        size += 256;

        for (f = 0; f < NGX_ECHELON_DELIVERY_FIELDS; f++) {
            size += PQgetlength(res, i, col[f]);
        }
    }

    ngx_echelon_out_init(&out, ctx->request, size + size / 4);
    ngx_echelon_out_literal(&out, "{\"data\":[");

    for (i = 0; i < n; i++) {
        if (i) {
            ngx_echelon_out_literal(&out, ",");
        }

        ngx_echelon_delivery_write(&out, res, i, col);
        ngx_echelon_out_literal(&out, "}");
    }

    if (more) {
        ngx_echelon_out_literal(&out, "],\"has_more\":true,\"next_cursor\":");
        ngx_echelon_out_column(&out, res, n - 1, col[0]);
        ngx_echelon_out_literal(&out, "}\n");

    } else {
        ngx_echelon_out_literal(&out,
                                "],\"has_more\":false,\"next_cursor\":null}\n");
    }

    return ngx_echelon_out_send(&out, NGX_HTTP_OK);
}


/* where each field of a delivery is in res */

static ngx_int_t
ngx_echelon_delivery_columns(ngx_echelon_ctx_t *ctx, PGresult *res, int *col)
{
    ngx_uint_t  f;

    for (f = 0; f < NGX_ECHELON_DELIVERY_FIELDS; f++) {
        col[f] = PQfnumber(res, ngx_echelon_delivery_fields[f].column);

        if (col[f] < 0) {
            ngx_log_error(NGX_LOG_ALERT, ctx->request->connection->log, 0,
                          "echelon: no column \"%s\" for a delivery",
                          ngx_echelon_delivery_fields[f].column);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* a delivery of the feed, its object left open for more */

static void
ngx_echelon_delivery_write(ngx_echelon_json_out_t *out, PGresult *res,
    int row, int *col)
{
    char                         *v;
    ngx_uint_t                    f;
    ngx_echelon_delivery_field_t  *field;

    for (f = 0; f < NGX_ECHELON_DELIVERY_FIELDS; f++) {
        field = &ngx_echelon_delivery_fields[f];

        ngx_echelon_out_raw(out, field->key.data, field->key.len);

        if (!field->integer) {
            ngx_echelon_out_column(out, res, row, col[f]);
            continue;
        }

        v = PQgetvalue(res, row, col[f]);
        ngx_echelon_out_integer(out,
                                ngx_atoi((u_char *) v,
                                         PQgetlength(res, row, col[f])));
    }
}


/* GET /v1/deliveries/{id}: the feed's fields, the message and its attempts */

static ngx_int_t
ngx_echelon_delivery_get(ngx_echelon_ctx_t *ctx)
{
    if (ngx_echelon_param(ctx, &ctx->path[2]) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->query.sql = NGX_ECHELON_SQL_DELIVERY_GET;
    ngx_echelon_run(ctx, ngx_echelon_delivery_found);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_delivery_found(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    int                      col[NGX_ECHELON_DELIVERY_FIELDS];
    char                    *history;
    json_t                  *json;
    ngx_str_t                v;
    ngx_echelon_json_out_t   out;

    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK) {
        return ngx_echelon_db_error(ctx);
    }

    if (PQntuples(res) == 0) {
        return ngx_echelon_api_unauthorized(ctx);
    }

    if (ngx_echelon_delivery_columns(ctx, res, col) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (PQgetisnull(res, 0, col[0])) {
        return ngx_echelon_not_found(ctx);
    }

    /* the history as jansson reads and writes it back: small and rare */

    v = ngx_echelon_pg_value(res, 0, "attempt_history");
    json = v.data ? json_loadb((const char *) v.data, v.len, 0, NULL) : NULL;
    history = json ? json_dumps(json, JSON_COMPACT | JSON_PRESERVE_ORDER)
                   : NULL;
    json_decref(json);

    ngx_echelon_out_init(&out, ctx->request, 4096);

    ngx_echelon_delivery_write(&out, res, 0, col);
    ngx_echelon_out_literal(&out, ",\"body\":");
    ngx_echelon_out_column(&out, res, 0, PQfnumber(res, "body"));
    ngx_echelon_out_literal(&out, ",\"attempt_history\":");

    if (history) {
        ngx_echelon_out_raw(&out, (u_char *) history, ngx_strlen(history));
        free(history);

    } else {
        ngx_echelon_out_literal(&out, "[]");
    }

    ngx_echelon_out_literal(&out, "}\n");

    return ngx_echelon_out_send(&out, NGX_HTTP_OK);
}


/* PATCH /v1/account (admin): {"account": "acct_...", "plan": "..."} */

static ngx_int_t
ngx_echelon_account_plan(ngx_echelon_ctx_t *ctx)
{
    ngx_int_t  rc;
    ngx_str_t  account, plan;

    rc = ngx_echelon_parse_body(ctx);
    if (ctx->json == NULL) {
        return rc;
    }

    if (ngx_echelon_field_string(ctx, ctx->json, "account", "account", 1,
                                 64, &account, &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "plan", "plan", 1, 16,
                                    &plan, &rc) != NGX_OK
        || ngx_echelon_field_enum(ctx, "plan", &plan, ngx_echelon_plans, &rc)
           != NGX_OK)
    {
        return rc;
    }

    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) account.data);
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) plan.data);
    ctx->query.sql = NGX_ECHELON_SQL_ACCOUNT_PLAN;

    ngx_echelon_run(ctx, ngx_echelon_account_planned);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_account_planned(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK) {
        return ngx_echelon_db_error(ctx);
    }

    if (PQntuples(res) != 1) {
        return ngx_echelon_reject(ctx, NGX_HTTP_NOT_FOUND, "not_found",
                                  "account", "no account with this id");
    }

    return ngx_echelon_send_json(ctx->request, NGX_HTTP_OK,
               json_pack("{s:o, s:o, s:o, s:o}",
                         "id", ngx_echelon_json_column(res, 0, "id"),
                         "name", ngx_echelon_json_column(res, 0, "name"),
                         "plan", ngx_echelon_json_column(res, 0, "plan"),
                         "created_at",
                         ngx_echelon_json_column(res, 0, "created_at")));
}


/* PATCH /v1/employees/{id}: name, tone, channels, enabled */

static ngx_int_t
ngx_echelon_employee_patch(ngx_echelon_ctx_t *ctx)
{
    json_t     *channels, *enabled;
    ngx_int_t   rc;
    ngx_str_t   name, tone;

    rc = ngx_echelon_parse_body(ctx);
    if (ctx->json == NULL) {
        return rc;
    }

    if (ngx_echelon_field_string(ctx, ctx->json, "name", "name", 0,
                                 NGX_ECHELON_NAME_MAX, &name, &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "tone", "tone", 0, 32,
                                    &tone, &rc) != NGX_OK)
    {
        return rc;
    }

    if (name.data && name.len == 0) {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "empty_value", "name",
                                  "\"name\" must not be empty");
    }

    if (tone.data && ngx_echelon_field_enum(ctx, "tone", &tone,
                                            ngx_echelon_tones, &rc)
                     != NGX_OK)
    {
        return rc;
    }

    enabled = json_object_get(ctx->json, "enabled");

    if (enabled && !json_is_boolean(enabled)) {
        return ngx_echelon_reject(ctx, NGX_HTTP_BAD_REQUEST, "invalid_type",
                                  "enabled", "\"enabled\" must be true or "
                                  "false");
    }

    if (ngx_echelon_param(ctx, &ctx->path[2]) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) name.data);
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) tone.data);

    channels = json_object_get(ctx->json, "channels");

    if (channels == NULL) {
        ngx_echelon_pg_param_cstr(&ctx->query, NULL);

    } else if (ngx_echelon_channels_param(ctx, channels, &rc) != NGX_OK) {
        return rc;
    }

    ngx_echelon_pg_param_cstr(&ctx->query,
                              enabled == NULL ? NULL
                              : json_is_true(enabled) ? "true" : "false");

    ctx->query.sql = NGX_ECHELON_SQL_EMPLOYEE_PATCH;
    ngx_echelon_run(ctx, ngx_echelon_employee_patched);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_employee_patched(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    ngx_str_t  missing, found;

    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK
        || PQntuples(res) != 1)
    {
        return ngx_echelon_db_error(ctx);
    }

    found = ngx_echelon_pg_value(res, 0, "employees");

    if (found.len != 1 || found.data[0] != '1') {
        return ngx_echelon_not_found(ctx);
    }

    missing = ngx_echelon_pg_value(res, 0, "missing_channel");

    if (missing.data) {
        return ngx_echelon_not_connected(ctx, &missing);
    }

    return ngx_echelon_send_json(ctx->request, NGX_HTTP_OK,
                                 ngx_echelon_employee_json(res, 0));
}


/* DELETE /v1/employees/{id}: what it had scheduled is cancelled */

static ngx_int_t
ngx_echelon_employee_delete(ngx_echelon_ctx_t *ctx)
{
    if (ngx_echelon_param(ctx, &ctx->path[2]) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->query.sql = NGX_ECHELON_SQL_EMPLOYEE_DELETE;
    ngx_echelon_run(ctx, ngx_echelon_deleted);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_deleted(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    ngx_str_t  n;

    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK) {
        return ngx_echelon_db_error(ctx);
    }

    if (PQntuples(res) != 1) {
        return ngx_echelon_not_found(ctx);
    }

    n = ngx_echelon_pg_value(res, 0, "cancelled");

    return ngx_echelon_send_json(ctx->request, NGX_HTTP_OK,
               json_pack("{s:o, s:b, s:I}",
                         "id", ngx_echelon_json_column(res, 0, "id"),
                         "deleted", 1,
                         "cancelled_deliveries",
                         (json_int_t) ngx_atoi(n.data, n.len)));
}


/* GET /v1/triggers/{id} */

static ngx_int_t
ngx_echelon_trigger_get(ngx_echelon_ctx_t *ctx)
{
    return ngx_echelon_get_one(ctx, NGX_ECHELON_SQL_TRIGGER_GET,
                               ngx_echelon_trigger_json);
}


/*
 * PATCH /v1/triggers/{id}: template, delay, unless, every_days, max_times.
 * Deliveries already scheduled keep their time; they are rendered with the
 * template as it is when they go out.
 */

static ngx_int_t
ngx_echelon_trigger_patch(ngx_echelon_ctx_t *ctx)
{
    json_t      *tmpl, *delay, *unless;
    ngx_int_t    rc, seconds;
    ngx_str_t    subject, body;
    json_int_t   every, times;

    rc = ngx_echelon_parse_body(ctx);
    if (ctx->json == NULL) {
        return rc;
    }

    ngx_str_null(&subject);
    ngx_str_null(&body);

    tmpl = json_object_get(ctx->json, "template");

    if (tmpl && ngx_echelon_check_template(ctx, tmpl, 0, &subject, &body,
                                           &rc)
                != NGX_OK)
    {
        return rc;
    }

    delay = json_object_get(ctx->json, "delay");
    seconds = -1;

    if (delay && ngx_echelon_parse_delay(delay, &seconds) != NGX_OK) {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "invalid_delay", "delay",
                                  "\"delay\" is a number of seconds or a "
                                  "duration such as \"0\", \"30m\", \"12h\" "
                                  "or \"7d\", at most 366 days");
    }

    unless = json_object_get(ctx->json, "unless");

    if (unless && !json_is_null(unless)
        && !(json_is_string(unless)
             && ngx_strcmp(json_string_value(unless), "paid") == 0))
    {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "invalid_value", "unless",
                                  "the only condition is \"paid\"");
    }

    if (ngx_echelon_field_integer(ctx, ctx->json, "every_days", 0, 1, 365,
                                  &every, &rc) != NGX_OK
        || ngx_echelon_field_integer(ctx, ctx->json, "max_times", 0, 1, 100,
                                     &times, &rc) != NGX_OK)
    {
        return rc;
    }

    if (ngx_echelon_param(ctx, &ctx->path[2]) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) subject.data);
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) body.data);
    ngx_echelon_pg_param_cstr(&ctx->query,
                              seconds >= 0 ? ngx_echelon_str(ctx, seconds)
                                           : NULL);
    ngx_echelon_pg_param_cstr(&ctx->query,
                              unless == NULL ? NULL
                              : json_is_null(unless) ? "false" : "true");
    ngx_echelon_pg_param_cstr(&ctx->query,
                              every ? ngx_echelon_str(ctx, every) : NULL);
    ngx_echelon_pg_param_cstr(&ctx->query,
                              times ? ngx_echelon_str(ctx, times) : NULL);

    ctx->query.sql = NGX_ECHELON_SQL_TRIGGER_PATCH;
    ctx->item = ngx_echelon_trigger_json;
    ngx_echelon_run(ctx, ngx_echelon_trigger_patched);

    return NGX_DONE;
}


/* DELETE /v1/triggers/{id}: what it had scheduled is cancelled */

static ngx_int_t
ngx_echelon_trigger_delete(ngx_echelon_ctx_t *ctx)
{
    if (ngx_echelon_param(ctx, &ctx->path[2]) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->query.sql = NGX_ECHELON_SQL_TRIGGER_DELETE;
    ngx_echelon_run(ctx, ngx_echelon_deleted);

    return NGX_DONE;
}


/*
 * PATCH /v1/contacts/{id}: a change of name, email, phone or address fires
 * billing_details.updated
 */

static ngx_int_t
ngx_echelon_contact_patch(ngx_echelon_ctx_t *ctx)
{
    char       *text;
    json_t     *address;
    ngx_int_t   rc;
    ngx_str_t   name, email, phone, whatsapp, tz, locale, v;

    rc = ngx_echelon_parse_body(ctx);
    if (ctx->json == NULL) {
        return rc;
    }

    if (ngx_echelon_field_string(ctx, ctx->json, "name", "name", 0,
                                 NGX_ECHELON_NAME_MAX, &name, &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "email", "email", 0, 320,
                                    &email, &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "phone", "phone", 0, 16,
                                    &phone, &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "whatsapp", "whatsapp",
                                    0, 16, &whatsapp, &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "timezone", "timezone",
                                    0, 64, &tz, &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "locale", "locale", 0,
                                    35, &locale, &rc) != NGX_OK)
    {
        return rc;
    }

    if (json_object_get(ctx->json, "external_id")) {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "read_only", "external_id",
                                  "\"external_id\" cannot be changed");
    }

    if (email.data && (!ngx_echelon_email_valid(&email)
                       || ngx_strlchr(email.data, email.data + email.len, '<')))
    {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "invalid_email", "email",
                                  "\"email\" is not an email address");
    }

    if ((phone.data && !ngx_echelon_phone_valid(&phone))
        || (whatsapp.data && !ngx_echelon_phone_valid(&whatsapp)))
    {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "invalid_phone",
                                  phone.data && !ngx_echelon_phone_valid(&phone)
                                  ? "phone" : "whatsapp",
                                  "phone numbers must be in E.164 form, such "
                                  "as +15550000000");
    }

    address = json_object_get(ctx->json, "address");

    if (address && !json_is_object(address) && !json_is_null(address)) {
        return ngx_echelon_reject(ctx, NGX_HTTP_BAD_REQUEST, "invalid_type",
                                  "address", "\"address\" must be an object "
                                  "(line1, line2, city, postal_code, state, "
                                  "country) or null");
    }

    /* the time zone is checked by the database against its list */

    text = json_dumps(ctx->json, JSON_COMPACT);
    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_echelon_param(ctx, &ctx->path[2]) != NGX_OK) {
        free(text);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    v.data = (u_char *) text;
    v.len = ngx_strlen(text);

    rc = ngx_echelon_param(ctx, &v);
    free(text);

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->query.sql = NGX_ECHELON_SQL_CONTACT_PATCH;
    ngx_echelon_run(ctx, ngx_echelon_contact_patched);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_contact_patched(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    json_t     *contact, *address;
    ngx_str_t   v;

    if (res && ctx->query.status == NGX_ECHELON_PG_FAILED
        && ctx->query.sqlstate[0] == '2' && ctx->query.sqlstate[1] == '2')
    {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "invalid_timezone", "timezone",
                                  "\"timezone\" must be an IANA time zone "
                                  "such as \"Europe/Paris\"");
    }

    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK) {
        return ngx_echelon_db_error(ctx);
    }

    v = ngx_echelon_pg_value(res, 0, "id");

    if (PQntuples(res) != 1 || v.data == NULL) {
        return ngx_echelon_not_found(ctx);
    }

    contact = ngx_echelon_contact_json(res, 0);

    v = ngx_echelon_pg_value(res, 0, "address");
    address = v.data ? json_loadb((const char *) v.data, v.len, 0, NULL)
                     : NULL;

    json_object_set_new(contact, "address", address ? address : json_null());

    v = ngx_echelon_pg_value(res, 0, "changed");
    json_object_set_new(contact, "billing_details_changed",
                        json_boolean(v.len && v.data[0] == 't'));

    return ngx_echelon_send_json(ctx->request, NGX_HTTP_OK, contact);
}


/* POST /v1/invoices: fires invoice.issued and schedules the reminders */

static ngx_int_t
ngx_echelon_invoice_create(ngx_echelon_ctx_t *ctx)
{
    json_t      *due;
    ngx_int_t    rc;
    ngx_str_t    contact, number, currency, url, external, due_text;
    json_int_t   amount;

    rc = ngx_echelon_parse_body(ctx);
    if (ctx->json == NULL) {
        return rc;
    }

    if (ngx_echelon_field_string(ctx, ctx->json, "contact", "contact", 1, 64,
                                 &contact, &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "number", "number", 0,
                                    64, &number, &rc) != NGX_OK
        || ngx_echelon_field_integer(ctx, ctx->json, "amount_due", 1, 0,
                                     (json_int_t) 1 << 52, &amount, &rc)
           != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "currency", "currency",
                                    1, 3, &currency, &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "url", "url", 0, 2048,
                                    &url, &rc) != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "external_id",
                                    "external_id", 0, 255, &external, &rc)
           != NGX_OK)
    {
        return rc;
    }

    if (currency.len != 3 || !ngx_echelon_is_code(&currency)) {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "invalid_currency", "currency",
                                  "\"currency\" is a three-letter ISO 4217 "
                                  "code in lower case, such as \"usd\"");
    }

    if (url.data && ngx_strncmp(url.data, "https://", 8) != 0
        && ngx_strncmp(url.data, "http://", 7) != 0)
    {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "invalid_url", "url",
                                  "\"url\" must be an http or https URL");
    }

    /* an RFC 3339 time or a date, by its shape; the database checks more */

    due = json_object_get(ctx->json, "due_date");
    ngx_str_null(&due_text);

    if (due && !json_is_null(due)) {
        if (!json_is_string(due)) {
            return ngx_echelon_reject(ctx, NGX_HTTP_BAD_REQUEST,
                                      "invalid_type", "due_date",
                                      "\"due_date\" must be an RFC 3339 "
                                      "time or a date (YYYY-MM-DD)");
        }

        due_text.data = (u_char *) json_string_value(due);
        due_text.len = json_string_length(due);

        if (!ngx_echelon_time_valid(&due_text, 1)) {
            return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                      "invalid_date", "due_date",
                                      "\"due_date\" must be an RFC 3339 "
                                      "time or a date (YYYY-MM-DD)");
        }
    }

    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) contact.data);
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) number.data);
    ngx_echelon_pg_param_cstr(&ctx->query, ngx_echelon_str(ctx, amount));
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) currency.data);
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) due_text.data);
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) url.data);
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) external.data);

    ctx->query.sql = NGX_ECHELON_SQL_INVOICE_CREATE;
    ngx_echelon_run(ctx, ngx_echelon_invoice_created);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_invoice_created(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    if (res && ctx->query.status == NGX_ECHELON_PG_FAILED) {

        if (ngx_strcmp(ctx->query.sqlstate, "23505") == 0) {
            return ngx_echelon_reject(ctx, NGX_HTTP_CONFLICT, "duplicate",
                                      "external_id", "an invoice with this "
                                      "external_id exists already");
        }

        if (ctx->query.sqlstate[0] == '2' && ctx->query.sqlstate[1] == '2') {
            return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                      "invalid_date", "due_date",
                                      "\"due_date\" must be an RFC 3339 "
                                      "time or a date (YYYY-MM-DD)");
        }
    }

    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK) {
        return ngx_echelon_db_error(ctx);
    }

    if (PQntuples(res) != 1) {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "unknown_contact", "contact",
                                  "no contact with this id");
    }

    return ngx_echelon_send_json(ctx->request, NGX_HTTP_CREATED,
                                 ngx_echelon_invoice_json(res, 0));
}


/* GET /v1/invoices/{id} */

static ngx_int_t
ngx_echelon_invoice_get(ngx_echelon_ctx_t *ctx)
{
    return ngx_echelon_get_one(ctx, NGX_ECHELON_SQL_INVOICE_GET,
                               ngx_echelon_invoice_json);
}


/* POST /v1/invoices/{id}/void: what is pending for it is cancelled */

static ngx_int_t
ngx_echelon_invoice_void(ngx_echelon_ctx_t *ctx)
{
    if (ngx_echelon_param(ctx, &ctx->path[2]) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->query.sql = NGX_ECHELON_SQL_INVOICE_VOID;
    ngx_echelon_run(ctx, ngx_echelon_invoice_voided);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_invoice_voided(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    ngx_str_t  status, voided;

    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK) {
        return ngx_echelon_db_error(ctx);
    }

    if (PQntuples(res) != 1 || ngx_echelon_pg_value(res, 0, "id").data == NULL)
    {
        return ngx_echelon_not_found(ctx);
    }

    status = ngx_echelon_pg_value(res, 0, "status");
    voided = ngx_echelon_pg_value(res, 0, "voided");

    if (voided.len == 0 || voided.data[0] != 't') {
        return ngx_echelon_reject(ctx, NGX_HTTP_CONFLICT, "invoice_closed",
                                  NULL, "the invoice is %V already",
                                  &status);
    }

    return ngx_echelon_send_json(ctx->request, NGX_HTTP_OK,
                                 ngx_echelon_invoice_json(res, 0));
}


static json_t *
ngx_echelon_invoice_json(PGresult *res, int row)
{
    ngx_str_t  due, paid;

    due = ngx_echelon_pg_value(res, row, "amount_due");
    paid = ngx_echelon_pg_value(res, row, "amount_paid");

    return json_pack("{s:o, s:o, s:o, s:I, s:I, s:o, s:o, s:o, s:o, s:o,"
                     " s:o}",
                     "id", ngx_echelon_json_column(res, row, "id"),
                     "contact",
                     ngx_echelon_json_column(res, row, "contact_id"),
                     "number", ngx_echelon_json_column(res, row, "number"),
                     "amount_due", (json_int_t) ngx_atoof(due.data, due.len),
                     "amount_paid",
                     (json_int_t) ngx_atoof(paid.data, paid.len),
                     "currency",
                     ngx_echelon_json_column(res, row, "currency"),
                     "due_date",
                     ngx_echelon_json_column(res, row, "due_date"),
                     "url", ngx_echelon_json_column(res, row, "url"),
                     "status", ngx_echelon_json_column(res, row, "status"),
                     "external_id",
                     ngx_echelon_json_column(res, row, "external_id"),
                     "created_at",
                     ngx_echelon_json_column(res, row, "created_at"));
}


/* POST /v1/invoices/{id}/payments: fires payment.received */

static ngx_int_t
ngx_echelon_payment_create(ngx_echelon_ctx_t *ctx)
{
    ngx_int_t    rc;
    ngx_str_t    currency;
    json_int_t   amount;

    rc = ngx_echelon_parse_body(ctx);
    if (ctx->json == NULL) {
        return rc;
    }

    if (ngx_echelon_field_integer(ctx, ctx->json, "amount", 1, 1,
                                  (json_int_t) 1 << 52, &amount, &rc)
        != NGX_OK
        || ngx_echelon_field_string(ctx, ctx->json, "currency", "currency",
                                    1, 3, &currency, &rc) != NGX_OK)
    {
        return rc;
    }

    if (ngx_echelon_param(ctx, &ctx->path[2]) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_echelon_pg_param_cstr(&ctx->query, ngx_echelon_str(ctx, amount));
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) currency.data);

    ctx->data = (void *) (ngx_int_t) amount;
    ctx->query.sql = NGX_ECHELON_SQL_PAYMENT_CREATE;
    ngx_echelon_run(ctx, ngx_echelon_payment_created);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_payment_created(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    ngx_str_t  prior, currency, paid;

    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK) {
        return ngx_echelon_db_error(ctx);
    }

    if (PQntuples(res) != 1) {
        return ngx_echelon_not_found(ctx);
    }

    prior = ngx_echelon_pg_value(res, 0, "prior_status");
    currency = ngx_echelon_pg_value(res, 0, "currency");

    if (ngx_echelon_pg_value(res, 0, "payment_id").data == NULL) {

        if (prior.len == 4 && ngx_strncmp(prior.data, "paid", 4) == 0) {
            return ngx_echelon_reject(ctx, NGX_HTTP_CONFLICT,
                                      "invoice_closed", NULL,
                                      "the invoice is paid already");
        }

        if (prior.len == 4 && ngx_strncmp(prior.data, "void", 4) == 0) {
            return ngx_echelon_reject(ctx, NGX_HTTP_CONFLICT,
                                      "invoice_closed", NULL,
                                      "the invoice is void");
        }

        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "currency_mismatch", "currency",
                                  "the invoice is in %V", &currency);
    }

    paid = ngx_echelon_pg_value(res, 0, "amount_paid");

    return ngx_echelon_send_json(ctx->request, NGX_HTTP_CREATED,
               json_pack("{s:o, s:o, s:I, s:o, s:{s:o, s:I}}",
                         "id", ngx_echelon_json_column(res, 0, "payment_id"),
                         "invoice", ngx_echelon_json_str(&ctx->path[2]),
                         "amount", (json_int_t) (ngx_int_t) ctx->data,
                         "currency", ngx_echelon_json_str(&currency),
                         "invoice_state",
                         "status",
                         ngx_echelon_json_column(res, 0, "invoice_status"),
                         "amount_paid",
                         (json_int_t) ngx_atoof(paid.data, paid.len)));
}


/*
 * "channels": 1 to 3 distinct channels the plan allows, appended to the
 * statement as a JSON array; NGX_ERROR with the answer sent and *rc set
 */

static ngx_int_t
ngx_echelon_channels_param(ngx_echelon_ctx_t *ctx, json_t *channels,
    ngx_int_t *rc)
{
    char       *text;
    size_t      i;
    json_t     *ch;
    ngx_str_t   kind, v;

    if (!json_is_array(channels) || json_array_size(channels) == 0
        || json_array_size(channels) > 3)
    {
        *rc = ngx_echelon_reject(ctx, NGX_HTTP_BAD_REQUEST, "invalid_type",
                                 "channels", "\"channels\" must be a list "
                                 "of 1 to 3 channels");
        return NGX_ERROR;
    }

    json_array_foreach(channels, i, ch) {
        if (!json_is_string(ch)) {
            *rc = ngx_echelon_reject(ctx, NGX_HTTP_BAD_REQUEST,
                                     "invalid_type", "channels",
                                     "each channel must be a string");
            return NGX_ERROR;
        }

        kind.data = (u_char *) json_string_value(ch);
        kind.len = json_string_length(ch);

        if (ngx_echelon_field_enum(ctx, "channels", &kind,
                                   ngx_echelon_channels, rc) != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (!ngx_echelon_plan_allows(&ctx->account_plan, &kind)) {
            *rc = ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                     "channel_not_in_plan", "channels",
                                     "the %V plan does not include %V",
                                     &ctx->account_plan, &kind);
            return NGX_ERROR;
        }

        if (i && ngx_echelon_json_has(channels, i, ch)) {
            *rc = ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                     "duplicate_value", "channels",
                                     "%V is listed twice", &kind);
            return NGX_ERROR;
        }
    }

    text = json_dumps(channels, JSON_COMPACT);
    if (text == NULL) {
        *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_ERROR;
    }

    v.data = (u_char *) text;
    v.len = ngx_strlen(text);

    if (ngx_echelon_param(ctx, &v) != NGX_OK) {
        free(text);
        *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_ERROR;
    }

    free(text);

    return NGX_OK;
}


static ngx_int_t
ngx_echelon_not_connected(ngx_echelon_ctx_t *ctx, ngx_str_t *channel)
{
    return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                              "channel_not_connected", "channels",
                              "connect %V first with PUT /v1/channels/%V",
                              channel, channel);
}


/* template.subject and template.body, with every variable known */

static ngx_int_t
ngx_echelon_check_template(ngx_echelon_ctx_t *ctx, json_t *tmpl,
    ngx_uint_t subject_required, ngx_str_t *subject, ngx_str_t *body,
    ngx_int_t *rc)
{
    ngx_str_t  unknown;

    if (!json_is_object(tmpl)) {
        *rc = ngx_echelon_reject(ctx, NGX_HTTP_BAD_REQUEST, "invalid_type",
                                 "template", "\"template\" must be an object "
                                 "with \"subject\" and \"body\"");
        return NGX_ERROR;
    }

    if (ngx_echelon_field_string(ctx, tmpl, "subject", "template.subject",
                                 subject_required, 998, subject, rc)
        != NGX_OK
        || ngx_echelon_field_string(ctx, tmpl, "body", "template.body", 0,
                                    NGX_ECHELON_TEXT_MAX, body, rc)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (subject->data
        && (ngx_strlchr(subject->data, subject->data + subject->len, '\n')
            || ngx_strlchr(subject->data, subject->data + subject->len, '\r')))
    {
        *rc = ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                 "invalid_value", "template.subject",
                                 "a subject is one line");
        return NGX_ERROR;
    }

    if (subject->data && ngx_echelon_template_check(subject, &unknown)
                         != NGX_OK)
    {
        *rc = ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                 "unknown_variable", "template.subject",
                                 "unknown template variable \"%V\"",
                                 &unknown);
        return NGX_ERROR;
    }

    if (body->data && ngx_echelon_template_check(body, &unknown) != NGX_OK) {
        *rc = ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                 "unknown_variable", "template.body",
                                 "unknown template variable \"%V\"",
                                 &unknown);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* an integer field within [min, max]; 0 in *out when absent */

static ngx_int_t
ngx_echelon_field_integer(ngx_echelon_ctx_t *ctx, json_t *obj,
    const char *name, ngx_uint_t required, json_int_t min, json_int_t max,
    json_int_t *out, ngx_int_t *rc)
{
    json_t  *v;

    *out = 0;
    v = json_object_get(obj, name);

    if (v == NULL || json_is_null(v)) {
        if (!required) {
            return NGX_OK;
        }

        *rc = ngx_echelon_reject(ctx, NGX_HTTP_BAD_REQUEST, "missing_field",
                                 name, "\"%s\" is required", name);
        return NGX_ERROR;
    }

    if (!json_is_integer(v)) {
        *rc = ngx_echelon_reject(ctx, NGX_HTTP_BAD_REQUEST, "invalid_type",
                                 name, "\"%s\" must be a whole number",
                                 name);
        return NGX_ERROR;
    }

    if (json_integer_value(v) < min || json_integer_value(v) > max) {
        *rc = ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                 "out_of_range", name,
                                 "\"%s\" must be from %L to %L", name,
                                 (int64_t) min, (int64_t) max);
        return NGX_ERROR;
    }

    *out = json_integer_value(v);

    return NGX_OK;
}


/*
 * A string field of obj: NGX_OK with out set (out->data NULL when absent
 * and optional), or NGX_ERROR with the error answer sent and *rc its code.
 * The value stays NUL-terminated inside ctx->json.
 */

static ngx_int_t
ngx_echelon_field_string(ngx_echelon_ctx_t *ctx, json_t *obj,
    const char *name, const char *path, ngx_uint_t required, size_t max,
    ngx_str_t *out, ngx_int_t *rc)
{
    json_t  *v;

    ngx_str_null(out);

    v = json_object_get(obj, name);

    if (v == NULL || (json_is_null(v) && !required)) {
        if (!required) {
            return NGX_OK;
        }

        *rc = ngx_echelon_reject(ctx, NGX_HTTP_BAD_REQUEST, "missing_field",
                                 path, "\"%s\" is required", path);
        return NGX_ERROR;
    }

    if (!json_is_string(v)) {
        *rc = ngx_echelon_reject(ctx, NGX_HTTP_BAD_REQUEST, "invalid_type",
                                 path, "\"%s\" must be a string", path);
        return NGX_ERROR;
    }

    out->data = (u_char *) json_string_value(v);
    out->len = json_string_length(v);

    if (ngx_strlen(out->data) != out->len) {
        *rc = ngx_echelon_reject(ctx, NGX_HTTP_BAD_REQUEST, "invalid_value",
                                 path, "\"%s\" must not contain NUL", path);
        return NGX_ERROR;
    }

    if (required && out->len == 0) {
        *rc = ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                 "empty_value", path,
                                 "\"%s\" must not be empty", path);
        return NGX_ERROR;
    }

    if (out->len > max) {
        *rc = ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                 "too_long", path,
                                 "\"%s\" is longer than %uz characters",
                                 path, max);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* value is one of allowed; ctx NULL only tests */

static ngx_int_t
ngx_echelon_field_enum(ngx_echelon_ctx_t *ctx, const char *field,
    ngx_str_t *value, const char **allowed, ngx_int_t *rc)
{
    u_char        list[256], *p, *last;
    const char  **a;

    for (a = allowed; *a; a++) {
        if (ngx_strlen(*a) == value->len
            && ngx_strncmp(*a, value->data, value->len) == 0)
        {
            return NGX_OK;
        }
    }

    if (ctx == NULL) {
        return NGX_DECLINED;
    }

    p = list;
    last = list + sizeof(list) - 1;

    for (a = allowed; *a; a++) {
        p = ngx_slprintf(p, last, "%s\"%s\"", a == allowed ? "" : ", ", *a);
    }

    *p = '\0';

    *rc = ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                             "invalid_value", field,
                             "\"%s\" must be one of %s", field, list);

    return NGX_DECLINED;
}


static ngx_int_t
ngx_echelon_reject(ngx_echelon_ctx_t *ctx, ngx_uint_t status,
    const char *code, const char *field, const char *fmt, ...)
{
    u_char   message[512], *p;
    va_list  args;

    va_start(args, fmt);
    p = ngx_vslprintf(message, message + sizeof(message) - 1, fmt, args);
    va_end(args);

    *p = '\0';

    return ngx_echelon_send_error(ctx->request, status, code,
                                  (const char *) message, field);
}


/* "no employee with the id ...": the resource named in the singular */

/* the patched trigger, unless the table refused what it would become */

static ngx_int_t
ngx_echelon_trigger_patched(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    if (res && ctx->query.status == NGX_ECHELON_PG_FAILED
        && ngx_strcmp(ctx->query.sqlstate, "23514") == 0)
    {
        return ngx_echelon_reject(ctx, NGX_HTTP_UNPROCESSABLE_ENTITY,
                                  "condition_never_met", "unless",
                                  "a payment.received message \"unless "
                                  "paid\" would never be sent");
    }

    return ngx_echelon_one_found(ctx, res);
}


/* GET /v1/{resources}/{id}: the one row, or the 404 of any unknown id */

static ngx_int_t
ngx_echelon_get_one(ngx_echelon_ctx_t *ctx, ngx_echelon_sql_e sql,
    json_t *(*item)(PGresult *res, int row))
{
    if (ngx_echelon_param(ctx, &ctx->path[2]) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->query.sql = sql;
    ctx->item = item;
    ngx_echelon_run(ctx, ngx_echelon_one_found);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_one_found(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK) {
        return ngx_echelon_db_error(ctx);
    }

    if (PQntuples(res) != 1) {
        return ngx_echelon_not_found(ctx);
    }

    return ngx_echelon_send_json(ctx->request, NGX_HTTP_OK,
                                 ctx->item(res, 0));
}


static ngx_int_t
ngx_echelon_not_found(ngx_echelon_ctx_t *ctx)
{
    size_t   len;
    u_char  *name;

    name = ctx->path[1].data;
    len = ctx->path[1].len;

    if (len > 3 && ngx_strncmp(name + len - 3, "ies", 3) == 0) {
        return ngx_echelon_reject(ctx, NGX_HTTP_NOT_FOUND, "not_found", NULL,
                                  "no %*sy with the id \"%V\"", len - 3,
                                  name, &ctx->path[2]);
    }

    return ngx_echelon_reject(ctx, NGX_HTTP_NOT_FOUND, "not_found", NULL,
                              "no %*s with the id \"%V\"", len - 1, name,
                              &ctx->path[2]);
}


static ngx_int_t
ngx_echelon_plan_allows(ngx_str_t *plan, ngx_str_t *channel)
{
    if (channel->len == 5 && ngx_strncmp(channel->data, "email", 5) == 0) {
        return 1;
    }

    return !(plan->len == 7 && ngx_strncmp(plan->data, "starter", 7) == 0);
}


/* E.164: "+" and 8 to 15 digits, the first not 0 */

static ngx_int_t
ngx_echelon_phone_valid(ngx_str_t *phone)
{
    size_t  i;

    if (phone->len < 9 || phone->len > 16 || phone->data[0] != '+'
        || phone->data[1] == '0')
    {
        return 0;
    }

    for (i = 1; i < phone->len; i++) {
        if (phone->data[i] < '0' || phone->data[i] > '9') {
            return 0;
        }
    }

    return 1;
}


/* "local@domain" or "Display Name <local@domain>", no line breaks */

static ngx_int_t
ngx_echelon_email_valid(ngx_str_t *address)
{
    u_char  *p, *last, *at, *lt;

    p = address->data;
    last = p + address->len;

    if (ngx_strlchr(p, last, '\r') || ngx_strlchr(p, last, '\n')) {
        return 0;
    }

    lt = ngx_strlchr(p, last, '<');

    if (lt) {
        if (last[-1] != '>') {
            return 0;
        }

        p = lt + 1;
        last--;
    }

    at = ngx_strlchr(p, last, '@');

    if (at == NULL || at == p || at + 1 >= last
        || ngx_strlchr(at + 1, last, '@') || ngx_strlchr(p, last, ' ')
        || ngx_strlchr(p, last, '<') || ngx_strlchr(p, last, '>')
        || ngx_strlchr(at + 1, last, '.') == NULL)
    {
        return 0;
    }

    return 1;
}


/* a delay: seconds as an integer, or "0", "45s", "30m", "12h", "7d" */

static ngx_int_t
ngx_echelon_parse_delay(json_t *delay, ngx_int_t *seconds)
{
    size_t       len;
    ngx_int_t    n, unit;
    const char  *s;

    if (json_is_integer(delay)) {
        if (json_integer_value(delay) < 0
            || json_integer_value(delay) > NGX_ECHELON_DELAY_MAX)
        {
            return NGX_ERROR;
        }

        *seconds = (ngx_int_t) json_integer_value(delay);
        return NGX_OK;
    }

    if (!json_is_string(delay)) {
        return NGX_ERROR;
    }

    s = json_string_value(delay);
    len = json_string_length(delay);

    if (len == 0 || len > 10) {
        return NGX_ERROR;
    }

    switch (s[len - 1]) {
    case 's': unit = 1; len--; break;
    case 'm': unit = 60; len--; break;
    case 'h': unit = 3600; len--; break;
    case 'd': unit = 86400; len--; break;
    default: unit = 1;
    }

    n = ngx_atoi((u_char *) s, len);

    if (n == NGX_ERROR || n > NGX_ECHELON_DELAY_MAX / unit) {
        return NGX_ERROR;
    }

    *seconds = n * unit;

    return NGX_OK;
}


/* ?cursor= and ?limit=; rc NULL only tests */

static ngx_int_t
ngx_echelon_list_args(ngx_echelon_ctx_t *ctx, ngx_str_t *cursor,
    ngx_int_t *limit, ngx_int_t *rc)
{
    ngx_str_t  v;

    if (ngx_echelon_arg(ctx, "limit", &v) != NGX_OK
        || ngx_echelon_arg(ctx, "cursor", cursor) != NGX_OK)
    {
        if (rc) {
            *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return NGX_ERROR;
    }

    if (cursor->data && !ngx_echelon_id_valid(cursor)) {
        if (rc) {
            *rc = ngx_echelon_reject(ctx, NGX_HTTP_BAD_REQUEST,
                                     "invalid_parameter", "cursor",
                                     "\"cursor\" is the next_cursor of a "
                                     "list");
        }

        return NGX_ERROR;
    }

    *limit = 20;

    if (v.data) {
        *limit = ngx_atoi(v.data, v.len);

        if (*limit < 1 || *limit > 100) {
            if (rc) {
                *rc = ngx_echelon_reject(ctx, NGX_HTTP_BAD_REQUEST,
                                         "invalid_parameter", "limit",
                                         "\"limit\" must be from 1 to 100");
            }

            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* a query-string argument, unescaped and NUL-terminated, or null */

static ngx_int_t
ngx_echelon_arg(ngx_echelon_ctx_t *ctx, const char *name, ngx_str_t *value)
{
    u_char     *dst, *src;
    ngx_str_t   raw;

    ngx_str_null(value);

    if (ngx_http_arg(ctx->request, (u_char *) name, ngx_strlen(name), &raw)
        != NGX_OK || raw.len == 0)
    {
        return NGX_OK;
    }

    dst = ngx_pnalloc(ctx->request->pool, raw.len + 1);
    if (dst == NULL) {
        return NGX_ERROR;
    }

    value->data = dst;
    src = raw.data;

    ngx_unescape_uri(&dst, &src, raw.len, NGX_UNESCAPE_URI);

    *dst = '\0';
    value->len = dst - value->data;

    return NGX_OK;
}


/* {"data": [...], "has_more", "next_cursor"} from limit + 1 rows */

static json_t *
ngx_echelon_list_json(ngx_echelon_ctx_t *ctx, PGresult *res,
    json_t *(*item)(PGresult *res, int row))
{
    int         i, n, limit;
    json_t     *data, *next;
    ngx_uint_t  more;

    limit = (int) (ngx_int_t) ctx->data;
    n = PQntuples(res);
    more = n > limit;

    if (more) {
        n = limit;
    }

    data = json_array();

    for (i = 0; i < n; i++) {
        json_array_append_new(data, item(res, i));
    }

    next = (more && n > 0) ? ngx_echelon_json_column(res, n - 1, "id")
                           : json_null();

    return json_pack("{s:o, s:b, s:o}", "data", data, "has_more", (int) more,
                     "next_cursor", next);
}


static const char *
ngx_echelon_str(ngx_echelon_ctx_t *ctx, ngx_int_t n)
{
    u_char  *p;

    p = ngx_pnalloc(ctx->request->pool, NGX_INT64_LEN + 1);
    if (p == NULL) {
        return NULL;
    }

    *ngx_sprintf(p, "%i", n) = '\0';

    return (const char *) p;
}


/* a route's method as the Allow header names it; GET answers HEAD too */

static const char *
ngx_echelon_allowed(ngx_uint_t method)
{
    switch (method) {
    case NGX_HTTP_GET:
        return "GET, HEAD";
    case NGX_HTTP_POST:
        return "POST";
    case NGX_HTTP_PUT:
        return "PUT";
    case NGX_HTTP_PATCH:
        return "PATCH";
    default:
        return "DELETE";
    }
}


/* whether one of the first n strings of array equals v */

static ngx_int_t
ngx_echelon_json_has(json_t *array, size_t n, json_t *v)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (json_equal(json_array_get(array, i), v)) {
            return 1;
        }
    }

    return 0;
}


/* three lower-case letters */

static ngx_int_t
ngx_echelon_is_code(ngx_str_t *code)
{
    size_t  i;

    for (i = 0; i < code->len; i++) {
        if (code->data[i] < 'a' || code->data[i] > 'z') {
            return 0;
        }
    }

    return 1;
}


static ngx_int_t
ngx_echelon_param(ngx_echelon_ctx_t *ctx, ngx_str_t *v)
{
    static ngx_str_t  none = ngx_string("none");

    /* an id that cannot be ours is looked for as one that is nowhere */

    if (v == &ctx->path[2] && ctx->unknown_id) {
        v = &none;
    }

    return ngx_echelon_pg_param(&ctx->query, ctx->request->pool, v);
}


/* v, copied into the request's pool and NUL-terminated */

static ngx_int_t
ngx_echelon_copy(ngx_echelon_ctx_t *ctx, ngx_str_t *v)
{
    u_char  *p;

    p = ngx_pnalloc(ctx->request->pool, v->len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, v->data, v->len);
    p[v->len] = '\0';
    v->data = p;

    return NGX_OK;
}
