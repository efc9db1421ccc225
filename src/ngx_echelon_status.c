
/*
 * Copyright (C) Echelon
 *
 * Delivery status from the providers: POST /webhooks/twilio/{account}
 * (Twilio's status callbacks, X-Twilio-Signature) and /webhooks/meta/
 * {account} (Meta's subscription handshake and status notifications,
 * X-Hub-Signature-256).  A status only moves a delivery forward.
 */


#include "ngx_echelon.h"


static void ngx_echelon_twilio_body(ngx_http_request_t *r);
static void ngx_echelon_meta_body(ngx_http_request_t *r);
static ngx_int_t ngx_echelon_meta_challenge(ngx_http_request_t *r,
    ngx_echelon_main_conf_t *emcf);
static void ngx_echelon_status_store(ngx_echelon_ctx_t *ctx, json_t *list);
static ngx_int_t ngx_echelon_status_stored(ngx_echelon_ctx_t *ctx,
    PGresult *res);
static ngx_int_t ngx_echelon_form_value(ngx_http_request_t *r,
    ngx_str_t *body, const char *name, ngx_str_t *value);
static const char *ngx_echelon_twilio_status(ngx_str_t *status);
static json_t *ngx_echelon_twilio_reason(ngx_str_t *code,
    ngx_str_t *message);


ngx_int_t
ngx_echelon_status_handler(ngx_echelon_ctx_t *ctx, ngx_uint_t meta)
{
    ngx_http_request_t  *r;

    r = ctx->request;

    if (meta && r->method == NGX_HTTP_GET) {
        ngx_http_discard_request_body(r);
        return ngx_echelon_meta_challenge(r, ctx->emcf);
    }

    if (r->method != NGX_HTTP_POST) {
        ngx_http_discard_request_body(r);
        return ngx_echelon_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                      "method_not_allowed",
                                      "status callbacks are POST", NULL);
    }

    return ngx_echelon_read_body(r, meta ? ngx_echelon_meta_body
                                         : ngx_echelon_twilio_body);
}


/*
 * Twilio posts MessageSid, MessageStatus and, on failure, ErrorCode and
 * ErrorMessage, form-encoded, signed over our public URL
 */

