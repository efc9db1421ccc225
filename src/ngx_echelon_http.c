
/*
 * Copyright (C) Echelon
 *
 * What every API and webhook request shares: its context, reading the body
 * into one piece, waiting on the database, and answering in JSON.
 */


#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "ngx_echelon.h"


static void ngx_echelon_ctx_cleanup(void *data);
static ngx_int_t ngx_echelon_send_chain(ngx_http_request_t *r,
    ngx_uint_t status, ngx_chain_t *out, off_t len);
static ngx_int_t ngx_echelon_shape(u_char **p, u_char *last,
    const char *shape);
static ngx_int_t ngx_echelon_utf8_char(u_char **p, u_char *last,
    ngx_str_t *ch);
static u_char *ngx_echelon_json_escape(u_char *dst, u_char *src, size_t len);
static u_char *ngx_echelon_out_reserve(ngx_echelon_json_out_t *out,
    size_t size);
static void ngx_echelon_query_handler(ngx_echelon_pg_query_t *q,
    PGresult *res);


ngx_echelon_ctx_t *
ngx_echelon_ctx_create(ngx_http_request_t *r)
{
    ngx_echelon_ctx_t   *ctx;
    ngx_pool_cleanup_t  *cln;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_echelon_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_echelon_ctx_cleanup;
    cln->data = ctx;

    ctx->request = r;
    ctx->emcf = ngx_http_get_module_main_conf(r, ngx_http_echelon_module);

    ngx_http_set_ctx(r, ctx, ngx_http_echelon_module);

    return ctx;
}


/* the request goes away: a query still waiting must not call back */

static void
ngx_echelon_ctx_cleanup(void *data)
{
    ngx_echelon_ctx_t  *ctx = data;

    ngx_echelon_pg_detach(&ctx->query);

    if (ctx->json) {
        json_decref(ctx->json);
        ctx->json = NULL;
    }
}


ngx_int_t
ngx_echelon_read_body(ngx_http_request_t *r,
    ngx_http_client_body_handler_pt post_handler)
{
    ngx_int_t                rc;
    ngx_echelon_loc_conf_t  *elcf;

    elcf = ngx_http_get_module_loc_conf(r, ngx_http_echelon_module);

    if (r->headers_in.content_length_n > (off_t) elcf->max_body_size) {
        ngx_http_discard_request_body(r);
        return ngx_echelon_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                      "body_too_large",
                                      "the request body is too large", NULL);
    }

    /*
     * nginx's own limit is off in our locations, so that a body too large
     * gets a JSON answer; a chunked body, whose size is known only at its
     * end, would then be unlimited: a length is required
     */

    if (r->headers_in.chunked) {
        ngx_http_discard_request_body(r);
        return ngx_echelon_send_error(r, NGX_HTTP_LENGTH_REQUIRED,
                                      "length_required",
                                      "send the body with a Content-Length",
                                      NULL);
    }

    rc = ngx_http_read_client_request_body(r, post_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return ngx_echelon_send_error(r, rc, "bad_request",
                                      "the request body could not be read",
                                      NULL);
    }

    return NGX_DONE;
}


/* the body in one piece, whether nginx kept it in buffers or a file */

ngx_int_t
ngx_echelon_body_bytes(ngx_http_request_t *r, ngx_str_t *body)
{
    off_t                    len;
    u_char                  *p;
    ssize_t                  n;
    ngx_buf_t               *b;
    ngx_chain_t             *cl;
    ngx_echelon_loc_conf_t  *elcf;

    ngx_str_null(body);

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    len = 0;

    /* buffers in memory, in the temporary file, or empty ones ending it */

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_in_memory(b)) {
            len += b->last - b->pos;

        } else if (b->in_file && b->file) {
            len += b->file_last - b->file_pos;
        }
    }

    elcf = ngx_http_get_module_loc_conf(r, ngx_http_echelon_module);

    if (len > (off_t) elcf->max_body_size) {
        return NGX_DECLINED;
    }

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_in_memory(b)) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
            continue;
        }

        if (!b->in_file || b->file == NULL) {
            continue;
        }

        /* a local temporary file, read like nginx reads its own */

        n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                          b->file_pos);

        if (n != b->file_last - b->file_pos) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "echelon: short read of the request body file");
            return NGX_ERROR;
        }

        p += n;
    }

    *p = '\0';
    body->len = len;

    return NGX_OK;
}


