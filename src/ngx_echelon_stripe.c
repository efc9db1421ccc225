
/*
 * Copyright (C) Echelon
 *
 * Webhooks in: POST /webhooks/stripe/{account}.
 *
 * The signature is checked over the raw bytes before anything is parsed;
 * the event, the invoice, the contact and the deliveries it calls for are
 * written in one transaction, and only its commit earns the 200.
 */


#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "ngx_echelon.h"


#define NGX_ECHELON_STRIPE_TOLERANCE  300
#define NGX_ECHELON_STRIPE_MAX_SIGS   8
#define NGX_ECHELON_STRIPE_MAX_KEYS   8


static void ngx_echelon_webhook_body(ngx_http_request_t *r);
static ngx_int_t ngx_echelon_stripe_secrets(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_stripe_stored(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_stripe_hmac(ngx_str_t *secret, ngx_str_t *t,
    ngx_str_t *body, u_char *hex);


ngx_int_t
ngx_echelon_webhooks_handler(ngx_http_request_t *r)
{
    ngx_str_t          *provider;
    ngx_echelon_ctx_t  *ctx;

    ctx = ngx_echelon_ctx_create(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* /webhooks/{stripe,twilio,meta}/{account} */

    ctx->nparts = ngx_echelon_split_path(&r->uri, 1, ctx->path, 4);

    if (ctx->nparts != 3 || !ngx_echelon_id_valid(&ctx->path[2])) {
        ngx_http_discard_request_body(r);
        return ngx_echelon_send_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                      "no such webhook endpoint", NULL);
    }

    ctx->account_id = ctx->path[2];
    provider = &ctx->path[1];

    if (ctx->emcf->pool == NULL) {
        ngx_http_discard_request_body(r);
        return ngx_echelon_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "store_unavailable",
                                      "no database is configured", NULL);
    }

    if (provider->len == 6 && ngx_strncmp(provider->data, "twilio", 6) == 0) {
        return ngx_echelon_status_handler(ctx, 0);
    }

    if (provider->len == 4 && ngx_strncmp(provider->data, "meta", 4) == 0) {
        return ngx_echelon_status_handler(ctx, 1);
    }

    if (provider->len != 6 || ngx_strncmp(provider->data, "stripe", 6) != 0)
    {
        ngx_http_discard_request_body(r);
        return ngx_echelon_send_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                      "no such webhook endpoint", NULL);
    }

    if (r->method != NGX_HTTP_POST) {
        ngx_http_discard_request_body(r);
        return ngx_echelon_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                      "method_not_allowed",
                                      "webhooks accept POST only", NULL);
    }

    return ngx_echelon_read_body(r, ngx_echelon_webhook_body);
}


static void
ngx_echelon_webhook_body(ngx_http_request_t *r)
{
    ngx_int_t           rc;
    ngx_echelon_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_echelon_module);

    rc = ngx_echelon_body_bytes(r, &ctx->body);

    if (rc == NGX_DECLINED) {
        rc = ngx_echelon_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                    "body_too_large",
                                    "the event is too large", NULL);
        ngx_echelon_finish(ctx, rc);
        return;
    }

    if (rc != NGX_OK) {
        ngx_echelon_finish(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (ngx_echelon_find_header(r, "Stripe-Signature") == NULL) {
        rc = ngx_echelon_send_error(r, NGX_HTTP_BAD_REQUEST,
                                    "signature_missing",
                                    "the Stripe-Signature header is missing",
                                    NULL);
        ngx_echelon_finish(ctx, rc);
        return;
    }

    if (ngx_echelon_pg_param(&ctx->query, r->pool, &ctx->account_id)
        != NGX_OK)
    {
        ngx_echelon_finish(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->query.sql = NGX_ECHELON_SQL_STRIPE_SECRETS;

    ngx_echelon_run(ctx, ngx_echelon_stripe_secrets);
}


static ngx_int_t
ngx_echelon_stripe_secrets(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    int                  i, n;
    ngx_int_t            rc;
    ngx_str_t            secrets[NGX_ECHELON_STRIPE_MAX_KEYS];
    const char          *reason;
    ngx_table_elt_t     *h;
    ngx_http_request_t  *r;

    r = ctx->request;

    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK) {
        return ngx_echelon_db_error(ctx);
    }

    n = ngx_min(PQntuples(res), NGX_ECHELON_STRIPE_MAX_KEYS);

    if (n == 0) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "echelon: Stripe webhook for \"%V\" rejected: "
                      "no signing secret", &ctx->account_id);

        return ngx_echelon_send_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                      "no Stripe integration for this "
                                      "account", NULL);
    }

    for (i = 0; i < n; i++) {
        secrets[i] = ngx_echelon_pg_value(res, i, "secret");
    }

    h = ngx_echelon_find_header(r, "Stripe-Signature");

    rc = ngx_echelon_stripe_verify(&h->value, &ctx->body, secrets, n,
                                   ngx_time(), NGX_ECHELON_STRIPE_TOLERANCE,
                                   &reason);

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "echelon: Stripe webhook for \"%V\" rejected: %s",
                      &ctx->account_id, reason);

        return ngx_echelon_send_error(r, NGX_HTTP_BAD_REQUEST,
                                      rc == NGX_DECLINED
                                      ? "signature_expired"
                                      : "signature_invalid",
                                      reason, NULL);
    }

    rc = ngx_echelon_parse_body(ctx);

    if (ctx->json == NULL) {
        return rc;
    }

    if (!json_is_string(json_object_get(ctx->json, "id"))
        || !json_is_string(json_object_get(ctx->json, "type")))
    {
        return ngx_echelon_send_error(r, NGX_HTTP_BAD_REQUEST,
                                      "invalid_event",
                                      "an event needs a string id and type",
                                      NULL);
    }

    /* the account id is already a parameter, NUL-terminated */

    ctx->query.nparams = 1;
    ngx_echelon_pg_param_cstr(&ctx->query, (const char *) ctx->body.data);
    ctx->query.sql = NGX_ECHELON_SQL_STRIPE_EVENT;

    ngx_echelon_run(ctx, ngx_echelon_stripe_stored);

    return NGX_DONE;
}


