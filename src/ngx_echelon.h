
/*
 * Copyright (C) Echelon
 *
 * The umbrella header: the types every layer of the module shares.
 */


#ifndef _NGX_ECHELON_H_INCLUDED_
#define _NGX_ECHELON_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <libpq-fe.h>
#include <jansson.h>


#define NGX_ECHELON_MAX_PARAMS      16

#define NGX_HTTP_UNPROCESSABLE_ENTITY  422
#define NGX_ECHELON_PROVIDER_ID_MAX    255

#define NGX_ECHELON_LOC_API         1
#define NGX_ECHELON_LOC_WEBHOOKS    2
#define NGX_ECHELON_LOC_ERRORS      3

#define NGX_ECHELON_WHATSAPP_TWILIO 1
#define NGX_ECHELON_WHATSAPP_META   2


typedef struct ngx_echelon_pg_pool_s   ngx_echelon_pg_pool_t;
typedef struct ngx_echelon_pg_conn_s   ngx_echelon_pg_conn_t;
typedef struct ngx_echelon_pg_query_s  ngx_echelon_pg_query_t;
typedef struct ngx_echelon_smtp_s      ngx_echelon_smtp_t;


/* the statements of src/ngx_echelon_sql.c, by number */

typedef enum {
    NGX_ECHELON_SQL_AUTH = 0,
    NGX_ECHELON_SQL_ACCOUNT_CREATE,
    NGX_ECHELON_SQL_ACCOUNT_GET,
    NGX_ECHELON_SQL_STRIPE_PUT,
    NGX_ECHELON_SQL_STRIPE_SECRETS,
    NGX_ECHELON_SQL_STRIPE_EVENT,
    NGX_ECHELON_SQL_CHANNEL_PUT,
    NGX_ECHELON_SQL_CHANNEL_LIST,
    NGX_ECHELON_SQL_EMPLOYEE_CREATE,
    NGX_ECHELON_SQL_EMPLOYEE_GET,
    NGX_ECHELON_SQL_EMPLOYEE_LIST,
    NGX_ECHELON_SQL_TRIGGER_CREATE,
    NGX_ECHELON_SQL_TRIGGER_LIST,
    NGX_ECHELON_SQL_CONTACT_CREATE,
    NGX_ECHELON_SQL_CONTACT_GET,
    NGX_ECHELON_SQL_ACTIVITY,
    NGX_ECHELON_SQL_DELIVERY_GET,
    NGX_ECHELON_SQL_ACCOUNT_PLAN,
    NGX_ECHELON_SQL_EMPLOYEE_PATCH,
    NGX_ECHELON_SQL_EMPLOYEE_DELETE,
    NGX_ECHELON_SQL_TRIGGER_GET,
    NGX_ECHELON_SQL_TRIGGER_PATCH,
    NGX_ECHELON_SQL_TRIGGER_DELETE,
    NGX_ECHELON_SQL_CONTACT_PATCH,
    NGX_ECHELON_SQL_CONTACT_ACTIVITY,
    NGX_ECHELON_SQL_INVOICE_CREATE,
    NGX_ECHELON_SQL_INVOICE_GET,
    NGX_ECHELON_SQL_INVOICE_VOID,
    NGX_ECHELON_SQL_PAYMENT_CREATE,
    NGX_ECHELON_SQL_IDEMPOTENCY_BEGIN,
    NGX_ECHELON_SQL_IDEMPOTENCY_END,
    NGX_ECHELON_SQL_RESCUE,
    NGX_ECHELON_SQL_CLAIM,
    NGX_ECHELON_SQL_FINISH,
    NGX_ECHELON_SQL_PROVIDER_STATUS,
    NGX_ECHELON_SQL_COUNT
} ngx_echelon_sql_e;


typedef struct {
    const char                 *name;
    const char                 *text;
    int                         nparams;
} ngx_echelon_sql_t;


typedef struct {
    ngx_uint_t                  version;
    const char                 *text;
} ngx_echelon_migration_t;


/*
 * Outbound HTTP/1.1 on nginx's event machinery (src/ngx_echelon_fetch.c):
 * peer connections, TLS with certificate and host verification, timeouts
 * and keepalive, with no client request behind it.
 */

typedef struct ngx_echelon_fetch_s  ngx_echelon_fetch_t;