ngx_int_t
ngx_echelon_send_json(ngx_http_request_t *r, ngx_uint_t status, json_t *json)
{
    char               *text;
    ngx_str_t           body;
    ngx_echelon_ctx_t  *ctx;

    text = json_dumps(json, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(json);

    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.len = ngx_strlen(text);
    body.data = ngx_pnalloc(r->pool, body.len + 2);

    if (body.data == NULL) {
        free(text);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(body.data, text, body.len);
    body.data[body.len++] = '\n';
    body.data[body.len] = '\0';

    free(text);

    /* a write under an Idempotency-Key: stored first, then sent */

    ctx = ngx_http_get_module_ctx(r, ngx_http_echelon_module);

    if (ctx && ctx->idem_key.len && ctx->idem_status == 0) {
        ctx->idem_status = status;
        ctx->idem_response = body;

        return ngx_echelon_idempotency_end(ctx);
    }

    return ngx_echelon_send_text(r, status, &body);
}


ngx_int_t
ngx_echelon_send_text(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *text)
{
    ngx_buf_t    *b;
    ngx_chain_t   out;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = text->data;
    b->last = text->data + text->len;
    b->memory = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_echelon_send_chain(r, status, &out, text->len);
}


static ngx_int_t
ngx_echelon_send_chain(ngx_http_request_t *r, ngx_uint_t status,
    ngx_chain_t *out, off_t len)
{
    ngx_int_t     rc;
    ngx_chain_t  *cl;

    for (cl = out; cl->next; cl = cl->next) { /* void */ }

    cl->buf->last_buf = (r == r->main) ? 1 : 0;
    cl->buf->last_in_chain = 1;

    r->headers_out.status = status;

    if (status == NGX_HTTP_UNPROCESSABLE_ENTITY) {
        ngx_str_set(&r->headers_out.status_line, "422 Unprocessable Entity");
    }

    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, out);
}


ngx_int_t
ngx_echelon_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message, const char *field)
{
    json_t           *err;
    ngx_str_t         fallback;
    ngx_table_elt_t  *h;

    /* a message may quote the client's bytes: keep it valid UTF-8 */

    err = json_pack("{s:s, s:o}", "code", code,
                    "message", ngx_echelon_json_text((u_char *) message,
                                                     ngx_strlen(message)));
    if (err == NULL) {
        ngx_str_set(&fallback, "{\"error\":{\"code\":\"internal_error\","
                    "\"message\":\"the answer could not be written\"}}\n");
        return ngx_echelon_send_text(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                     &fallback);
    }

    if (field) {
        json_object_set_new(err, "field", json_string(field));
    }

    if (status == NGX_HTTP_SERVICE_UNAVAILABLE) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            json_decref(err);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Retry-After");
        ngx_str_set(&h->value, "1");
    }

    return ngx_echelon_send_json(r, status, json_pack("{s:o}", "error", err));
}


/* a JSON string of text, with every byte that is not UTF-8 as U+FFFD */

json_t *
ngx_echelon_json_text(u_char *text, size_t len)
{
    u_char     *p, *last, *dst, *out;
    json_t     *s;
    ngx_str_t   ch;

    out = ngx_alloc(3 * len + 1, ngx_cycle->log);
    if (out == NULL) {
        return json_string("");
    }

    p = text;
    last = text + len;
    dst = out;

    while (p < last) {
        (void) ngx_echelon_utf8_char(&p, last, &ch);
        dst = ngx_cpymem(dst, ch.data, ch.len);
    }

    s = json_stringn((const char *) out, dst - out);
    ngx_free(out);

    return s ? s : json_string("");
}


/*
 * The next character of text at *p, as ngx_echelon_json_text() keeps it:
 * its bytes when they are UTF-8 by the letter (no overlong form, no
 * surrogate, continuation bytes 0x80-0xbf, at most U+10FFFF), or else
 * U+FFFD for the first byte, the next one starting afresh.
 */