static void
ngx_echelon_twilio_body(ngx_http_request_t *r)
{
    u_char              *p;
    json_t              *list;
    ngx_int_t            rc;
    ngx_str_t            sid, status, code, message;
    const char          *st;
    ngx_echelon_ctx_t   *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_echelon_module);

    if (ngx_echelon_body_bytes(r, &ctx->body) != NGX_OK) {
        ngx_echelon_finish(ctx, ngx_echelon_send_error(r,
                               NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                               "body_too_large", "the body is too large",
                               NULL));
        return;
    }

    if (ngx_echelon_form_value(r, &ctx->body, "MessageSid", &sid) != NGX_OK
        || ngx_echelon_form_value(r, &ctx->body, "MessageStatus", &status)
           != NGX_OK
        || ngx_echelon_form_value(r, &ctx->body, "ErrorCode", &code)
           != NGX_OK
        || ngx_echelon_form_value(r, &ctx->body, "ErrorMessage", &message)
           != NGX_OK)
    {
        ngx_echelon_finish(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /* the signature is checked on a copy: checking decodes in place */

    p = ngx_pnalloc(r->pool, ctx->body.len + 1);
    if (p == NULL) {
        ngx_echelon_finish(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_memcpy(p, ctx->body.data, ctx->body.len);

    rc = ngx_echelon_twilio_verify(ctx->emcf, r,
                                   &(ngx_str_t) { ctx->body.len, p });

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "echelon: Twilio callback for \"%V\" rejected: "
                      "bad or missing X-Twilio-Signature", &ctx->account_id);

        ngx_echelon_finish(ctx, ngx_echelon_send_error(r,
                               NGX_HTTP_FORBIDDEN, "signature_invalid",
                               "the X-Twilio-Signature does not match",
                               NULL));
        return;
    }

    if (sid.data == NULL || status.data == NULL) {
        ngx_echelon_finish(ctx, ngx_echelon_send_error(r,
                               NGX_HTTP_BAD_REQUEST, "missing_field",
                               "MessageSid and MessageStatus are required",
                               NULL));
        return;
    }

    if (!ngx_echelon_token_valid(sid.data, sid.len)) {
        ngx_echelon_finish(ctx, ngx_echelon_send_error(r,
                               NGX_HTTP_BAD_REQUEST, "invalid_field",
                               "MessageSid is not a message id", NULL));
        return;
    }

    st = ngx_echelon_twilio_status(&status);

    list = json_array();

    if (st) {
        json_array_append_new(list,
            json_pack("{s:s%, s:s, s:o}",
                      "id", sid.data, sid.len,
                      "status", st,
                      "reason", code.data
                                ? ngx_echelon_twilio_reason(&code, &message)
                                : json_null()));
    }

    ngx_echelon_status_store(ctx, list);
}


/*
 * "Twilio error 30003: Unreachable destination handset": the provider's
 * words, at most 200 bytes of them, control characters as spaces and what
 * is not UTF-8 as U+FFFD, so that any error text can be stored
 */

static json_t *
ngx_echelon_twilio_reason(ngx_str_t *code, ngx_str_t *message)
{
    u_char  *p, *q, *last, text[256];

    last = text + sizeof(text);

    p = ngx_slprintf(text, last, "Twilio error %*s",
                     ngx_min(code->len, 16), code->data);

    if (message->data) {
        p = ngx_slprintf(p, last, ": %*s", ngx_min(message->len, 200),
                         message->data);
    }

    for (q = text; q < p; q++) {
        if (*q < ' ' || *q == 0x7f) {
            *q = ' ';
        }
    }

    return ngx_echelon_json_text(text, p - text);
}


/* queued, sending, sent: sent; delivered, read: delivered */

static const char *
ngx_echelon_twilio_status(ngx_str_t *status)
{
    static const char  *map[][2] = {
        { "accepted", "sent" }, { "queued", "sent" }, { "sending", "sent" },
        { "sent", "sent" }, { "delivered", "delivered" },
        { "read", "delivered" }, { "undelivered", "failed" },
        { "failed", "failed" }
    };

    ngx_uint_t  i;

    for (i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (status->len == ngx_strlen(map[i][0])
            && ngx_strncmp(status->data, map[i][0], status->len) == 0)
        {
            return map[i][1];
        }
    }

    return NULL;
}


/*
 * Meta's subscription check: GET with hub.mode=subscribe, our verify
 * token, and a challenge to echo back as it is
 */

static ngx_int_t
ngx_echelon_meta_challenge(ngx_http_request_t *r,
    ngx_echelon_main_conf_t *emcf)
{
    u_char     *dst, *src;
    ngx_str_t   mode, token, challenge, raw;

    if (ngx_http_arg(r, (u_char *) "hub.mode", 8, &mode) != NGX_OK
        || ngx_http_arg(r, (u_char *) "hub.verify_token", 16, &raw) != NGX_OK
        || ngx_http_arg(r, (u_char *) "hub.challenge", 13, &challenge)
           != NGX_OK
        || mode.len != 9 || ngx_strncmp(mode.data, "subscribe", 9) != 0
        || emcf->meta_verify_token.len == 0)
    {
        return ngx_echelon_send_error(r, NGX_HTTP_FORBIDDEN,
                                      "verification_failed",
                                      "not a valid subscription check", NULL);
    }

    token.data = ngx_pnalloc(r->pool, raw.len);
    if (token.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    dst = token.data;
    src = raw.data;
    ngx_unescape_uri(&dst, &src, raw.len, NGX_UNESCAPE_URI);
    token.len = dst - token.data;

    if (token.len != emcf->meta_verify_token.len
        || ngx_strncmp(token.data, emcf->meta_verify_token.data, token.len)
           != 0)
    {
        return ngx_echelon_send_error(r, NGX_HTTP_FORBIDDEN,
                                      "verification_failed",
                                      "the verify token does not match",
                                      NULL);
    }

    /* the challenge is a number: echo only digits */

    for (dst = challenge.data; dst < challenge.data + challenge.len; dst++) {
        if (*dst < '0' || *dst > '9') {
            return ngx_echelon_send_error(r, NGX_HTTP_BAD_REQUEST,
                                          "invalid_parameter",
                                          "hub.challenge is not a number",
                                          "hub.challenge");
        }
    }

    return ngx_echelon_send_text(r, NGX_HTTP_OK, &challenge);
}


/*
 * {"entry": [{"changes": [{"value": {"statuses": [{"id", "status",
 * "errors": [{"code", "title"}]}]}}]}]}
 */

static void
ngx_echelon_meta_body(ngx_http_request_t *r)
{
    size_t               i, j, k;
    json_t              *entry, *change, *status, *list, *errors, *st, *id;
    json_t              *statuses;
    ngx_int_t            rc;
    ngx_str_t            s;
    ngx_table_elt_t     *h;
    const char          *mapped;
    ngx_echelon_ctx_t   *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_echelon_module);

    if (ngx_echelon_body_bytes(r, &ctx->body) != NGX_OK) {
        ngx_echelon_finish(ctx, ngx_echelon_send_error(r,
                               NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                               "body_too_large", "the body is too large",
                               NULL));
        return;
    }

    h = ngx_echelon_find_header(r, "X-Hub-Signature-256");

    if (h == NULL
        || ngx_echelon_meta_verify(ctx->emcf, &h->value, &ctx->body) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "echelon: Meta callback for \"%V\" rejected: "
                      "bad or missing X-Hub-Signature-256", &ctx->account_id);

        ngx_echelon_finish(ctx, ngx_echelon_send_error(r,
                               NGX_HTTP_FORBIDDEN, "signature_invalid",
                               "the X-Hub-Signature-256 does not match",
                               NULL));
        return;
    }

    rc = ngx_echelon_parse_body(ctx);

    if (ctx->json == NULL) {
        ngx_echelon_finish(ctx, rc);
        return;
    }

    list = json_array();

    json_array_foreach(json_object_get(ctx->json, "entry"), i, entry) {
        json_array_foreach(json_object_get(entry, "changes"), j, change) {
            statuses = json_object_get(json_object_get(change, "value"),
                                       "statuses");

            json_array_foreach(statuses, k, status) {
                st = json_object_get(status, "status");

                id = json_object_get(status, "id");

                if (!json_is_string(st) || !json_is_string(id)
                    || !ngx_echelon_token_valid(
                           (u_char *) json_string_value(id),
                           json_string_length(id)))
                {
                    continue;
                }

                s.data = (u_char *) json_string_value(st);
                s.len = json_string_length(st);
                mapped = ngx_echelon_twilio_status(&s);

                if (mapped == NULL) {
                    continue;
                }

                errors = json_array_get(json_object_get(status, "errors"), 0);

                json_array_append_new(list,
                    json_pack("{s:O, s:s, s:o}",
                              "id", json_object_get(status, "id"),
                              "status", mapped,
                              "reason", errors
                                  ? json_sprintf("WhatsApp error %lld: %s",
                                        (long long) json_integer_value(
                                            json_object_get(errors, "code")),
                                        json_is_string(json_object_get(errors,
                                                                 "title"))
                                        ? json_string_value(json_object_get(
                                              errors, "title"))
                                        : "unknown")
                                  : json_null()));
            }
        }
    }

    ngx_echelon_status_store(ctx, list);
}