typedef struct {
    ngx_str_t                   url;        /* http(s)://host[:port] */
    ngx_str_t                   authority;  /* host[:port] of the URL */
    ngx_addr_t                 *addrs;      /* resolved at configuration */
    ngx_uint_t                  naddrs;
    ngx_resolver_t             *resolver;   /* or for each connection */
    ngx_msec_t                  resolver_timeout;
    ngx_str_t                   host;       /* Host header, SNI, checks */
    in_port_t                   port;
    unsigned                    tls:1;
} ngx_echelon_endpoint_t;


typedef struct {
    ngx_echelon_endpoint_t     *endpoint;
    ngx_str_t                   method;     /* "POST" */
    ngx_str_t                   path;       /* "/2010-04-01/..." */
    ngx_str_t                   headers;    /* "Name: value\r\n"... */
    ngx_str_t                   body;
    ngx_msec_t                  timeout;    /* the whole exchange */
    unsigned                    idempotent:1;   /* safe to send twice */
} ngx_echelon_fetch_req_t;


typedef struct {
    ngx_uint_t                  status;     /* 0: no response at all */
    ngx_str_t                   body;       /* at most 64 KB kept */
    time_t                      retry_after;    /* seconds, or -1 */
    ngx_str_t                   error;      /* why there is no response */
} ngx_echelon_fetch_res_t;


typedef void (*ngx_echelon_fetch_done_pt)(void *data,
    ngx_echelon_fetch_res_t *res);


ngx_int_t ngx_echelon_endpoint_parse(ngx_conf_t *cf, ngx_str_t *url,
    ngx_echelon_endpoint_t *ep);
ngx_int_t ngx_echelon_endpoint_resolve(ngx_conf_t *cf,
    ngx_echelon_endpoint_t *ep, ngx_resolver_t *resolver,
    ngx_msec_t timeout);
ngx_echelon_fetch_t *ngx_echelon_fetch_create(ngx_cycle_t *cycle);
void ngx_echelon_fetch_destroy(ngx_echelon_fetch_t *fetch);
void ngx_echelon_conn_park(ngx_connection_t *c, ngx_msec_t timeout);
void ngx_echelon_conn_wake(ngx_connection_t *c);
ngx_uint_t ngx_echelon_conn_alive(ngx_connection_t *c);
ngx_int_t ngx_echelon_fetch(ngx_echelon_fetch_t *fetch,
    ngx_echelon_fetch_req_t *req, ngx_echelon_fetch_done_pt done,
    void *data);


/* configuration */

typedef struct {
    ngx_str_t                   conninfo;
    ngx_uint_t                  pool_size;
    ngx_msec_t                  connect_timeout;
    ngx_msec_t                  query_timeout;
    ngx_msec_t                  queue_timeout;
    ngx_msec_t                  retry_down;

    ngx_str_t                   admin_token;

    ngx_flag_t                  scheduler;
    ngx_uint_t                  scheduler_worker;
    ngx_msec_t                  scheduler_interval;
    ngx_uint_t                  scheduler_batch;
    ngx_msec_t                  scheduler_lease;
    ngx_uint_t                  max_attempts;
    ngx_msec_t                  retry_backoff;

    ngx_str_t                   smtp_url;
    ngx_str_t                   smtp_from;
    ngx_str_t                   smtp_user;
    ngx_str_t                   smtp_password;
    ngx_addr_t                 *smtp_addrs;     /* a name, resolved */
    ngx_msec_t                  smtp_timeout;
    ngx_uint_t                  smtp_keepalive;
    ngx_msec_t                  smtp_keepalive_timeout;
    ngx_uint_t                  smtp_keepalive_requests;

    /* SMS and WhatsApp providers */
    ngx_str_t                   public_url;
    ngx_msec_t                  provider_timeout;
    ngx_echelon_endpoint_t     *twilio;
    ngx_str_t                   twilio_sid;
    ngx_str_t                   twilio_token;
    ngx_uint_t                  whatsapp_provider;
    ngx_echelon_endpoint_t     *meta;
    ngx_str_t                   meta_phone_id;
    ngx_str_t                   meta_token;
    ngx_str_t                   meta_app_secret;
    ngx_str_t                   meta_verify_token;

    ngx_echelon_pg_pool_t      *pool;
    ngx_echelon_smtp_t         *smtp;
    ngx_echelon_fetch_t        *fetch;
} ngx_echelon_main_conf_t;