static ngx_int_t
ngx_echelon_utf8_char(u_char **p, u_char *last, ngx_str_t *ch)
{
    u_char    *start, *b;
    size_t     n;
    uint32_t   c, min;

    start = *p;
    ch->data = start;

    if (*start < 0x80) {
        ch->len = 1;
        (*p)++;
        return NGX_OK;
    }

    n = (*start >= 0xc2 && *start < 0xe0) ? 2
        : (*start >= 0xe0 && *start < 0xf0) ? 3
        : (*start >= 0xf0 && *start < 0xf5) ? 4 : 0;

    if (n == 0 || (size_t) (last - start) < n) {
        goto invalid;
    }

    for (b = start + 1; b < start + n; b++) {
        if ((*b & 0xc0) != 0x80) {
            goto invalid;
        }
    }

    c = ngx_utf8_decode(p, n);
    min = (n == 2) ? 0x80 : (n == 3) ? 0x800 : 0x10000;

    if (*p != start + n || c < min || c > 0x10ffff
        || (c >= 0xd800 && c <= 0xdfff))
    {
        goto invalid;
    }

    ch->len = n;

    return NGX_OK;

invalid:

    ch->data = (u_char *) "\xef\xbf\xbd";
    ch->len = 3;
    *p = start + 1;

    return NGX_OK;
}


/*
 * A JSON answer written straight into buffers of the request's pool, as
 * jansson's json_dumps(JSON_COMPACT) would write it.  A failed allocation
 * is remembered; ngx_echelon_out_send() then answers 500.
 */

void
ngx_echelon_out_init(ngx_echelon_json_out_t *out, ngx_http_request_t *r,
    size_t size)
{
    ngx_memzero(out, sizeof(ngx_echelon_json_out_t));

    out->request = r;
    out->size = ngx_max(size, 1024);
    out->last = &out->first;
}


void
ngx_echelon_out_raw(ngx_echelon_json_out_t *out, u_char *data, size_t len)
{
    u_char  *p;

    p = ngx_echelon_out_reserve(out, len);

    if (p) {
        out->buf->last = ngx_cpymem(p, data, len);
    }
}


/* text as a JSON string, with the UTF-8 of ngx_echelon_json_text() */

void
ngx_echelon_out_string(ngx_echelon_json_out_t *out, u_char *text,
    size_t len)
{
    u_char  *p, *c, *last;
    size_t   size;

    /* at most: U+FFFD for each byte from 0x80, "\u001F" for a control */

    size = 2;

    for (c = text, last = text + len; c < last; c++) {
        size += (*c >= 0x80) ? 3 : (*c < 0x20) ? 6
                : (*c == '"' || *c == '\\') ? 2 : 1;
    }

    p = ngx_echelon_out_reserve(out, size);

    if (p) {
        out->buf->last = ngx_echelon_json_escape(p, text, len);
    }
}


void
ngx_echelon_out_column(ngx_echelon_json_out_t *out, PGresult *res, int row,
    int column)
{
    if (PQgetisnull(res, row, column)) {
        ngx_echelon_out_literal(out, "null");
        return;
    }

    ngx_echelon_out_string(out, (u_char *) PQgetvalue(res, row, column),
                           PQgetlength(res, row, column));
}


void
ngx_echelon_out_integer(ngx_echelon_json_out_t *out, ngx_int_t n)
{
    u_char  *p;

    p = ngx_echelon_out_reserve(out, NGX_INT_T_LEN);

    if (p) {
        out->buf->last = ngx_sprintf(p, "%i", n);
    }
}


ngx_int_t
ngx_echelon_out_send(ngx_echelon_json_out_t *out, ngx_uint_t status)
{
    off_t         len;
    ngx_chain_t  *cl;

    if (out->failed || out->first == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = 0;

    for (cl = out->first; cl; cl = cl->next) {
        len += cl->buf->last - cl->buf->pos;
    }

    return ngx_echelon_send_chain(out->request, status, out->first, len);
}


/* size bytes free at the end of the last buffer, or NULL */

static u_char *
ngx_echelon_out_reserve(ngx_echelon_json_out_t *out, size_t size)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (out->failed) {
        return NULL;
    }

    if (out->buf && (size_t) (out->buf->end - out->buf->last) >= size) {
        return out->buf->last;
    }

    b = ngx_create_temp_buf(out->request->pool, ngx_max(size, out->size));
    cl = ngx_alloc_chain_link(out->request->pool);

    if (b == NULL || cl == NULL) {
        out->failed = 1;
        return NULL;
    }

    cl->buf = b;
    cl->next = NULL;

    *out->last = cl;
    out->last = &cl->next;
    out->buf = b;

    return b->last;
}


