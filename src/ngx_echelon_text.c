
/*
 * Copyright (C) Echelon
 *
 * SMS and WhatsApp through HTTP providers: Twilio's Messages API (SMS, and
 * WhatsApp as "whatsapp:+..." addresses) and Meta's WhatsApp Cloud API,
 * sent with the module's own HTTP client; and the signatures of their
 * status callbacks.
 */


#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "ngx_echelon.h"


#define NGX_ECHELON_META_API  "/v19.0/"


typedef struct {
    ngx_echelon_text_done_pt    done;
    void                       *data;
    ngx_uint_t                  meta;
} ngx_echelon_text_ctx_t;


static ngx_int_t ngx_echelon_twilio_request(ngx_echelon_main_conf_t *emcf,
    ngx_pool_t *pool, ngx_echelon_text_t *msg, ngx_echelon_fetch_req_t *req);
static ngx_int_t ngx_echelon_meta_request(ngx_echelon_main_conf_t *emcf,
    ngx_pool_t *pool, ngx_echelon_text_t *msg, ngx_echelon_fetch_req_t *req);
static void ngx_echelon_text_answered(void *data,
    ngx_echelon_fetch_res_t *res);
static u_char *ngx_echelon_form_escape(u_char *dst, ngx_str_t *src);
static size_t ngx_echelon_form_len(ngx_str_t *src);
static int ngx_libc_cdecl ngx_echelon_param_cmp(const void *one,
    const void *two);


/* why a channel cannot be sent from this server, or NULL */

const char *
ngx_echelon_text_unavailable(ngx_echelon_main_conf_t *emcf,
    ngx_str_t *channel)
{
    if (emcf->fetch == NULL) {
        return "this server has no HTTP transport";
    }

    if (channel->len == 8
        && emcf->whatsapp_provider == NGX_ECHELON_WHATSAPP_META)
    {
        return (emcf->meta && emcf->meta_token.len && emcf->meta_phone_id.len)
               ? NULL : "no WhatsApp provider is configured on this server";
    }

    return (emcf->twilio && emcf->twilio_sid.len && emcf->twilio_token.len)
           ? NULL : "no Twilio account is configured on this server";
}


ngx_int_t
ngx_echelon_text_send(ngx_echelon_main_conf_t *emcf, ngx_pool_t *pool,
    ngx_echelon_text_t *msg, ngx_echelon_text_done_pt done, void *data)
{
    ngx_int_t                 rc;
    ngx_echelon_text_ctx_t   *ctx;
    ngx_echelon_fetch_req_t   req;

    ctx = ngx_pcalloc(pool, sizeof(ngx_echelon_text_ctx_t));
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    ctx->done = done;
    ctx->data = data;
    ctx->meta = (msg->channel.len == 8
                 && emcf->whatsapp_provider == NGX_ECHELON_WHATSAPP_META);

    ngx_memzero(&req, sizeof(ngx_echelon_fetch_req_t));
    req.timeout = emcf->provider_timeout;

    /* Twilio honours its idempotency token; Meta documents no such key */

    req.idempotent = !ctx->meta;

    rc = ctx->meta ? ngx_echelon_meta_request(emcf, pool, msg, &req)
                   : ngx_echelon_twilio_request(emcf, pool, msg, &req);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_echelon_fetch(emcf->fetch, &req, ngx_echelon_text_answered,
                             ctx);
}


/*
 * POST /2010-04-01/Accounts/{sid}/Messages.json, form-encoded, with basic
 * authentication, the status callback, and the delivery id as Twilio's
 * idempotency token, the same on every retry
 */