typedef struct {
    ngx_uint_t                  kind;
    size_t                      max_body_size;
} ngx_echelon_loc_conf_t;


/* asynchronous PostgreSQL */

typedef enum {
    NGX_ECHELON_PG_OK = 0,
    NGX_ECHELON_PG_UNAVAILABLE,     /* no connection, timeout, broken */
    NGX_ECHELON_PG_FAILED           /* the server rejected the statement */
} ngx_echelon_pg_status_e;


typedef void (*ngx_echelon_pg_handler_pt)(ngx_echelon_pg_query_t *q,
    PGresult *res);


struct ngx_echelon_pg_query_s {
    ngx_echelon_sql_e           sql;
    const char                 *text;       /* simple protocol, no params */
    int                         nparams;
    const char                 *values[NGX_ECHELON_MAX_PARAMS];
    int                         lengths[NGX_ECHELON_MAX_PARAMS];

    ngx_echelon_pg_handler_pt   handler;
    void                       *data;
    ngx_log_t                  *log;

    ngx_echelon_pg_status_e     status;
    char                        sqlstate[6];
    ngx_str_t                   error;

    /* owned by the pool */
    ngx_echelon_pg_pool_t      *pool;
    ngx_echelon_pg_conn_t      *conn;
    ngx_queue_t                 queue;
    ngx_msec_t                  queued_at;
    unsigned                    waiting:1;
};


ngx_echelon_pg_pool_t *ngx_echelon_pg_pool_create(ngx_cycle_t *cycle,
    ngx_echelon_main_conf_t *emcf);
void ngx_echelon_pg_pool_destroy(ngx_echelon_pg_pool_t *pool);
void ngx_echelon_pg_query(ngx_echelon_pg_pool_t *pool,
    ngx_echelon_pg_query_t *q);
void ngx_echelon_pg_detach(ngx_echelon_pg_query_t *q);
ngx_int_t ngx_echelon_pg_param(ngx_echelon_pg_query_t *q, ngx_pool_t *pool,
    ngx_str_t *value);
void ngx_echelon_pg_param_cstr(ngx_echelon_pg_query_t *q, const char *value);
ngx_str_t ngx_echelon_pg_value(PGresult *res, int row, const char *column);


/* statements and migrations (src/ngx_echelon_sql.c) */

extern ngx_echelon_sql_t        ngx_echelon_sql[];
extern ngx_echelon_migration_t  ngx_echelon_migrations[];


/* schema migrations on a fresh connection (src/ngx_echelon_migrate.c) */

typedef void (*ngx_echelon_migrate_done_pt)(ngx_echelon_pg_pool_t *pool,
    ngx_echelon_pg_conn_t *conn, ngx_int_t rc);

ngx_int_t ngx_echelon_migrate(ngx_echelon_pg_pool_t *pool,
    ngx_echelon_pg_conn_t *conn, ngx_echelon_migrate_done_pt done);
void ngx_echelon_pg_conn_query(ngx_echelon_pg_conn_t *conn,
    ngx_echelon_pg_query_t *q);
ngx_log_t *ngx_echelon_pg_conn_log(ngx_echelon_pg_conn_t *conn);


/* HTTP helpers (src/ngx_echelon_http.c) */

typedef struct ngx_echelon_ctx_s  ngx_echelon_ctx_t;

typedef ngx_int_t (*ngx_echelon_step_pt)(ngx_echelon_ctx_t *ctx,
    PGresult *res);

struct ngx_echelon_ctx_s {
    ngx_http_request_t         *request;
    ngx_echelon_main_conf_t    *emcf;
    ngx_echelon_pg_query_t      query;
    ngx_echelon_step_pt         step;

    ngx_str_t                   body;
    json_t                     *json;

    ngx_str_t                   path[4];
    ngx_uint_t                  nparts;

    ngx_str_t                   account_id;
    ngx_str_t                   account_name;
    ngx_str_t                   account_plan;
    ngx_str_t                   account_created;

    /* Idempotency-Key: the answer is stored before it is sent */
    ngx_str_t                   idem_key;
    ngx_str_t                   idem_hash;
    ngx_str_t                   idem_response;
    ngx_uint_t                  idem_status;