/* "text" with the escapes jansson writes; dst has room for the most */

static u_char *
ngx_echelon_json_escape(u_char *dst, u_char *src, size_t len)
{
    u_char     *p, *last, *start;
    ngx_str_t   ch;

    static u_char  hex[] = "0123456789ABCDEF";

    p = src;
    last = src + len;

    *dst++ = '"';
    start = dst;

    while (p < last) {

        if (*p >= 0x80) {
            if (ngx_echelon_utf8_char(&p, last, &ch) != NGX_OK) {
                dst = start;
                break;
            }

            dst = ngx_cpymem(dst, ch.data, ch.len);
            continue;
        }

        if (*p >= 0x20 && *p != '"' && *p != '\\') {
            *dst++ = *p++;
            continue;
        }

        *dst++ = '\\';

        switch (*p) {
        case '"':
        case '\\':
            *dst++ = *p;
            break;
        case '\b':
            *dst++ = 'b';
            break;
        case '\f':
            *dst++ = 'f';
            break;
        case '\n':
            *dst++ = 'n';
            break;
        case '\r':
            *dst++ = 'r';
            break;
        case '\t':
            *dst++ = 't';
            break;
        default:
            dst = ngx_cpymem(dst, "u00", 3);
            *dst++ = hex[*p >> 4];
            *dst++ = hex[*p & 0xf];
        }

        p++;
    }

    *dst++ = '"';

    return dst;
}


/* start ctx->query; "step" continues the request with its result */

void
ngx_echelon_run(ngx_echelon_ctx_t *ctx, ngx_echelon_step_pt step)
{
    ctx->step = step;
    ctx->query.handler = ngx_echelon_query_handler;
    ctx->query.data = ctx;
    ctx->query.log = ctx->request->connection->log;

    ngx_echelon_pg_query(ctx->emcf->pool, &ctx->query);
}


static void
ngx_echelon_query_handler(ngx_echelon_pg_query_t *q, PGresult *res)
{
    ngx_int_t            rc;
    ngx_echelon_ctx_t   *ctx;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    ctx = q->data;
    r = ctx->request;
    c = r->connection;

    rc = ctx->step(ctx, res);

    if (rc != NGX_DONE) {
        ngx_echelon_finish(ctx, rc);
    }

    ngx_http_run_posted_requests(c);
}


void
ngx_echelon_finish(ngx_echelon_ctx_t *ctx, ngx_int_t rc)
{
    if (ctx->json) {
        json_decref(ctx->json);
        ctx->json = NULL;
    }

    ngx_http_finalize_request(ctx->request, rc);
}


/* a query that did not succeed, told to the client */

ngx_int_t
ngx_echelon_db_error(ngx_echelon_ctx_t *ctx)
{
    if (ctx->query.status == NGX_ECHELON_PG_UNAVAILABLE) {
        return ngx_echelon_send_error(ctx->request,
                                      NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "store_unavailable",
                                      "the database is unavailable; "
                                      "try again shortly", NULL);
    }

    return ngx_echelon_send_error(ctx->request,
                                  NGX_HTTP_INTERNAL_SERVER_ERROR,
                                  "internal_error",
                                  "the request could not be stored", NULL);
}


/* split "/v1/employees/emp_1/triggers" after "/v1/" into its parts */

ngx_uint_t
ngx_echelon_split_path(ngx_str_t *uri, size_t skip, ngx_str_t *parts,
    ngx_uint_t max)
{
    u_char      *p, *last, *start;
    ngx_uint_t   n;

    if (uri->len < skip) {
        return 0;
    }

    p = uri->data + skip;
    last = uri->data + uri->len;
    n = 0;

    while (p < last) {
        start = p;

        while (p < last && *p != '/') {
            p++;
        }

        if (p > start) {
            if (n == max) {
                return max + 1;
            }

            parts[n].data = start;
            parts[n].len = p - start;
            n++;
        }

        p++;
    }

    return n;
}


json_t *
ngx_echelon_json_str(ngx_str_t *s)
{
    if (s->data == NULL) {
        return json_null();
    }

    return ngx_echelon_json_text(s->data, s->len);
}


json_t *
ngx_echelon_json_column(PGresult *res, int row, const char *column)
{
    ngx_str_t  v;

    v = ngx_echelon_pg_value(res, row, column);

    return ngx_echelon_json_str(&v);
}