static ngx_int_t
ngx_echelon_twilio_request(ngx_echelon_main_conf_t *emcf, ngx_pool_t *pool,
    ngx_echelon_text_t *msg, ngx_echelon_fetch_req_t *req)
{
    u_char     *p;
    size_t      len;
    ngx_str_t   cred, basic, prefix, to, from, callback;

    ngx_str_null(&prefix);

    if (msg->channel.len == 8) {
        ngx_str_set(&prefix, "whatsapp:");
    }

    to.len = prefix.len + msg->to.len;
    from.len = prefix.len + msg->from.len;
    to.data = ngx_pnalloc(pool, to.len + from.len);
    if (to.data == NULL) {
        return NGX_ERROR;
    }

    from.data = to.data + to.len;
    ngx_sprintf(to.data, "%V%V%V%V", &prefix, &msg->to, &prefix, &msg->from);

    callback.len = emcf->public_url.len + sizeof("/webhooks/twilio/") - 1
                   + msg->account_id.len;
    callback.data = ngx_pnalloc(pool, callback.len);
    if (callback.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(callback.data, "%V/webhooks/twilio/%V", &emcf->public_url,
                &msg->account_id);

    len = sizeof("To=&From=&Body=") - 1 + ngx_echelon_form_len(&to)
          + ngx_echelon_form_len(&from) + ngx_echelon_form_len(&msg->body);

    if (emcf->public_url.len) {
        len += sizeof("&StatusCallback=") - 1
               + ngx_echelon_form_len(&callback);
    }

    p = ngx_pnalloc(pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    req->body.data = p;
    p = ngx_cpymem(p, "To=", 3);
    p = ngx_echelon_form_escape(p, &to);
    p = ngx_cpymem(p, "&From=", 6);
    p = ngx_echelon_form_escape(p, &from);
    p = ngx_cpymem(p, "&Body=", 6);
    p = ngx_echelon_form_escape(p, &msg->body);

    if (emcf->public_url.len) {
        p = ngx_cpymem(p, "&StatusCallback=", 16);
        p = ngx_echelon_form_escape(p, &callback);
    }

    req->body.len = p - req->body.data;

    cred.len = emcf->twilio_sid.len + 1 + emcf->twilio_token.len;
    cred.data = ngx_pnalloc(pool, cred.len);
    basic.data = ngx_pnalloc(pool, ngx_base64_encoded_length(cred.len));

    if (cred.data == NULL || basic.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(cred.data, "%V:%V", &emcf->twilio_sid, &emcf->twilio_token);
    ngx_encode_base64(&basic, &cred);

    len = sizeof("/2010-04-01/Accounts//Messages.json") - 1
          + emcf->twilio_sid.len;
    req->path.data = ngx_pnalloc(pool, len);

    req->headers.data = ngx_pnalloc(pool, 256 + basic.len
                                          + msg->delivery_id.len);

    if (req->path.data == NULL || req->headers.data == NULL) {
        return NGX_ERROR;
    }

    req->path.len = ngx_sprintf(req->path.data,
                                "/2010-04-01/Accounts/%V/Messages.json",
                                &emcf->twilio_sid)
                    - req->path.data;

    req->headers.len = ngx_sprintf(req->headers.data,
                           "Authorization: Basic %V\r\n"
                           "Content-Type: application/x-www-form-urlencoded"
                           "\r\n"
                           "Accept: application/json\r\n"
                           "I-Twilio-Idempotency-Token: %V\r\n",
                           &basic, &msg->delivery_id)
                       - req->headers.data;

    ngx_str_set(&req->method, "POST");
    req->endpoint = emcf->twilio;

    return NGX_OK;
}


/*
 * POST /v19.0/{phone number id}/messages with a bearer token and a JSON
 * text message; the delivery id travels as Idempotency-Key
 */

static ngx_int_t
ngx_echelon_meta_request(ngx_echelon_main_conf_t *emcf, ngx_pool_t *pool,
    ngx_echelon_text_t *msg, ngx_echelon_fetch_req_t *req)
{
    char    *text;
    json_t  *json;

    /* Meta wants the number without its "+" */

    json = json_pack("{s:s, s:s, s:s%, s:s, s:{s:b, s:s%}}",
                     "messaging_product", "whatsapp",
                     "recipient_type", "individual",
                     "to", msg->to.data + 1, msg->to.len - 1,
                     "type", "text",
                     "text", "preview_url", 0,
                     "body", msg->body.data, msg->body.len);
    if (json == NULL) {
        return NGX_ERROR;
    }

    text = json_dumps(json, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(json);

    if (text == NULL) {
        return NGX_ERROR;
    }

    req->body.len = ngx_strlen(text);
    req->body.data = ngx_pnalloc(pool, req->body.len);

    if (req->body.data == NULL) {
        free(text);
        return NGX_ERROR;
    }

    ngx_memcpy(req->body.data, text, req->body.len);
    free(text);

    req->path.data = ngx_pnalloc(pool, sizeof(NGX_ECHELON_META_API "/messages")
                                       + emcf->meta_phone_id.len);
    req->headers.data = ngx_pnalloc(pool, 128 + emcf->meta_token.len
                                          + msg->delivery_id.len);

    if (req->path.data == NULL || req->headers.data == NULL) {
        return NGX_ERROR;
    }

    req->path.len = ngx_sprintf(req->path.data,
                                NGX_ECHELON_META_API "%V/messages",
                                &emcf->meta_phone_id)
                    - req->path.data;

    req->headers.len = ngx_sprintf(req->headers.data,
                           "Authorization: Bearer %V\r\n"
                           "Content-Type: application/json\r\n"
                           "Idempotency-Key: %V\r\n",
                           &emcf->meta_token, &msg->delivery_id)
                       - req->headers.data;

    ngx_str_set(&req->method, "POST");
    req->endpoint = emcf->meta;

    return NGX_OK;
}


/*
 * The provider's answer: 2xx with a message id is sent; 429 and 5xx, or
 * no answer at all, are worth another try; any other 4xx is final.
 */

static void
ngx_echelon_text_answered(void *data, ngx_echelon_fetch_res_t *res)
{
    ngx_echelon_text_ctx_t *ctx = data;

    u_char              buf[512], *p;
    json_t             *json, *id, *msg;
    ngx_str_t           provider_id, reason;
    json_error_t        err;
    ngx_echelon_send_e  rc;

    ngx_str_null(&provider_id);
    json = NULL;

    if (res->status == 0) {
        reason = res->error;
        ctx->done(ctx->data, NGX_ECHELON_SEND_TRANSIENT, &provider_id,
                  &reason, -1);
        return;
    }

    if (res->body.len) {
        json = json_loadb((const char *) res->body.data, res->body.len, 0,
                          &err);
    }

    if (res->status >= 200 && res->status < 300) {
        id = ctx->meta
             ? json_object_get(json_array_get(json_object_get(json,
                                                              "messages"),
                                              0), "id")
             : json_object_get(json, "sid");

        /* sent all the same; an id we cannot keep is only logged */

        if (json_is_string(id)
            && ngx_echelon_token_valid((u_char *) json_string_value(id),
                                             json_string_length(id)))
        {
            provider_id.data = (u_char *) json_string_value(id);
            provider_id.len = json_string_length(id);

        } else {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "echelon: a message accepted by the provider "
                          "without a message id we can keep (1 to %d "
                          "printable ASCII bytes)",
                          NGX_ECHELON_PROVIDER_ID_MAX);
        }

        ngx_str_set(&reason, "accepted by the provider");
        ctx->done(ctx->data, NGX_ECHELON_SEND_OK, &provider_id, &reason, -1);

        json_decref(json);
        return;
    }

    /* Twilio: {"code", "message"}; Meta: {"error": {"code", "message"}} */

    msg = json_object_get(json, "message");
    if (msg == NULL) {
        msg = json_object_get(json_object_get(json, "error"), "message");
    }

    p = ngx_snprintf(buf, sizeof(buf), "HTTP %ui from the provider%s%s",
                     res->status, json_is_string(msg) ? ": " : "",
                     json_is_string(msg) ? json_string_value(msg) : "");

    reason.data = buf;
    reason.len = p - buf;

    rc = (res->status == 429 || res->status >= 500)
         ? NGX_ECHELON_SEND_TRANSIENT : NGX_ECHELON_SEND_PERMANENT;

    ctx->done(ctx->data, rc, &provider_id, &reason, res->retry_after);

    json_decref(json);
}


/*
 * X-Twilio-Signature: base64 of HMAC-SHA1 with the auth token over the
 * public URL of the request followed by each POST parameter, name then
 * value, sorted by name.  Twilio signs the URL it called, which behind a
 * proxy is not the one nginx sees: echelon_public_url says which it is.
 */

ngx_int_t
ngx_echelon_twilio_verify(ngx_echelon_main_conf_t *emcf,
    ngx_http_request_t *r, ngx_str_t *body)
{
    u_char           *p, *last, *amp, *eq, *dst, md[EVP_MAX_MD_SIZE];
    size_t            len;
    ngx_str_t        *parts, sig, expected, raw;
    ngx_uint_t        n, i;
    ngx_array_t       params;
    ngx_table_elt_t  *h;
    ngx_keyval_t     *kv;

    h = ngx_echelon_find_header(r, "X-Twilio-Signature");

    if (h == NULL || emcf->twilio_token.len == 0 || emcf->public_url.len == 0)
    {
        return NGX_DECLINED;
    }

    if (ngx_array_init(&params, r->pool, 16, sizeof(ngx_keyval_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p = body->data;
    last = body->data + body->len;

    while (p < last) {
        amp = ngx_strlchr(p, last, '&');
        if (amp == NULL) {
            amp = last;
        }

        eq = ngx_strlchr(p, amp, '=');

        kv = ngx_array_push(&params);
        if (kv == NULL) {
            return NGX_ERROR;
        }

        /* names and values are signed decoded, "+" being a space */

        for (i = 0; i < 2; i++) {
            raw.data = (i == 0) ? p : (eq ? eq + 1 : amp);
            raw.len = (i == 0) ? (size_t) ((eq ? eq : amp) - p)
                               : (size_t) (amp - raw.data);

            dst = ngx_pnalloc(r->pool, raw.len + 1);
            if (dst == NULL) {
                return NGX_ERROR;
            }

            (i == 0 ? &kv->key : &kv->value)->data = dst;

            for (n = 0; n < raw.len; n++) {
                if (raw.data[n] == '+') {
                    raw.data[n] = ' ';
                }
            }

            ngx_unescape_uri(&dst, &raw.data, raw.len, 0);

            (i == 0 ? &kv->key : &kv->value)->len =
                dst - (i == 0 ? kv->key.data : kv->value.data);
        }

        p = amp + 1;
    }

    ngx_qsort(params.elts, params.nelts, sizeof(ngx_keyval_t),
              ngx_echelon_param_cmp);

    parts = ngx_pnalloc(r->pool, (2 + 2 * params.nelts) * sizeof(ngx_str_t));
    if (parts == NULL) {
        return NGX_ERROR;
    }

    parts[0] = emcf->public_url;
    parts[1] = r->unparsed_uri;
    kv = params.elts;

    for (i = 0; i < params.nelts; i++) {
        parts[2 + 2 * i] = kv[i].key;
        parts[3 + 2 * i] = kv[i].value;
    }

    if (ngx_echelon_hmac("SHA1", &emcf->twilio_token, parts,
                         2 + 2 * params.nelts, md, &len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    raw.data = md;
    raw.len = len;

    expected.data = ngx_pnalloc(r->pool, ngx_base64_encoded_length(len));
    if (expected.data == NULL) {
        return NGX_ERROR;
    }

    ngx_encode_base64(&expected, &raw);

    sig = h->value;

    if (sig.len != expected.len
        || CRYPTO_memcmp(sig.data, expected.data, sig.len) != 0)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* X-Hub-Signature-256: "sha256=" and hex HMAC-SHA256 of the raw body */

ngx_int_t
ngx_echelon_meta_verify(ngx_echelon_main_conf_t *emcf, ngx_str_t *header,
    ngx_str_t *body)
{
    u_char  md[EVP_MAX_MD_SIZE], hex[2 * EVP_MAX_MD_SIZE];
    size_t  len;

    if (emcf->meta_app_secret.len == 0 || header->len != 7 + 64
        || ngx_strncmp(header->data, "sha256=", 7) != 0)
    {
        return NGX_DECLINED;
    }

    if (ngx_echelon_hmac("SHA256", &emcf->meta_app_secret, body, 1, md,
                         &len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_hex_dump(hex, md, len);

    if (CRYPTO_memcmp(hex, header->data + 7, 64) != 0) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* application/x-www-form-urlencoded: all but the unreserved as %XX */

static u_char *
ngx_echelon_form_escape(u_char *dst, ngx_str_t *src)
{
    size_t         i;
    u_char         c;
    static u_char  hex[] = "0123456789ABCDEF";

    for (i = 0; i < src->len; i++) {
        c = src->data[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'
            || c == '~')
        {
            *dst++ = c;
            continue;
        }

        *dst++ = '%';
        *dst++ = hex[c >> 4];
        *dst++ = hex[c & 0xf];
    }

    return dst;
}


static size_t
ngx_echelon_form_len(ngx_str_t *src)
{
    return 3 * src->len;
}


static int ngx_libc_cdecl
ngx_echelon_param_cmp(const void *one, const void *two)
{
    const ngx_keyval_t  *a = one;
    const ngx_keyval_t  *b = two;

    ngx_int_t  rc;

    rc = ngx_strncmp(a->key.data, b->key.data, ngx_min(a->key.len,
                                                       b->key.len));

    if (rc == 0) {
        return (int) a->key.len - (int) b->key.len;
    }

    return (int) rc;
}