    void                       *data;
    void                       *route;

    /* the JSON of one row, for an answer of one resource */
    json_t                   *(*item)(PGresult *res, int row);

    unsigned                    unknown_id:1;   /* path[2] cannot be ours */
};


ngx_echelon_ctx_t *ngx_echelon_ctx_create(ngx_http_request_t *r);
ngx_int_t ngx_echelon_read_body(ngx_http_request_t *r,
    ngx_http_client_body_handler_pt post_handler);
ngx_int_t ngx_echelon_body_bytes(ngx_http_request_t *r, ngx_str_t *body);
ngx_int_t ngx_echelon_send_json(ngx_http_request_t *r, ngx_uint_t status,
    json_t *json);
ngx_int_t ngx_echelon_send_text(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *text);
ngx_int_t ngx_echelon_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message, const char *field);
void ngx_echelon_run(ngx_echelon_ctx_t *ctx, ngx_echelon_step_pt step);
void ngx_echelon_finish(ngx_echelon_ctx_t *ctx, ngx_int_t rc);
ngx_int_t ngx_echelon_db_error(ngx_echelon_ctx_t *ctx);
ngx_uint_t ngx_echelon_split_path(ngx_str_t *uri, size_t skip,
    ngx_str_t *parts, ngx_uint_t max);
ngx_table_elt_t *ngx_echelon_find_header(ngx_http_request_t *r,
    const char *name);
ngx_int_t ngx_echelon_parse_body(ngx_echelon_ctx_t *ctx);
json_t *ngx_echelon_json_str(ngx_str_t *s);
json_t *ngx_echelon_json_text(u_char *text, size_t len);
ngx_int_t ngx_echelon_id_valid(ngx_str_t *id);
ngx_int_t ngx_echelon_token_valid(u_char *p, size_t len);
ngx_int_t ngx_echelon_time_valid(ngx_str_t *v, ngx_uint_t day);
ngx_int_t ngx_echelon_hmac(const char *digest, ngx_str_t *key,
    ngx_str_t *parts, ngx_uint_t nparts, u_char *md, size_t *len);
json_t *ngx_echelon_json_column(PGresult *res, int row, const char *column);


/* JSON answers written straight into buffers (src/ngx_echelon_http.c) */

typedef struct {
    ngx_http_request_t         *request;
    ngx_chain_t                *first;
    ngx_chain_t               **last;
    ngx_buf_t                  *buf;        /* the one written to */
    size_t                      size;       /* of a new buffer */
    unsigned                    failed:1;
} ngx_echelon_json_out_t;


#define ngx_echelon_out_literal(out, s)                                      \
    ngx_echelon_out_raw(out, (u_char *) s, sizeof(s) - 1)

void ngx_echelon_out_init(ngx_echelon_json_out_t *out, ngx_http_request_t *r,
    size_t size);
void ngx_echelon_out_raw(ngx_echelon_json_out_t *out, u_char *data,
    size_t len);
void ngx_echelon_out_string(ngx_echelon_json_out_t *out, u_char *text,
    size_t len);
void ngx_echelon_out_column(ngx_echelon_json_out_t *out, PGresult *res,
    int row, int column);
void ngx_echelon_out_integer(ngx_echelon_json_out_t *out, ngx_int_t n);
ngx_int_t ngx_echelon_out_send(ngx_echelon_json_out_t *out,
    ngx_uint_t status);


/* the API and the webhooks (src/ngx_echelon_api.c, ngx_echelon_stripe.c) */

ngx_int_t ngx_echelon_api_handler(ngx_http_request_t *r);
ngx_int_t ngx_echelon_idempotency_end(ngx_echelon_ctx_t *ctx);
ngx_int_t ngx_echelon_webhooks_handler(ngx_http_request_t *r);
ngx_int_t ngx_echelon_errors_handler(ngx_http_request_t *r);
ngx_int_t ngx_echelon_status_handler(ngx_echelon_ctx_t *ctx,
    ngx_uint_t meta);
ngx_int_t ngx_echelon_stripe_verify(ngx_str_t *header, ngx_str_t *body,
    ngx_str_t *secrets, ngx_uint_t nsecrets, time_t now, time_t tolerance,
    const char **reason);