ngx_table_elt_t *
ngx_echelon_find_header(ngx_http_request_t *r, const char *name)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


/*
 * ctx->body and ctx->json from the request body: a JSON object, sent as
 * application/json.  When ctx->json is left NULL, the error answer has
 * been sent and the return value is the request's to finalize with.
 */

ngx_int_t
ngx_echelon_parse_body(ngx_echelon_ctx_t *ctx)
{
    ngx_int_t            rc;
    ngx_str_t           *type;
    json_error_t         err;
    ngx_http_request_t  *r;

    r = ctx->request;

    rc = (ctx->body.data == NULL) ? ngx_echelon_body_bytes(r, &ctx->body)
                                  : NGX_OK;

    if (rc == NGX_DECLINED) {
        return ngx_echelon_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                      "body_too_large",
                                      "the request body is too large", NULL);
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    type = r->headers_in.content_type ? &r->headers_in.content_type->value
                                      : NULL;

    if (type == NULL
        || type->len < sizeof("application/json") - 1
        || ngx_strncasecmp(type->data, (u_char *) "application/json",
                           sizeof("application/json") - 1) != 0
        || (type->len > sizeof("application/json") - 1
            && type->data[sizeof("application/json") - 1] != ';'
            && type->data[sizeof("application/json") - 1] != ' '))
    {
        return ngx_echelon_send_error(r, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                      "unsupported_media_type",
                                      "the body must be application/json",
                                      NULL);
    }

    ctx->json = json_loadb((const char *) ctx->body.data, ctx->body.len,
                           JSON_REJECT_DUPLICATES, &err);

    if (ctx->json == NULL) {
        return ngx_echelon_send_error(r, NGX_HTTP_BAD_REQUEST, "invalid_json",
                                      err.text, NULL);
    }

    if (!json_is_object(ctx->json)) {
        json_decref(ctx->json);
        ctx->json = NULL;

        return ngx_echelon_send_error(r, NGX_HTTP_BAD_REQUEST, "invalid_json",
                                      "the body must be a JSON object", NULL);
    }

    return NGX_OK;
}


/* an id of ours: letters, digits, "_" and "-", at most 64 of them */

ngx_int_t
ngx_echelon_id_valid(ngx_str_t *id)
{
    size_t  i;
    u_char  c;

    if (id->len == 0 || id->len > 64) {
        return 0;
    }

    for (i = 0; i < id->len; i++) {
        c = id->data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_' || c == '-'))
        {
            return 0;
        }
    }

    return 1;
}


/* HMAC with digest ("SHA1", "SHA256") over the parts, one after another */

ngx_int_t
ngx_echelon_hmac(const char *digest, ngx_str_t *key, ngx_str_t *parts,
    ngx_uint_t nparts, u_char *md, size_t *len)
{
    EVP_MAC      *mac;
    ngx_int_t     rc;
    ngx_uint_t    i;
    OSSL_PARAM    params[2];
    EVP_MAC_CTX  *mctx;

    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (mac == NULL) {
        return NGX_ERROR;
    }

    mctx = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);

    if (mctx == NULL) {
        return NGX_ERROR;
    }

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *) digest, 0);
    params[1] = OSSL_PARAM_construct_end();

    rc = EVP_MAC_init(mctx, key->data, key->len, params) ? NGX_OK : NGX_ERROR;

    for (i = 0; rc == NGX_OK && i < nparts; i++) {
        if (!EVP_MAC_update(mctx, parts[i].data, parts[i].len)) {
            rc = NGX_ERROR;
        }
    }

    if (rc == NGX_OK && !EVP_MAC_final(mctx, md, len, EVP_MAX_MD_SIZE)) {
        rc = NGX_ERROR;
    }

    EVP_MAC_CTX_free(mctx);

    return rc;
}


/*
 * nginx's own errors in the API's shape: what it refuses before a location
 * is chosen (a request line or header it cannot read, a URI too long) or
 * for one (a body over client_max_body_size).  Configured as
 *
 *     error_page 400 405 408 413 414 500 502 503 504 @echelon_errors;
 *     location @echelon_errors { echelon_errors; }
 *
 * The status stays the one nginx chose (r->err_status).
 */