static void
ngx_echelon_status_store(ngx_echelon_ctx_t *ctx, json_t *list)
{
    char       *text;
    ngx_str_t   v;

    text = json_dumps(list, JSON_COMPACT);
    json_decref(list);

    if (text == NULL) {
        ngx_echelon_finish(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    v.data = (u_char *) text;
    v.len = ngx_strlen(text);

    ctx->query.nparams = 0;

    if (ngx_echelon_pg_param(&ctx->query, ctx->request->pool,
                             &ctx->account_id) != NGX_OK
        || ngx_echelon_pg_param(&ctx->query, ctx->request->pool, &v)
           != NGX_OK)
    {
        free(text);
        ngx_echelon_finish(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    free(text);

    ctx->query.sql = NGX_ECHELON_SQL_PROVIDER_STATUS;
    ngx_echelon_run(ctx, ngx_echelon_status_stored);
}


static ngx_int_t
ngx_echelon_status_stored(ngx_echelon_ctx_t *ctx, PGresult *res)
{
    ngx_str_t  applied;

    if (res == NULL || ctx->query.status != NGX_ECHELON_PG_OK) {
        return ngx_echelon_db_error(ctx);
    }

    applied = ngx_echelon_pg_value(res, 0, "applied");

    return ngx_echelon_send_json(ctx->request, NGX_HTTP_OK,
               json_pack("{s:b, s:I}", "received", 1, "applied",
                         (json_int_t) ngx_atoi(applied.data, applied.len)));
}


/* one form field, decoded ("+" is a space), or a null string */

static ngx_int_t
ngx_echelon_form_value(ngx_http_request_t *r, ngx_str_t *body,
    const char *name, ngx_str_t *value)
{
    u_char  *p, *last, *amp, *eq, *dst, *src;
    size_t   len, i;

    ngx_str_null(value);

    len = ngx_strlen(name);
    p = body->data;
    last = body->data + body->len;

    while (p < last) {
        amp = ngx_strlchr(p, last, '&');
        if (amp == NULL) {
            amp = last;
        }

        eq = ngx_strlchr(p, amp, '=');

        if (eq && (size_t) (eq - p) == len && ngx_strncmp(p, name, len) == 0)
        {
            dst = ngx_pnalloc(r->pool, amp - eq);
            if (dst == NULL) {
                return NGX_ERROR;
            }

            value->data = dst;
            src = dst;

            ngx_memcpy(dst, eq + 1, amp - eq - 1);

            for (i = 0; i < (size_t) (amp - eq - 1); i++) {
                if (dst[i] == '+') {
                    dst[i] = ' ';
                }
            }

            ngx_unescape_uri(&dst, &src, amp - eq - 1, 0);
            value->len = dst - value->data;

            return NGX_OK;
        }

        p = amp + 1;
    }

    return NGX_OK;
}