static ngx_int_t
ngx_echelon_stripe_stored(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    ngx_str_t            outcome;
    ngx_http_request_t  *r;

    r = ctx->request;

    if (res != NULL && ctx->query.status == NGX_ECHELON_PG_FAILED
        && ctx->query.sqlstate[0] == '2' && ctx->query.sqlstate[1] == '2')
    {
        return ngx_echelon_send_error(r, NGX_HTTP_BAD_REQUEST,
                                      "invalid_event",
                                      "the event's data does not have the "
                                      "shape of its type", NULL);
    }

    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK) {
        return ngx_echelon_db_error(ctx);
    }

    outcome = ngx_echelon_pg_value(res, 0, "outcome");

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "echelon: Stripe event %s for \"%V\": %V",
                  json_string_value(json_object_get(ctx->json, "id")),
                  &ctx->account_id, &outcome);

    return ngx_echelon_send_json(r, NGX_HTTP_OK,
               json_pack("{s:b, s:s%}", "received", 1,
                         "outcome", outcome.data, outcome.len));
}


/*
 * Stripe-Signature: t=<unix time>,v1=<hex>,v1=<hex>,v0=<hex>
 *
 * NGX_OK when one v1 matches one secret within the tolerance, both ways;
 * NGX_DECLINED when the time is out of tolerance; NGX_ERROR otherwise.
 */

ngx_int_t
ngx_echelon_stripe_verify(ngx_str_t *header, ngx_str_t *body,
    ngx_str_t *secrets, ngx_uint_t nsecrets, time_t now, time_t tolerance,
    const char **reason)
{
    u_char      *p, *last, *item, *eq;
    u_char       hex[2 * EVP_MAX_MD_SIZE];
    time_t       t;
    ngx_str_t    ts, sigs[NGX_ECHELON_STRIPE_MAX_SIGS];
    ngx_uint_t   i, k, nsigs;

    ngx_str_null(&ts);
    nsigs = 0;

    p = header->data;
    last = header->data + header->len;

    while (p < last) {
        item = p;

        while (p < last && *p != ',') {
            p++;
        }

        eq = ngx_strlchr(item, p, '=');

        if (eq == item + 1 && *item == 't') {
            ts.data = eq + 1;
            ts.len = p - ts.data;

        } else if (eq == item + 2 && item[0] == 'v' && item[1] == '1'
                   && nsigs < NGX_ECHELON_STRIPE_MAX_SIGS)
        {
            sigs[nsigs].data = eq + 1;
            sigs[nsigs].len = p - sigs[nsigs].data;
            nsigs++;
        }

        p++;
    }

    if (ts.len == 0 || nsigs == 0) {
        *reason = "the Stripe-Signature header has no timestamp or no v1 "
                  "signature";
        return NGX_ERROR;
    }

    t = ngx_atotm(ts.data, ts.len);

    if (t == NGX_ERROR) {
        *reason = "the Stripe-Signature timestamp is not a number";
        return NGX_ERROR;
    }

    if (t < now - tolerance || t > now + tolerance) {
        *reason = "the Stripe-Signature timestamp is outside the tolerance";
        return NGX_DECLINED;
    }

    for (k = 0; k < nsecrets; k++) {

        if (ngx_echelon_stripe_hmac(&secrets[k], &ts, body, hex) != NGX_OK) {
            *reason = "the signature could not be computed";
            return NGX_ERROR;
        }

        for (i = 0; i < nsigs; i++) {
            if (sigs[i].len == 64 && CRYPTO_memcmp(sigs[i].data, hex, 64) == 0)
            {
                return NGX_OK;
            }
        }
    }

    *reason = "no signature matches the body";

    return NGX_ERROR;
}


/* lowercase hex of HMAC-SHA256(secret, "<t>.<body>") into 64 bytes */

static ngx_int_t
ngx_echelon_stripe_hmac(ngx_str_t *secret, ngx_str_t *t, ngx_str_t *body,
    u_char *hex)
{
    u_char     md[EVP_MAX_MD_SIZE];
    size_t     len;
    ngx_str_t  parts[3];

    parts[0] = *t;
    ngx_str_set(&parts[1], ".");
    parts[2] = *body;

    if (ngx_echelon_hmac("SHA256", secret, parts, 3, md, &len) != NGX_OK
        || len != 32)
    {
        return NGX_ERROR;
    }

    ngx_hex_dump(hex, md, len);

    return NGX_OK;
}