typedef struct {
    ngx_uint_t                  status;
    const char                 *code;
    const char                 *message;
} ngx_echelon_error_page_t;


static ngx_echelon_error_page_t  ngx_echelon_error_pages[] = {
    { NGX_HTTP_BAD_REQUEST, "bad_request",
      "the request could not be read: its request line or a header is "
      "malformed or too large" },
    { NGX_HTTP_NOT_FOUND, "not_found", "there is nothing here" },
    { NGX_HTTP_NOT_ALLOWED, "method_not_allowed",
      "this method is not allowed here" },
    { NGX_HTTP_REQUEST_TIME_OUT, "request_timeout",
      "the request did not arrive in time" },
    { NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "body_too_large",
      "the request body is too large" },
    { NGX_HTTP_REQUEST_URI_TOO_LARGE, "uri_too_long",
      "the request URI is too long" },
    { NGX_HTTP_NOT_IMPLEMENTED, "not_implemented",
      "this request uses something the server does not implement, such as "
      "a transfer coding" },
    { NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
      "the service is unavailable; try again shortly" },
    { NGX_HTTP_VERSION_NOT_SUPPORTED, "http_version_not_supported",
      "this HTTP version is not supported" },
    { 0, NULL, NULL }
};


ngx_int_t
ngx_echelon_errors_handler(ngx_http_request_t *r)
{
    ngx_uint_t                 status;
    ngx_echelon_error_page_t  *page;

    status = r->err_status ? r->err_status : r->headers_out.status;

    if (status < NGX_HTTP_BAD_REQUEST || status > 599) {
        status = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    for (page = ngx_echelon_error_pages; page->status; page++) {
        if (page->status == status) {
            return ngx_echelon_send_error(r, status, page->code,
                                          page->message, NULL);
        }
    }

    if (status < NGX_HTTP_INTERNAL_SERVER_ERROR) {
        return ngx_echelon_send_error(r, status, "request_error",
                                      "the request was refused", NULL);
    }

    return ngx_echelon_send_error(r, status, "internal_error",
                                  "the server met an error", NULL);
}


/*
 * A token we keep or key on (a provider's message id, an Idempotency-Key):
 * 1 to 255 printable ASCII bytes, no space
 */

ngx_int_t
ngx_echelon_token_valid(u_char *p, size_t len)
{
    u_char  *last;

    if (len == 0 || len > NGX_ECHELON_PROVIDER_ID_MAX) {
        return 0;
    }

    for (last = p + len; p < last; p++) {
        if (*p <= ' ' || *p >= 0x7f) {
            return 0;
        }
    }

    return 1;
}


/*
 * An RFC 3339 time, 2026-12-04T10:00:00Z with maybe fractions of a second
 * and an offset instead of Z, or, where a day will do, 2026-12-04.  Only
 * the shape: the database checks the ranges when it reads the time.
 */

ngx_int_t
ngx_echelon_time_valid(ngx_str_t *v, ngx_uint_t day)
{
    u_char      *p, *last;
    ngx_uint_t   n;

    p = v->data;
    last = p + v->len;

    if (!ngx_echelon_shape(&p, last, "dddd-dd-dd")) {
        return 0;
    }

    if (p == last) {
        return day;
    }

    if (*p != 'T' && *p != 't') {
        return 0;
    }

    p++;

    if (!ngx_echelon_shape(&p, last, "dd:dd:dd")) {
        return 0;
    }

    if (p < last && *p == '.') {
        for (p++, n = 0; p < last && *p >= '0' && *p <= '9'; p++, n++) {
            /* void */
        }

        if (n == 0) {
            return 0;
        }
    }

    if (p < last && (*p == 'Z' || *p == 'z')) {
        return p + 1 == last;
    }

    if (p == last || (*p != '+' && *p != '-')) {
        return 0;
    }

    p++;

    return ngx_echelon_shape(&p, last, "dd:dd") && p == last;
}


/* *p follows shape ("d" a digit, anything else itself), and moves past it */

static ngx_int_t
ngx_echelon_shape(u_char **p, u_char *last, const char *shape)
{
    u_char  *q;

    for (q = *p; *shape; shape++, q++) {
        if (q == last
            || (*shape == 'd' ? (*q < '0' || *q > '9') : *q != *shape))
        {
            return 0;
        }
    }

    *p = q;

    return 1;
}