/* rendering (src/ngx_echelon_render.c) */

typedef struct {
    ngx_str_t                   contact_name;
    ngx_str_t                   invoice_number;
    ngx_str_t                   invoice_amount;     /* formatted */
    ngx_str_t                   invoice_due_date;   /* formatted */
    ngx_str_t                   invoice_url;
    ngx_str_t                   employee_name;
    ngx_str_t                   account_name;
    ngx_str_t                   event;
    ngx_str_t                   tone;
} ngx_echelon_vars_t;


ngx_int_t ngx_echelon_format_money(ngx_pool_t *pool, int64_t minor,
    ngx_str_t *currency, ngx_str_t *out);
ngx_int_t ngx_echelon_render(ngx_pool_t *pool, ngx_str_t *tmpl,
    ngx_echelon_vars_t *vars, ngx_str_t *out);
ngx_int_t ngx_echelon_render_subject(ngx_pool_t *pool,
    ngx_echelon_vars_t *vars, ngx_str_t *out);
ngx_int_t ngx_echelon_template_check(ngx_str_t *tmpl, ngx_str_t *unknown);


/* the scheduler (src/ngx_echelon_scheduler.c) */

ngx_int_t ngx_echelon_scheduler_start(ngx_cycle_t *cycle,
    ngx_echelon_main_conf_t *emcf);
void ngx_echelon_scheduler_stop(ngx_cycle_t *cycle);


/* SMTP on nginx's events (src/ngx_echelon_smtp_native.c) */

typedef enum {
    NGX_ECHELON_SEND_OK = 0,
    NGX_ECHELON_SEND_TRANSIENT,     /* try again later */
    NGX_ECHELON_SEND_PERMANENT      /* give up with the reason */
} ngx_echelon_send_e;


typedef void (*ngx_echelon_smtp_done_pt)(void *data, ngx_echelon_send_e rc,
    ngx_str_t *reason);


typedef struct {
    ngx_str_t                   from;
    ngx_str_t                   to;
    ngx_str_t                   subject;
    ngx_str_t                   body;
    ngx_str_t                   message_id;
} ngx_echelon_mail_t;


ngx_echelon_smtp_t *ngx_echelon_smtp_create(ngx_cycle_t *cycle,
    ngx_echelon_main_conf_t *emcf);
ngx_int_t ngx_echelon_smtp_resolve(ngx_conf_t *cf,
    ngx_echelon_main_conf_t *emcf);
void ngx_echelon_smtp_destroy(ngx_echelon_smtp_t *smtp);
ngx_int_t ngx_echelon_smtp_sender_valid(ngx_str_t *from);
ngx_int_t ngx_echelon_smtp_send(ngx_echelon_smtp_t *smtp,
    ngx_echelon_mail_t *mail, ngx_echelon_smtp_done_pt done, void *data);


/* SMS and WhatsApp through HTTP providers (src/ngx_echelon_text.c) */

typedef struct {
    ngx_str_t                   channel;        /* "sms", "whatsapp" */
    ngx_str_t                   from;           /* E.164 */
    ngx_str_t                   to;             /* E.164 */
    ngx_str_t                   body;
    ngx_str_t                   delivery_id;    /* the idempotency key */
    ngx_str_t                   account_id;
} ngx_echelon_text_t;


typedef void (*ngx_echelon_text_done_pt)(void *data, ngx_echelon_send_e rc,
    ngx_str_t *provider_id, ngx_str_t *reason, time_t retry_after);


const char *ngx_echelon_text_unavailable(ngx_echelon_main_conf_t *emcf,
    ngx_str_t *channel);
ngx_int_t ngx_echelon_text_send(ngx_echelon_main_conf_t *emcf,
    ngx_pool_t *pool, ngx_echelon_text_t *msg, ngx_echelon_text_done_pt done,
    void *data);
ngx_int_t ngx_echelon_twilio_verify(ngx_echelon_main_conf_t *emcf,
    ngx_http_request_t *r, ngx_str_t *body);
ngx_int_t ngx_echelon_meta_verify(ngx_echelon_main_conf_t *emcf,
    ngx_str_t *header, ngx_str_t *body);


extern ngx_module_t  ngx_http_echelon_module;


#endif /* _NGX_ECHELON_H_INCLUDED_ */
