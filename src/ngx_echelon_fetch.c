
/*
 * Copyright (C) Echelon
 *
 * Outbound HTTP/1.1 for the providers (Twilio, Meta's WhatsApp Cloud API),
 * asked for from timers with no client request behind them, so without
 * ngx_http_upstream: peer connections on nginx's event loop, TLS with
 * certificate and host checks, one timeout an exchange, and a small cache
 * of idle keepalive connections per endpoint.
 *
 * An exchange waits in the pending queue until a connection is free; the
 * queue is worked through by a posted event, so that ngx_echelon_fetch()
 * never does any I/O and never calls its handler.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_event_connect.h>

#include "ngx_echelon.h"


#define NGX_ECHELON_FETCH_TIMEOUT        10000
#define NGX_ECHELON_FETCH_CONNS          256     /* open, a worker */
#define NGX_ECHELON_FETCH_IDLE           16      /* kept, an endpoint */
#define NGX_ECHELON_FETCH_IDLE_TIMEOUT   60000

#define NGX_ECHELON_FETCH_BODY_MAX       65536
#define NGX_ECHELON_FETCH_BODY_MIN       4096
#define NGX_ECHELON_FETCH_BUFFER         16384
#define NGX_ECHELON_FETCH_LINE           8192
#define NGX_ECHELON_FETCH_HEADERS_MAX    65536
#define NGX_ECHELON_FETCH_ERROR_LEN      256
#define NGX_ECHELON_FETCH_POOL           1024

#define NGX_ECHELON_FETCH_CA_FILE  "/etc/ssl/certs/ca-certificates.crt"
#define NGX_ECHELON_FETCH_CA_DEPTH       5


/* where an exchange stands, for its log lines and its timeout message */

typedef enum {
    NGX_ECHELON_FETCH_QUEUED = 0,
    NGX_ECHELON_FETCH_RESOLVING,
    NGX_ECHELON_FETCH_CONNECTING,
    NGX_ECHELON_FETCH_HANDSHAKING,
    NGX_ECHELON_FETCH_SENDING,
    NGX_ECHELON_FETCH_READING
} ngx_echelon_fetch_phase_e;


/* what the response parser expects next */

typedef enum {
    NGX_ECHELON_FETCH_STATUS_LINE = 0,
    NGX_ECHELON_FETCH_HEADER_LINE,
    NGX_ECHELON_FETCH_BODY,             /* Content-Length bytes */
    NGX_ECHELON_FETCH_BODY_TO_CLOSE,    /* everything until the close */
    NGX_ECHELON_FETCH_CHUNK_SIZE,
    NGX_ECHELON_FETCH_CHUNK_DATA,
    NGX_ECHELON_FETCH_CHUNK_END,        /* the CRLF after a chunk */
    NGX_ECHELON_FETCH_TRAILER_LINE,
    NGX_ECHELON_FETCH_COMPLETE
} ngx_echelon_fetch_parse_e;


typedef struct ngx_echelon_fetch_exchange_s  ngx_echelon_fetch_exchange_t;


/* the per-worker state of one endpoint: its idle connections */

typedef struct {
    ngx_queue_t                     queue;      /* fetch->origins */
    ngx_echelon_endpoint_t         *endpoint;

    ngx_str_t                       authority;  /* the Host header */
    u_char                         *name;       /* SNI and host checks */
    unsigned                        ip:1;       /* name is an address */

    ngx_queue_t                     idle;       /* most recent first */
    ngx_uint_t                      nidle;
    ngx_uint_t                      next;       /* address to try first */
} ngx_echelon_fetch_origin_t;


/* an open connection, in its own pool, with its own log context */

typedef struct {
    ngx_echelon_fetch_t            *fetch;
    ngx_echelon_fetch_origin_t     *origin;
    ngx_connection_t               *connection;
    ngx_echelon_fetch_exchange_t   *exchange;   /* NULL while idle */
    ngx_str_t                      *peer;

    ngx_queue_t                     queue;      /* origin->idle */
    ngx_queue_t                     lru;        /* fetch->idle */

    ngx_uint_t                      requests;
    ngx_log_t                       log;
} ngx_echelon_fetch_conn_t;


struct ngx_echelon_fetch_exchange_s {
    ngx_queue_t                     queue;      /* pending or active */
    ngx_echelon_fetch_t            *fetch;
    ngx_echelon_fetch_origin_t     *origin;
    ngx_echelon_fetch_conn_t       *conn;
    ngx_pool_t                     *pool;

    ngx_echelon_fetch_done_pt       done;
    void                           *data;

    ngx_event_t                     timer;
    ngx_msec_t                      timeout;
    ngx_msec_t                      start;

    ngx_str_t                       method;
    ngx_str_t                       request;
    size_t                          sent;

    ngx_addr_t                     *addrs;      /* the endpoint's, or */
    ngx_uint_t                      naddrs;     /* resolved for this one */
    ngx_resolver_ctx_t             *resolving;
    ngx_uint_t                      first;      /* address of the first try */
    ngx_uint_t                      tries;      /* addresses tried */

    ngx_echelon_fetch_phase_e       phase;
    ngx_echelon_fetch_parse_e       state;

    u_char                         *buffer;
    u_char                         *line;
    size_t                          line_len;
    size_t                          header_bytes;
    off_t                           rest;       /* of a body or a chunk */
    const char                     *bad;        /* why the response is bad */

    ngx_uint_t                      status;
    off_t                           content_length;
    time_t                          retry_after;

    u_char                         *body;
    size_t                          body_len;
    size_t                          body_size;

    size_t                          error_len;
    u_char                          error[NGX_ECHELON_FETCH_ERROR_LEN];

    unsigned                        head:1;
    unsigned                        http11:1;
    unsigned                        chunked:1;
    unsigned                        encoded:1;  /* another transfer coding */
    unsigned                        close:1;    /* not to be kept alive */
    unsigned                        received:1; /* a response byte came */
    unsigned                        complete:1;
    unsigned                        reused:1;
    unsigned                        retried:1;
    unsigned                        idempotent:1;
    unsigned                        fresh:1;    /* no idle connection */
};


struct ngx_echelon_fetch_s {
    ngx_pool_t                     *pool;
    ngx_log_t                      *log;

    ngx_queue_t                     origins;
    ngx_queue_t                     pending;    /* waiting for a connection */
    ngx_queue_t                     active;     /* on a connection */
    ngx_queue_t                     idle;       /* least recent last */
    ngx_uint_t                      nconns;

    ngx_event_t                     dispatch;   /* posted: start pending */

#if (NGX_SSL)
    ngx_ssl_t                       ssl;
    unsigned                        trusted:1;  /* CA certificates loaded */
#endif
};


static ngx_int_t ngx_echelon_fetch_valid(ngx_echelon_fetch_t *fetch,
    ngx_echelon_fetch_req_t *req);
static ngx_echelon_fetch_origin_t *ngx_echelon_fetch_origin(
    ngx_echelon_fetch_t *fetch, ngx_echelon_endpoint_t *ep);
static ngx_int_t ngx_echelon_fetch_compose(ngx_echelon_fetch_exchange_t *ex,
    ngx_echelon_fetch_req_t *req);
static void ngx_echelon_fetch_dispatch_handler(ngx_event_t *ev);
static ngx_int_t ngx_echelon_fetch_start(ngx_echelon_fetch_exchange_t *ex);
static ngx_echelon_fetch_conn_t *ngx_echelon_fetch_idle_get(
    ngx_echelon_fetch_origin_t *origin);
static void ngx_echelon_fetch_reuse(ngx_echelon_fetch_exchange_t *ex,
    ngx_echelon_fetch_conn_t *conn);
static void ngx_echelon_fetch_connect(ngx_echelon_fetch_exchange_t *ex);
static void ngx_echelon_fetch_resolve(ngx_echelon_fetch_exchange_t *ex);
static void ngx_echelon_fetch_resolved(ngx_resolver_ctx_t *ctx);
static void ngx_echelon_fetch_resolve_done(ngx_echelon_fetch_exchange_t *ex);
static ngx_int_t ngx_echelon_fetch_open(ngx_echelon_fetch_exchange_t *ex,
    ngx_addr_t *addr);
static void ngx_echelon_fetch_connect_handler(ngx_event_t *ev);
static void ngx_echelon_fetch_connected(ngx_echelon_fetch_exchange_t *ex);
#if (NGX_SSL)
static void ngx_echelon_fetch_handshake(ngx_echelon_fetch_exchange_t *ex);
static void ngx_echelon_fetch_handshake_handler(ngx_connection_t *c);
static ngx_int_t ngx_echelon_fetch_verify(ngx_echelon_fetch_exchange_t *ex);
static ngx_int_t ngx_echelon_fetch_tls_init(ngx_echelon_fetch_t *fetch,
    ngx_cycle_t *cycle);
#endif
static void ngx_echelon_fetch_send(ngx_echelon_fetch_exchange_t *ex);
static void ngx_echelon_fetch_write_handler(ngx_event_t *wev);
static void ngx_echelon_fetch_read_handler(ngx_event_t *rev);
static void ngx_echelon_fetch_closed(ngx_echelon_fetch_exchange_t *ex);
static void ngx_echelon_fetch_io_failed(ngx_echelon_fetch_exchange_t *ex,
    ngx_err_t err, const char *what);
static void ngx_echelon_fetch_requeue(ngx_echelon_fetch_exchange_t *ex);
static void ngx_echelon_fetch_timeout_handler(ngx_event_t *ev);
static void ngx_echelon_fetch_fail(ngx_echelon_fetch_exchange_t *ex,
    ngx_err_t err, const char *fmt, ...);
static void ngx_echelon_fetch_note(ngx_echelon_fetch_exchange_t *ex,
    ngx_err_t err, const char *fmt, ...);
static void ngx_echelon_fetch_vnote(ngx_echelon_fetch_exchange_t *ex,
    ngx_err_t err, const char *fmt, va_list args);
static void ngx_echelon_fetch_finish(ngx_echelon_fetch_exchange_t *ex);
static void ngx_echelon_fetch_release(ngx_echelon_fetch_exchange_t *ex);
static void ngx_echelon_fetch_abandon(ngx_echelon_fetch_exchange_t *ex);

static void ngx_echelon_fetch_idle_handler(ngx_event_t *rev);
static void ngx_echelon_fetch_idle_drop(ngx_echelon_fetch_conn_t *conn);
static void ngx_echelon_fetch_close(ngx_echelon_fetch_conn_t *conn);
static void ngx_echelon_fetch_empty_handler(ngx_event_t *ev);
static u_char *ngx_echelon_fetch_log_error(ngx_log_t *log, u_char *buf,
    size_t len);

static void ngx_echelon_fetch_reset(ngx_echelon_fetch_exchange_t *ex);
static ngx_int_t ngx_echelon_fetch_parse(ngx_echelon_fetch_exchange_t *ex,
    u_char *p, u_char *last);
static ngx_int_t ngx_echelon_fetch_line(ngx_echelon_fetch_exchange_t *ex);
static ngx_int_t ngx_echelon_fetch_status_line(
    ngx_echelon_fetch_exchange_t *ex, u_char *p, size_t len);
static ngx_int_t ngx_echelon_fetch_header_line(
    ngx_echelon_fetch_exchange_t *ex, u_char *p, size_t len);
static ngx_int_t ngx_echelon_fetch_headers_done(
    ngx_echelon_fetch_exchange_t *ex);
static ngx_int_t ngx_echelon_fetch_chunk_size(
    ngx_echelon_fetch_exchange_t *ex, u_char *p, size_t len);
static ngx_int_t ngx_echelon_fetch_keep(ngx_echelon_fetch_exchange_t *ex,
    u_char *p, size_t len);
static ngx_uint_t ngx_echelon_fetch_has_token(u_char *p, size_t len,
    const char *token);
static time_t ngx_echelon_fetch_retry_after(u_char *p, size_t len);


static const char  *ngx_echelon_fetch_phases[] = {
    "waiting for a free connection",
    "resolving the provider's name",
    "connecting",
    "in the TLS handshake",
    "sending the request",
    "waiting for the response"
};


ngx_int_t
ngx_echelon_endpoint_parse(ngx_conf_t *cf, ngx_str_t *url,
    ngx_echelon_endpoint_t *ep)
{
    u_char     *p, *last;
    size_t      skip;
    in_port_t   port;
    ngx_url_t   u;

    ngx_memzero(ep, sizeof(ngx_echelon_endpoint_t));

    if (url->len > sizeof("http://") - 1
        && ngx_strncasecmp(url->data, (u_char *) "http://",
                           sizeof("http://") - 1) == 0)
    {
        skip = sizeof("http://") - 1;
        port = 80;

    } else if (url->len > sizeof("https://") - 1
               && ngx_strncasecmp(url->data, (u_char *) "https://",
                                  sizeof("https://") - 1) == 0)
    {
#if (NGX_SSL)
        skip = sizeof("https://") - 1;
        port = 443;
        ep->tls = 1;
#else
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" needs nginx built with TLS support", url);
        return NGX_ERROR;
#endif

    } else {
        goto invalid;
    }

    ep->url.data = ngx_pstrdup(cf->pool, url);
    if (ep->url.data == NULL) {
        return NGX_ERROR;
    }

    ep->url.len = url->len;

    /* host[:port], or [address][:port], with at most a trailing slash */

    p = ep->url.data + skip;
    last = ep->url.data + ep->url.len;

    if (last[-1] == '/') {
        last--;
    }

    if (p == last) {
        goto invalid;
    }

    for ( /* void */ ; p < last; p++) {
        if (*p <= ' ' || *p == '/' || *p == '?' || *p == '#' || *p == '@'
            || *p == '\\' || *p >= 0x7f)
        {
            goto invalid;
        }
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url.data = ep->url.data + skip;
    u.url.len = last - u.url.data;
    u.default_port = port;
    u.no_resolve = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s in \"%V\"",
                           u.err ? u.err : "invalid host", url);
        return NGX_ERROR;
    }

    if (u.family == AF_UNIX || u.host.len == 0) {
        goto invalid;
    }

    ep->authority = u.url;
    ep->host = u.host;
    ep->port = u.port;

    return NGX_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid provider URL \"%V\": expected "
                       "http://host[:port] or https://host[:port], "
                       "without a path", url);

    return NGX_ERROR;
}


/*
 * With a resolver (the http block's "resolver"), a host name is looked up
 * for each new connection, so that a change in DNS needs no reload; an
 * address, or a name with no resolver, is resolved once, now.
 */

ngx_int_t
ngx_echelon_endpoint_resolve(ngx_conf_t *cf, ngx_echelon_endpoint_t *ep,
    ngx_resolver_t *resolver, ngx_msec_t timeout)
{
    ngx_url_t  u;

    if (ep->url.len == 0) {
        return NGX_OK;
    }

    if (resolver && ep->host.data[0] != '['
        && ngx_inet_addr(ep->host.data, ep->host.len) == INADDR_NONE)
    {
        ep->resolver = resolver;
        ep->resolver_timeout = timeout;
        return NGX_OK;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = ep->authority;
    u.default_port = ep->port;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s in \"%V\"",
                           u.err ? u.err : "host not found", &ep->url);
        return NGX_ERROR;
    }

    ep->addrs = u.addrs;
    ep->naddrs = u.naddrs;

    return NGX_OK;
}


/*
 * A kept-alive outbound connection, here and in the SMTP client: parked,
 * it is closed at once on a graceful exit (ngx_close_idle_connections())
 * and its read timer does not hold the worker; woken, it is a busy one.
 */

void
ngx_echelon_conn_park(ngx_connection_t *c, ngx_msec_t timeout)
{
    c->idle = 1;

    c->read->cancelable = 1;
    ngx_add_timer(c->read, timeout);
}


void
ngx_echelon_conn_wake(ngx_connection_t *c)
{
    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    c->read->cancelable = 0;
    c->idle = 0;
}


/* an idle connection holds while the server has neither spoken nor closed */

ngx_uint_t
ngx_echelon_conn_alive(ngx_connection_t *c)
{
    char       buf[1];
    ssize_t    n;
    ngx_err_t  err;

#if (NGX_SSL)
    if (c->ssl && SSL_pending(c->ssl->connection)) {
        return 0;
    }
#endif

    n = recv(c->fd, buf, 1, MSG_PEEK);
    err = ngx_socket_errno;

    if (n == -1 && err == NGX_EAGAIN) {
        c->read->ready = 0;
        return 1;
    }

    return 0;
}


ngx_echelon_fetch_t *
ngx_echelon_fetch_create(ngx_cycle_t *cycle)
{
    ngx_pool_t           *pool;
    ngx_echelon_fetch_t  *fetch;

    pool = ngx_create_pool(NGX_ECHELON_FETCH_POOL, cycle->log);
    if (pool == NULL) {
        return NULL;
    }

    fetch = ngx_pcalloc(pool, sizeof(ngx_echelon_fetch_t));
    if (fetch == NULL) {
        ngx_destroy_pool(pool);
        return NULL;
    }

    fetch->pool = pool;
    fetch->log = cycle->log;

    ngx_queue_init(&fetch->origins);
    ngx_queue_init(&fetch->pending);
    ngx_queue_init(&fetch->active);
    ngx_queue_init(&fetch->idle);

    fetch->dispatch.handler = ngx_echelon_fetch_dispatch_handler;
    fetch->dispatch.data = fetch;
    fetch->dispatch.log = cycle->log;

#if (NGX_SSL)
    if (ngx_echelon_fetch_tls_init(fetch, cycle) != NGX_OK) {
        ngx_destroy_pool(pool);
        return NULL;
    }
#endif

    return fetch;
}


/* at worker exit: no handler is called, every connection is closed */

void
ngx_echelon_fetch_destroy(ngx_echelon_fetch_t *fetch)
{
    ngx_queue_t               *q;
    ngx_echelon_fetch_conn_t  *conn;

    while (!ngx_queue_empty(&fetch->pending)) {
        q = ngx_queue_head(&fetch->pending);
        ngx_echelon_fetch_abandon(
            ngx_queue_data(q, ngx_echelon_fetch_exchange_t, queue));
    }

    while (!ngx_queue_empty(&fetch->active)) {
        q = ngx_queue_head(&fetch->active);
        ngx_echelon_fetch_abandon(
            ngx_queue_data(q, ngx_echelon_fetch_exchange_t, queue));
    }

    while (!ngx_queue_empty(&fetch->idle)) {
        q = ngx_queue_head(&fetch->idle);
        conn = ngx_queue_data(q, ngx_echelon_fetch_conn_t, lru);
        ngx_echelon_fetch_idle_drop(conn);
    }

    if (fetch->dispatch.posted) {
        ngx_delete_posted_event(&fetch->dispatch);
    }

    ngx_destroy_pool(fetch->pool);
}


ngx_int_t
ngx_echelon_fetch(ngx_echelon_fetch_t *fetch, ngx_echelon_fetch_req_t *req,
    ngx_echelon_fetch_done_pt done, void *data)
{
    ngx_pool_t                    *pool;
    ngx_echelon_fetch_origin_t    *origin;
    ngx_echelon_fetch_exchange_t  *ex;

    if (ngx_echelon_fetch_valid(fetch, req) != NGX_OK) {
        return NGX_ERROR;
    }

    origin = ngx_echelon_fetch_origin(fetch, req->endpoint);
    if (origin == NULL) {
        return NGX_ERROR;
    }

    pool = ngx_create_pool(NGX_ECHELON_FETCH_POOL, fetch->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    ex = ngx_pcalloc(pool, sizeof(ngx_echelon_fetch_exchange_t));
    if (ex == NULL) {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    ex->fetch = fetch;
    ex->origin = origin;
    ex->pool = pool;
    ex->done = done;
    ex->data = data;
    ex->timeout = req->timeout ? req->timeout : NGX_ECHELON_FETCH_TIMEOUT;
    ex->idempotent = req->idempotent;
    ex->start = ngx_current_msec;

    if (ngx_echelon_fetch_compose(ex, req) != NGX_OK) {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    ngx_echelon_fetch_reset(ex);

    ex->timer.handler = ngx_echelon_fetch_timeout_handler;
    ex->timer.data = ex;
    ex->timer.log = fetch->log;

    /* not cancelable: a graceful exit waits for the exchange to end */

    ngx_add_timer(&ex->timer, ex->timeout);

    ngx_queue_insert_tail(&fetch->pending, &ex->queue);

    ngx_post_event(&fetch->dispatch, &ngx_posted_events);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, fetch->log, 0,
                   "echelon fetch: %V %V queued, %uz bytes",
                   &ex->method, &origin->endpoint->url, ex->request.len);

    return NGX_OK;
}


/* a request the caller built wrong is refused at once, with an alert */

static ngx_int_t
ngx_echelon_fetch_valid(ngx_echelon_fetch_t *fetch,
    ngx_echelon_fetch_req_t *req)
{
    u_char      *p, *last;
    const char  *fault;

    fault = NULL;

    if (req->endpoint == NULL
        || (req->endpoint->naddrs == 0 && req->endpoint->resolver == NULL))
    {
        fault = "no endpoint";
        goto invalid;
    }

    for (p = req->method.data, last = p + req->method.len; p < last; p++) {
        if (*p < 'A' || *p > 'Z') {
            fault = "invalid method";
            goto invalid;
        }
    }

    if (req->path.len == 0 || req->path.data[0] != '/') {
        fault = "the path does not start with \"/\"";
        goto invalid;
    }

    for (p = req->path.data, last = p + req->path.len; p < last; p++) {
        if (*p <= ' ' || *p == 0x7f) {
            fault = "a space or a control character in the path";
            goto invalid;
        }
    }

    if (req->headers.len == 0) {
        return NGX_OK;
    }

    p = req->headers.data;
    last = p + req->headers.len;

    if (req->headers.len < 2 || last[-2] != CR || last[-1] != LF
        || p[0] == CR || p[0] == LF
        || ngx_strlcasestrn(p, last, (u_char *) CRLF CRLF, 4 - 1) != NULL)
    {
        fault = "the headers are not lines that end with CRLF";
        goto invalid;
    }

    return NGX_OK;

invalid:

    ngx_log_error(NGX_LOG_ALERT, fetch->log, 0,
                  "echelon fetch: request refused: %s", fault);

    return NGX_ERROR;
}


static ngx_echelon_fetch_origin_t *
ngx_echelon_fetch_origin(ngx_echelon_fetch_t *fetch,
    ngx_echelon_endpoint_t *ep)
{
    u_char                      *p;
    size_t                       len;
    ngx_str_t                    name;
    ngx_queue_t                 *q;
    ngx_echelon_fetch_origin_t  *origin;

    for (q = ngx_queue_head(&fetch->origins);
         q != ngx_queue_sentinel(&fetch->origins);
         q = ngx_queue_next(q))
    {
        origin = ngx_queue_data(q, ngx_echelon_fetch_origin_t, queue);

        if (origin->endpoint == ep) {
            return origin;
        }
    }

    origin = ngx_pcalloc(fetch->pool, sizeof(ngx_echelon_fetch_origin_t));
    if (origin == NULL) {
        return NULL;
    }

    origin->endpoint = ep;
    ngx_queue_init(&origin->idle);

    /* Host carries the port only when it is not the scheme's own */

    len = ep->host.len;

    if (ep->port != (ep->tls ? 443 : 80)) {
        len += sizeof(":65535") - 1;
    }

    origin->authority.data = ngx_pnalloc(fetch->pool, len);
    if (origin->authority.data == NULL) {
        return NULL;
    }

    p = ngx_cpymem(origin->authority.data, ep->host.data, ep->host.len);

    if (ep->port != (ep->tls ? 443 : 80)) {
        p = ngx_sprintf(p, ":%d", (int) ep->port);
    }

    origin->authority.len = p - origin->authority.data;

    /* an IPv6 address loses its brackets for the certificate check */

    name = ep->host;

    if (name.len > 2 && name.data[0] == '[') {
        name.data++;
        name.len -= 2;
        origin->ip = 1;

    } else if (ngx_inet_addr(name.data, name.len) != INADDR_NONE) {
        origin->ip = 1;
    }

    origin->name = ngx_pnalloc(fetch->pool, name.len + 1);
    if (origin->name == NULL) {
        return NULL;
    }

    (void) ngx_cpystrn(origin->name, name.data, name.len + 1);

    ngx_queue_insert_tail(&fetch->origins, &origin->queue);

    return origin;
}


static ngx_int_t
ngx_echelon_fetch_compose(ngx_echelon_fetch_exchange_t *ex,
    ngx_echelon_fetch_req_t *req)
{
    u_char      *p;
    size_t       len;
    ngx_str_t    method;
    ngx_uint_t   length;

    method = req->method;

    if (method.len == 0) {
        ngx_str_set(&method, "GET");
    }

    ex->head = (method.len == 4 && ngx_strncmp(method.data, "HEAD", 4) == 0);

    length = req->body.len
             || (method.len == 4 && ngx_strncmp(method.data, "POST", 4) == 0)
             || (method.len == 3 && ngx_strncmp(method.data, "PUT", 3) == 0)
             || (method.len == 5 && ngx_strncmp(method.data, "PATCH", 5) == 0);

    len = method.len + 1 + req->path.len + sizeof(" HTTP/1.1" CRLF) - 1
          + sizeof("Host: " CRLF) - 1 + ex->origin->authority.len
          + req->headers.len
          + sizeof("Connection: keep-alive" CRLF CRLF) - 1
          + req->body.len;

    if (length) {
        len += sizeof("Content-Length: " CRLF) - 1 + NGX_SIZE_T_LEN;
    }

    p = ngx_pnalloc(ex->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ex->request.data = p;

    p = ngx_sprintf(p, "%V %V HTTP/1.1" CRLF "Host: %V" CRLF, &method,
                    &req->path, &ex->origin->authority);

    p = ngx_cpymem(p, req->headers.data, req->headers.len);

    if (length) {
        p = ngx_sprintf(p, "Content-Length: %uz" CRLF, req->body.len);
    }

    p = ngx_cpymem(p, "Connection: keep-alive" CRLF CRLF,
                   sizeof("Connection: keep-alive" CRLF CRLF) - 1);

    p = ngx_cpymem(p, req->body.data, req->body.len);

    ex->request.len = p - ex->request.data;

    /* the method stays for the log lines */

    ex->method.len = method.len;
    ex->method.data = ex->request.data;

    return NGX_OK;
}


/* gives connections to pending exchanges, oldest first, while it can */

static void
ngx_echelon_fetch_dispatch_handler(ngx_event_t *ev)
{
    ngx_queue_t                   *q;
    ngx_echelon_fetch_t           *fetch;
    ngx_echelon_fetch_exchange_t  *ex;

    fetch = ev->data;

    while (!ngx_queue_empty(&fetch->pending)) {
        q = ngx_queue_head(&fetch->pending);
        ex = ngx_queue_data(q, ngx_echelon_fetch_exchange_t, queue);

        if (ngx_echelon_fetch_start(ex) == NGX_BUSY) {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, fetch->log, 0,
                           "echelon fetch: all %ui connections busy",
                           fetch->nconns);
            return;
        }
    }
}


static ngx_int_t
ngx_echelon_fetch_start(ngx_echelon_fetch_exchange_t *ex)
{
    ngx_queue_t               *q;
    ngx_echelon_fetch_t       *fetch;
    ngx_echelon_fetch_conn_t  *conn;

    fetch = ex->fetch;

    conn = ex->fresh ? NULL : ngx_echelon_fetch_idle_get(ex->origin);

    if (conn == NULL && fetch->nconns >= NGX_ECHELON_FETCH_CONNS) {

        if (ngx_queue_empty(&fetch->idle)) {
            return NGX_BUSY;
        }

        /* make room: the connection idle the longest goes */

        q = ngx_queue_last(&fetch->idle);
        ngx_echelon_fetch_idle_drop(
            ngx_queue_data(q, ngx_echelon_fetch_conn_t, lru));
    }

    ngx_queue_remove(&ex->queue);
    ngx_queue_insert_tail(&fetch->active, &ex->queue);

    if (ex->buffer == NULL) {
        ex->buffer = ngx_palloc(ex->pool, NGX_ECHELON_FETCH_BUFFER);
        ex->line = ngx_pnalloc(ex->pool, NGX_ECHELON_FETCH_LINE);

        if (ex->buffer == NULL || ex->line == NULL) {
            if (conn) {
                ngx_echelon_fetch_close(conn);
            }

            ngx_echelon_fetch_fail(ex, 0, "not enough memory");
            return NGX_OK;
        }
    }

    if (conn) {
        ngx_echelon_fetch_reuse(ex, conn);

    } else {
        ngx_echelon_fetch_connect(ex);
    }

    return NGX_OK;
}


/* the most recently used idle connection of the origin that still holds */

static ngx_echelon_fetch_conn_t *
ngx_echelon_fetch_idle_get(ngx_echelon_fetch_origin_t *origin)
{
    ngx_queue_t               *q;
    ngx_connection_t          *c;
    ngx_echelon_fetch_conn_t  *conn;

    while (!ngx_queue_empty(&origin->idle)) {
        q = ngx_queue_head(&origin->idle);
        conn = ngx_queue_data(q, ngx_echelon_fetch_conn_t, queue);
        c = conn->connection;

        if (!ngx_echelon_conn_alive(c)) {
            ngx_echelon_fetch_idle_drop(conn);
            continue;
        }

        ngx_queue_remove(&conn->queue);
        ngx_queue_remove(&conn->lru);
        origin->nidle--;

        ngx_echelon_conn_wake(c);

        return conn;
    }

    return NULL;
}


static void
ngx_echelon_fetch_reuse(ngx_echelon_fetch_exchange_t *ex,
    ngx_echelon_fetch_conn_t *conn)
{
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, &conn->log, 0,
                   "echelon fetch: reusing connection, request #%ui to %V",
                   conn->requests + 1, conn->peer);

    conn->exchange = ex;
    conn->requests++;

    ex->conn = conn;
    ex->reused = 1;

    ngx_echelon_fetch_send(ex);
}


/* a new connection, to the endpoint's addresses in turn */

static void
ngx_echelon_fetch_connect(ngx_echelon_fetch_exchange_t *ex)
{
    ngx_int_t                rc;
    ngx_echelon_endpoint_t  *ep;

    ep = ex->origin->endpoint;

    if (ex->addrs == NULL) {

        if (ep->resolver) {
            ngx_echelon_fetch_resolve(ex);
            return;
        }

        ex->addrs = ep->addrs;
        ex->naddrs = ep->naddrs;
    }

    ex->phase = NGX_ECHELON_FETCH_CONNECTING;

    for ( ;; ) {

        if (ex->tries == 0) {
            ex->first = ex->origin->next++;
        }

        rc = ngx_echelon_fetch_open(ex,
                                    &ex->addrs[(ex->first + ex->tries++)
                                               % ex->naddrs]);

        if (rc == NGX_OK) {
            return;
        }

        if (rc == NGX_DECLINED && ex->tries < ex->naddrs) {
            continue;
        }

        ngx_echelon_fetch_finish(ex);
        return;
    }
}


/*
 * The name is looked up for this exchange; nginx's resolver keeps answers
 * for their TTL (or the "valid" of the resolver directive).  The handler
 * may run at once, from ngx_resolve_name(), when the answer is cached.
 */

static void
ngx_echelon_fetch_resolve(ngx_echelon_fetch_exchange_t *ex)
{
    ngx_resolver_ctx_t      *ctx;
    ngx_echelon_endpoint_t  *ep;

    ep = ex->origin->endpoint;

    ex->phase = NGX_ECHELON_FETCH_RESOLVING;

    ctx = ngx_resolve_start(ep->resolver, NULL);

    if (ctx == NULL) {
        ngx_echelon_fetch_fail(ex, 0, "not enough memory");
        return;
    }

    if (ctx == NGX_NO_RESOLVER) {
        ngx_echelon_fetch_fail(ex, 0, "no resolver to look up \"%V\"",
                               &ep->host);
        return;
    }

    ctx->name = ep->host;
    ctx->handler = ngx_echelon_fetch_resolved;
    ctx->data = ex;
    ctx->timeout = ep->resolver_timeout;

    ex->resolving = ctx;

    if (ngx_resolve_name(ctx) != NGX_OK) {
        ex->resolving = NULL;
        ngx_echelon_fetch_fail(ex, 0, "could not start to resolve \"%V\"",
                               &ep->host);
    }
}


static void
ngx_echelon_fetch_resolved(ngx_resolver_ctx_t *ctx)
{
    u_char                        *p;
    size_t                         len;
    ngx_uint_t                     i;
    ngx_addr_t                    *addr;
    struct sockaddr               *sa;
    ngx_echelon_endpoint_t        *ep;
    ngx_echelon_fetch_exchange_t  *ex;

    ex = ctx->data;
    ep = ex->origin->endpoint;

    if (ctx->state) {
        ngx_echelon_fetch_fail(ex, 0, "could not resolve \"%V\" (%i: %s)",
                               &ep->host, ctx->state,
                               ngx_resolver_strerror(ctx->state));
        return;
    }

    ex->addrs = ngx_pcalloc(ex->pool, ctx->naddrs * sizeof(ngx_addr_t));
    if (ex->addrs == NULL) {
        goto nomem;
    }

    for (i = 0; i < ctx->naddrs; i++) {
        addr = &ex->addrs[i];

        sa = ngx_palloc(ex->pool, ctx->addrs[i].socklen);
        p = ngx_pnalloc(ex->pool, NGX_SOCKADDR_STRLEN);

        if (sa == NULL || p == NULL) {
            goto nomem;
        }

        ngx_memcpy(sa, ctx->addrs[i].sockaddr, ctx->addrs[i].socklen);
        ngx_inet_set_port(sa, ep->port);

        len = ngx_sock_ntop(sa, ctx->addrs[i].socklen, p,
                            NGX_SOCKADDR_STRLEN, 1);

        addr->sockaddr = sa;
        addr->socklen = ctx->addrs[i].socklen;
        addr->name.data = p;
        addr->name.len = len;
    }

    ex->naddrs = ctx->naddrs;

    ngx_echelon_fetch_resolve_done(ex);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ex->fetch->log, 0,
                   "echelon fetch: \"%V\" has %ui addresses",
                   &ep->host, ex->naddrs);

    ngx_echelon_fetch_connect(ex);

    return;

nomem:

    ex->addrs = NULL;

    ngx_echelon_fetch_fail(ex, 0, "not enough memory");
}


static void
ngx_echelon_fetch_resolve_done(ngx_echelon_fetch_exchange_t *ex)
{
    if (ex->resolving) {
        ngx_resolve_name_done(ex->resolving);
        ex->resolving = NULL;
    }
}


/*
 * NGX_OK: connecting or connected, and the exchange may already be over;
 * NGX_DECLINED: this address refused, the reason is noted;
 * NGX_ERROR: no connection can be made at all
 */

static ngx_int_t
ngx_echelon_fetch_open(ngx_echelon_fetch_exchange_t *ex, ngx_addr_t *addr)
{
    ngx_int_t                  rc;
    ngx_err_t                  err;
    ngx_pool_t                *pool;
    ngx_connection_t          *c;
    ngx_echelon_fetch_t       *fetch;
    ngx_peer_connection_t      pc;
    ngx_echelon_fetch_conn_t  *conn;

    fetch = ex->fetch;

    pool = ngx_create_pool(NGX_ECHELON_FETCH_POOL, fetch->log);
    if (pool == NULL) {
        goto nomem;
    }

    conn = ngx_pcalloc(pool, sizeof(ngx_echelon_fetch_conn_t));
    if (conn == NULL) {
        ngx_destroy_pool(pool);
        goto nomem;
    }

    conn->fetch = fetch;
    conn->origin = ex->origin;
    conn->peer = &addr->name;

    conn->log = *fetch->log;
    conn->log.handler = ngx_echelon_fetch_log_error;
    conn->log.data = conn;
    conn->log.action = "connecting to provider";

    ngx_memzero(&pc, sizeof(ngx_peer_connection_t));

    pc.sockaddr = addr->sockaddr;
    pc.socklen = addr->socklen;
    pc.name = &addr->name;
    pc.get = ngx_event_get_peer;
    pc.log = &conn->log;
    pc.log_error = NGX_ERROR_INFO;

    ngx_set_socket_errno(0);

    rc = ngx_event_connect_peer(&pc);

    err = ngx_socket_errno;

    if (rc != NGX_OK && rc != NGX_AGAIN) {
        ngx_destroy_pool(pool);

        ngx_echelon_fetch_note(ex, err, "connect() to %V failed", &addr->name);

        return (rc == NGX_DECLINED) ? NGX_DECLINED : NGX_ERROR;
    }

    c = pc.connection;
    c->pool = pool;
    c->data = conn;

    conn->connection = c;
    conn->exchange = ex;
    conn->requests = 1;
    conn->log.connection = c->number;

    fetch->nconns++;

    ex->conn = conn;
    ex->reused = 0;

    c->read->handler = ngx_echelon_fetch_connect_handler;
    c->write->handler = ngx_echelon_fetch_connect_handler;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "echelon fetch: connect to %V, %ui open",
                   &addr->name, fetch->nconns);

    if (rc == NGX_OK) {
        ngx_echelon_fetch_connected(ex);
    }

    return NGX_OK;

nomem:

    ngx_echelon_fetch_note(ex, 0, "not enough memory");

    return NGX_ERROR;
}


static void
ngx_echelon_fetch_connect_handler(ngx_event_t *ev)
{
    int                            err;
    socklen_t                      len;
    ngx_connection_t              *c;
    ngx_echelon_fetch_conn_t      *conn;
    ngx_echelon_fetch_exchange_t  *ex;

    c = ev->data;
    conn = c->data;
    ex = conn->exchange;

    if (c->close) {
        ngx_echelon_fetch_fail(ex, 0, "the worker is shutting down");
        return;
    }

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    if (err == 0) {
        ngx_echelon_fetch_connected(ex);
        return;
    }

    ngx_echelon_fetch_note(ex, err, "connect() to %V failed", conn->peer);

    if (ex->tries < ex->naddrs) {
        ngx_echelon_fetch_requeue(ex);
        return;
    }

    ngx_echelon_fetch_finish(ex);
}


static void
ngx_echelon_fetch_connected(ngx_echelon_fetch_exchange_t *ex)
{
    ngx_connection_t  *c;

    c = ex->conn->connection;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "echelon fetch: connected to %V", ex->conn->peer);

    if (ngx_tcp_nodelay(c) != NGX_OK) {
        ngx_echelon_fetch_fail(ex, 0, "setsockopt(TCP_NODELAY) failed");
        return;
    }

#if (NGX_SSL)

    if (ex->origin->endpoint->tls) {
        ngx_echelon_fetch_handshake(ex);
        return;
    }

#endif

    ngx_echelon_fetch_send(ex);
}


#if (NGX_SSL)

static void
ngx_echelon_fetch_handshake(ngx_echelon_fetch_exchange_t *ex)
{
    ngx_int_t                    rc;
    ngx_connection_t            *c;
    ngx_echelon_fetch_t         *fetch;
    ngx_echelon_fetch_origin_t  *origin;

    fetch = ex->fetch;
    origin = ex->origin;
    c = ex->conn->connection;

    if (!fetch->trusted) {
        ngx_echelon_fetch_fail(ex, 0, "TLS unavailable: no trusted CA "
                               "certificates could be loaded");
        return;
    }

    if (ngx_ssl_create_connection(&fetch->ssl, c, NGX_SSL_CLIENT) != NGX_OK) {
        ngx_echelon_fetch_fail(ex, 0, "cannot create a TLS connection");
        return;
    }

    /* RFC 6066: no server name is sent for an address */

    if (!origin->ip
        && SSL_set_tlsext_host_name(c->ssl->connection,
                                    (char *) origin->name)
           == 0)
    {
        ngx_echelon_fetch_fail(ex, 0, "SSL_set_tlsext_host_name() failed");
        return;
    }

    ex->phase = NGX_ECHELON_FETCH_HANDSHAKING;
    c->log->action = "SSL handshaking to provider";

    rc = ngx_ssl_handshake(c);

    if (rc == NGX_AGAIN) {
        c->ssl->handler = ngx_echelon_fetch_handshake_handler;
        return;
    }

    ngx_echelon_fetch_handshake_handler(c);
}


static void
ngx_echelon_fetch_handshake_handler(ngx_connection_t *c)
{
    ngx_echelon_fetch_conn_t      *conn;
    ngx_echelon_fetch_exchange_t  *ex;

    conn = c->data;
    ex = conn->exchange;

    if (!c->ssl->handshaked) {
        ngx_echelon_fetch_fail(ex, 0, "TLS handshake failed");
        return;
    }

    if (ngx_echelon_fetch_verify(ex) != NGX_OK) {
        return;
    }

    ngx_echelon_fetch_send(ex);
}


static ngx_int_t
ngx_echelon_fetch_verify(ngx_echelon_fetch_exchange_t *ex)
{
    long                         rc;
    X509                        *cert;
    ngx_int_t                    match;
    ngx_connection_t            *c;
    ngx_echelon_fetch_origin_t  *origin;

    c = ex->conn->connection;
    origin = ex->origin;

    rc = SSL_get_verify_result(c->ssl->connection);

    if (rc != X509_V_OK) {
        ngx_echelon_fetch_fail(ex, 0, "TLS certificate verify failed: %s",
                               X509_verify_cert_error_string(rc));
        return NGX_ERROR;
    }

    if (origin->ip) {
        cert = SSL_get_peer_certificate(c->ssl->connection);

        match = (cert != NULL
                 && X509_check_ip_asc(cert, (char *) origin->name, 0) == 1);

        if (cert) {
            X509_free(cert);
        }

    } else {
        match = (ngx_ssl_check_host(c, &origin->endpoint->host) == NGX_OK);
    }

    if (!match) {
        ngx_echelon_fetch_fail(ex, 0, "TLS certificate does not match \"%s\"",
                               origin->name);
        return NGX_ERROR;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "echelon fetch: %s with %s verified",
                   SSL_get_version(c->ssl->connection), origin->name);

    return NGX_OK;
}

#endif


static void
ngx_echelon_fetch_send(ngx_echelon_fetch_exchange_t *ex)
{
    ngx_connection_t  *c;

    c = ex->conn->connection;

    ex->phase = NGX_ECHELON_FETCH_SENDING;
    c->log->action = "sending request to provider";

    /* a provider may answer early, before the whole request is sent */

    c->read->handler = ngx_echelon_fetch_read_handler;
    c->write->handler = ngx_echelon_fetch_write_handler;

    ngx_echelon_fetch_write_handler(c->write);
}


static void
ngx_echelon_fetch_write_handler(ngx_event_t *wev)
{
    ssize_t                        n;
    ngx_connection_t              *c;
    ngx_echelon_fetch_conn_t      *conn;
    ngx_echelon_fetch_exchange_t  *ex;

    c = wev->data;
    conn = c->data;
    ex = conn->exchange;

    while (ex->sent < ex->request.len) {

        ngx_set_socket_errno(0);

        n = c->send(c, ex->request.data + ex->sent,
                    ex->request.len - ex->sent);

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(wev, 0) != NGX_OK) {
                ngx_echelon_fetch_fail(ex, 0, "cannot wait to send");
            }

            return;
        }

        if (n <= 0) {
            ngx_echelon_fetch_io_failed(ex, ngx_socket_errno,
                                        "sending the request failed");
            return;
        }

        ex->sent += n;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "echelon fetch: request sent, %uz bytes", ex->sent);

    ex->phase = NGX_ECHELON_FETCH_READING;
    c->log->action = "reading response from provider";

    wev->handler = ngx_echelon_fetch_empty_handler;

    if (ngx_handle_write_event(wev, 0) != NGX_OK) {
        ngx_echelon_fetch_fail(ex, 0, "cannot stop waiting to send");
    }
}


static void
ngx_echelon_fetch_read_handler(ngx_event_t *rev)
{
    ssize_t                        n;
    ngx_int_t                      rc;
    ngx_connection_t              *c;
    ngx_echelon_fetch_conn_t      *conn;
    ngx_echelon_fetch_exchange_t  *ex;

    c = rev->data;
    conn = c->data;
    ex = conn->exchange;

    if (c->close) {
        ngx_echelon_fetch_fail(ex, 0, "the worker is shutting down");
        return;
    }

    for ( ;; ) {

        ngx_set_socket_errno(0);

        n = c->recv(c, ex->buffer, NGX_ECHELON_FETCH_BUFFER);

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(rev, 0) != NGX_OK) {
                ngx_echelon_fetch_fail(ex, 0, "cannot wait to read");
            }

            return;
        }

        if (n == NGX_ERROR) {
            ngx_echelon_fetch_io_failed(ex, ngx_socket_errno,
                                        "reading the response failed");
            return;
        }

        if (n == 0) {
            ngx_echelon_fetch_closed(ex);
            return;
        }

        ex->received = 1;

        rc = ngx_echelon_fetch_parse(ex, ex->buffer, ex->buffer + n);

        if (rc == NGX_AGAIN) {
            continue;
        }

        if (rc == NGX_ERROR) {
            ngx_echelon_fetch_fail(ex, 0, "bad response from provider: %s",
                                   ex->bad);
            return;
        }

        ex->complete = 1;
        ngx_echelon_fetch_finish(ex);
        return;
    }
}


/* the provider closed the connection */

static void
ngx_echelon_fetch_closed(ngx_echelon_fetch_exchange_t *ex)
{
    if (ex->state == NGX_ECHELON_FETCH_BODY_TO_CLOSE) {
        ex->complete = 1;
        ngx_echelon_fetch_finish(ex);
        return;
    }

    if (!ex->received) {
        ngx_echelon_fetch_io_failed(ex, 0, "provider closed the connection "
                                    "without a response");
        return;
    }

    ngx_echelon_fetch_fail(ex, 0, "provider closed the connection before "
                           "the response was complete");
}


/*
 * A kept-alive connection the provider closed in the meantime fails before
 * any response byte.  Most often the provider closed it idle and never
 * read the request, but it may have read it all and acted: so the request
 * is sent once more on a new connection only when it was not all written
 * (no server acts on half a request) or when it is idempotent (its
 * idempotency key makes a second copy harmless).  The only automatic retry.
 */

static void
ngx_echelon_fetch_io_failed(ngx_echelon_fetch_exchange_t *ex, ngx_err_t err,
    const char *what)
{
    if (ex->reused && !ex->received && !ex->retried
        && (ex->idempotent || ex->sent < ex->request.len))
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ex->conn->connection->log, err,
                       "echelon fetch: kept-alive connection lost (%s), "
                       "trying a new one", what);

        ex->retried = 1;
        ex->fresh = 1;
        ex->tries = 0;

        ngx_echelon_fetch_requeue(ex);
        return;
    }

    ngx_echelon_fetch_fail(ex, err, "%s", what);
}


/* closes the connection and waits, first in line, for another one */

static void
ngx_echelon_fetch_requeue(ngx_echelon_fetch_exchange_t *ex)
{
    ngx_echelon_fetch_t  *fetch;

    fetch = ex->fetch;

    ex->conn->connection->error = 1;
    ngx_echelon_fetch_close(ex->conn);
    ex->conn = NULL;

    ngx_echelon_fetch_reset(ex);
    ex->fresh = 1;

    ngx_queue_remove(&ex->queue);
    ngx_queue_insert_head(&fetch->pending, &ex->queue);

    ngx_post_event(&fetch->dispatch, &ngx_posted_events);
}


static void
ngx_echelon_fetch_timeout_handler(ngx_event_t *ev)
{
    const char                    *phase;
    ngx_echelon_fetch_exchange_t  *ex;

    ex = ev->data;

    if (ex->conn) {
        ex->conn->connection->timedout = 1;
    }

    phase = (ex->phase == NGX_ECHELON_FETCH_READING && ex->received)
            ? "reading the response" : ngx_echelon_fetch_phases[ex->phase];

    ngx_echelon_fetch_fail(ex, 0, "timed out after %M ms %s", ex->timeout,
                           phase);
}


static void
ngx_echelon_fetch_fail(ngx_echelon_fetch_exchange_t *ex, ngx_err_t err,
    const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    ngx_echelon_fetch_vnote(ex, err, fmt, args);
    va_end(args);

    ex->complete = 0;

    ngx_echelon_fetch_finish(ex);
}


static void
ngx_echelon_fetch_note(ngx_echelon_fetch_exchange_t *ex, ngx_err_t err,
    const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    ngx_echelon_fetch_vnote(ex, err, fmt, args);
    va_end(args);
}


/* the reason an exchange has no response, with the system's error if any */

static void
ngx_echelon_fetch_vnote(ngx_echelon_fetch_exchange_t *ex, ngx_err_t err,
    const char *fmt, va_list args)
{
    u_char  *p, *last;

    last = ex->error + NGX_ECHELON_FETCH_ERROR_LEN;

    p = ngx_vslprintf(ex->error, last, fmt, args);

    if (err) {
        p = ngx_slprintf(p, last, " (%d: ", err);
        p = ngx_strerror(err, p, last - p);

        if (p < last) {
            *p++ = ')';
        }
    }

    ex->error_len = p - ex->error;
}


/* reports the exchange to its caller, exactly once, and frees it */

static void
ngx_echelon_fetch_finish(ngx_echelon_fetch_exchange_t *ex)
{
    ngx_echelon_fetch_t      *fetch;
    ngx_echelon_fetch_res_t   res;

    fetch = ex->fetch;

    if (ex->timer.timer_set) {
        ngx_del_timer(&ex->timer);
    }

    ngx_echelon_fetch_resolve_done(ex);

    ngx_queue_remove(&ex->queue);

    if (ex->conn) {
        ngx_echelon_fetch_release(ex);
    }

    ngx_memzero(&res, sizeof(ngx_echelon_fetch_res_t));

    if (ex->complete) {
        res.status = ex->status;
        res.body.data = ex->body;
        res.body.len = ex->body_len;
        res.retry_after = ex->retry_after;

        ngx_log_debug5(NGX_LOG_DEBUG_HTTP, fetch->log, 0,
                       "echelon fetch: %V %V: %ui, %uz bytes kept, %M ms",
                       &ex->method, &ex->origin->endpoint->url, res.status,
                       res.body.len, ngx_current_msec - ex->start);

    } else {
        res.retry_after = -1;
        res.error.data = ex->error;
        res.error.len = ex->error_len;

        ngx_log_error(NGX_LOG_WARN, fetch->log, 0,
                      "echelon fetch: %V %V failed: %V",
                      &ex->method, &ex->origin->endpoint->url, &res.error);
    }

    ex->done(ex->data, &res);

    ngx_destroy_pool(ex->pool);

    if (!ngx_queue_empty(&fetch->pending)) {
        ngx_post_event(&fetch->dispatch, &ngx_posted_events);
    }
}


/* keeps the connection idle when it can serve another request */

static void
ngx_echelon_fetch_release(ngx_echelon_fetch_exchange_t *ex)
{
    ngx_connection_t            *c;
    ngx_echelon_fetch_t         *fetch;
    ngx_echelon_fetch_conn_t    *conn;
    ngx_echelon_fetch_origin_t  *origin;

    fetch = ex->fetch;
    origin = ex->origin;
    conn = ex->conn;
    c = conn->connection;

    ex->conn = NULL;
    conn->exchange = NULL;

    if (!ex->complete
        || ex->close
        || ex->phase != NGX_ECHELON_FETCH_READING
        || origin->nidle >= NGX_ECHELON_FETCH_IDLE
        || ngx_exiting
        || ngx_terminate
        || c->close
#if (NGX_SSL)
        || (c->ssl && SSL_pending(c->ssl->connection))
#endif
       )
    {
        ngx_echelon_fetch_close(conn);
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "echelon fetch: keeping connection to %V, %ui idle",
                   conn->peer, origin->nidle + 1);

    c->log->action = "keeping connection to provider alive";

    c->read->handler = ngx_echelon_fetch_idle_handler;
    c->write->handler = ngx_echelon_fetch_empty_handler;

    ngx_echelon_conn_park(c, NGX_ECHELON_FETCH_IDLE_TIMEOUT);

    ngx_queue_insert_head(&origin->idle, &conn->queue);
    ngx_queue_insert_head(&fetch->idle, &conn->lru);
    origin->nidle++;

    if (c->read->ready) {
        ngx_echelon_fetch_idle_handler(c->read);
    }
}


/* at destroy: the exchange ends silently */

static void
ngx_echelon_fetch_abandon(ngx_echelon_fetch_exchange_t *ex)
{
    if (ex->timer.timer_set) {
        ngx_del_timer(&ex->timer);
    }

    ngx_echelon_fetch_resolve_done(ex);

    ngx_queue_remove(&ex->queue);

    if (ex->conn) {
        ngx_echelon_fetch_close(ex->conn);
    }

    ngx_destroy_pool(ex->pool);
}


/* an idle connection that times out, closes, or says anything, goes */

static void
ngx_echelon_fetch_idle_handler(ngx_event_t *rev)
{
    ngx_connection_t          *c;
    ngx_echelon_fetch_conn_t  *conn;

    c = rev->data;
    conn = c->data;

    if (!rev->timedout && !c->close && ngx_echelon_conn_alive(c)) {

        if (ngx_handle_read_event(rev, 0) == NGX_OK) {
            return;
        }
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "echelon fetch: idle connection to %V dropped%s%s",
                   conn->peer, rev->timedout ? ", timed out" : "",
                   c->close ? ", closing" : "");

    ngx_echelon_fetch_idle_drop(conn);
}


static void
ngx_echelon_fetch_idle_drop(ngx_echelon_fetch_conn_t *conn)
{
    ngx_queue_remove(&conn->queue);
    ngx_queue_remove(&conn->lru);
    conn->origin->nidle--;

    ngx_echelon_fetch_close(conn);
}


static void
ngx_echelon_fetch_close(ngx_echelon_fetch_conn_t *conn)
{
    ngx_pool_t        *pool;
    ngx_connection_t  *c;

    c = conn->connection;
    pool = c->pool;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "echelon fetch: close connection to %V after %ui",
                   conn->peer, conn->requests);

#if (NGX_SSL)

    /* no close_notify: the responses are delimited, nothing is lost */

    if (c->ssl) {
        c->ssl->no_wait_shutdown = 1;
        c->ssl->no_send_shutdown = 1;

        (void) ngx_ssl_shutdown(c);
    }

#endif

    conn->fetch->nconns--;

    ngx_close_connection(c);
    ngx_destroy_pool(pool);
}


static void
ngx_echelon_fetch_empty_handler(ngx_event_t *ev)
{
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "echelon fetch: empty handler");
}


static u_char *
ngx_echelon_fetch_log_error(ngx_log_t *log, u_char *buf, size_t len)
{
    u_char                    *p;
    ngx_echelon_fetch_conn_t  *conn;

    conn = log->data;
    p = buf;

    if (log->action) {
        p = ngx_snprintf(buf, len, " while %s", log->action);
        len -= p - buf;
        buf = p;
    }

    return ngx_snprintf(buf, len, ", provider: %V, peer: %V",
                        &conn->origin->endpoint->url, conn->peer);
}


/* the state of a response not yet begun */

static void
ngx_echelon_fetch_reset(ngx_echelon_fetch_exchange_t *ex)
{
    ex->phase = NGX_ECHELON_FETCH_QUEUED;
    ex->state = NGX_ECHELON_FETCH_STATUS_LINE;

    ex->sent = 0;
    ex->line_len = 0;
    ex->header_bytes = 0;
    ex->status = 0;
    ex->content_length = -1;
    ex->retry_after = -1;
    ex->body_len = 0;

    ex->http11 = 0;
    ex->chunked = 0;
    ex->encoded = 0;
    ex->close = 0;
    ex->received = 0;
}


/*
 * Feeds response bytes to the parser: NGX_OK when the response is
 * complete, NGX_AGAIN for more, NGX_ERROR with ex->bad saying why.
 */

static ngx_int_t
ngx_echelon_fetch_parse(ngx_echelon_fetch_exchange_t *ex, u_char *p,
    u_char *last)
{
    u_char  *lf;
    size_t   n;

    while (p < last) {

        switch (ex->state) {

        case NGX_ECHELON_FETCH_BODY:
        case NGX_ECHELON_FETCH_CHUNK_DATA:

            n = (size_t) ngx_min((off_t) (last - p), ex->rest);

            if (ngx_echelon_fetch_keep(ex, p, n) != NGX_OK) {
                return NGX_ERROR;
            }

            p += n;
            ex->rest -= n;

            if (ex->rest == 0) {
                ex->state = (ex->state == NGX_ECHELON_FETCH_BODY)
                            ? NGX_ECHELON_FETCH_COMPLETE
                            : NGX_ECHELON_FETCH_CHUNK_END;
            }

            break;

        case NGX_ECHELON_FETCH_BODY_TO_CLOSE:

            if (ngx_echelon_fetch_keep(ex, p, last - p) != NGX_OK) {
                return NGX_ERROR;
            }

            p = last;
            break;

        case NGX_ECHELON_FETCH_COMPLETE:

            /* bytes past the response: the connection cannot be trusted */

            ex->close = 1;
            return NGX_OK;

        default:

            /* a line: status, header, chunk size, chunk end or trailer */

            lf = ngx_strlchr(p, last, LF);
            n = (lf ? lf : last) - p;

            if (ex->line_len + n >= NGX_ECHELON_FETCH_LINE) {
                ex->bad = "a line longer than 8192 bytes";
                return NGX_ERROR;
            }

            if (ex->state != NGX_ECHELON_FETCH_CHUNK_SIZE
                && ex->state != NGX_ECHELON_FETCH_CHUNK_END)
            {
                ex->header_bytes += n;

                if (ex->header_bytes > NGX_ECHELON_FETCH_HEADERS_MAX) {
                    ex->bad = "more than 64 KB of headers";
                    return NGX_ERROR;
                }
            }

            ngx_memcpy(ex->line + ex->line_len, p, n);
            ex->line_len += n;

            if (lf == NULL) {
                return NGX_AGAIN;
            }

            p = lf + 1;

            if (ngx_echelon_fetch_line(ex) != NGX_OK) {
                return NGX_ERROR;
            }

            ex->line_len = 0;
        }
    }

    return (ex->state == NGX_ECHELON_FETCH_COMPLETE) ? NGX_OK : NGX_AGAIN;
}


static ngx_int_t
ngx_echelon_fetch_line(ngx_echelon_fetch_exchange_t *ex)
{
    u_char  *p;
    size_t   len;

    p = ex->line;
    len = ex->line_len;

    if (len && p[len - 1] == CR) {
        len--;
    }

    switch (ex->state) {

    case NGX_ECHELON_FETCH_STATUS_LINE:
        return ngx_echelon_fetch_status_line(ex, p, len);

    case NGX_ECHELON_FETCH_HEADER_LINE:

        if (len == 0) {
            return ngx_echelon_fetch_headers_done(ex);
        }

        return ngx_echelon_fetch_header_line(ex, p, len);

    case NGX_ECHELON_FETCH_CHUNK_SIZE:
        return ngx_echelon_fetch_chunk_size(ex, p, len);

    case NGX_ECHELON_FETCH_CHUNK_END:

        if (len != 0) {
            ex->bad = "no CRLF after a chunk";
            return NGX_ERROR;
        }

        ex->state = NGX_ECHELON_FETCH_CHUNK_SIZE;
        return NGX_OK;

    default: /* NGX_ECHELON_FETCH_TRAILER_LINE */

        if (len == 0) {
            ex->state = NGX_ECHELON_FETCH_COMPLETE;
        }

        return NGX_OK;
    }
}


/* "HTTP/1.1 200 OK"; the headers of an interim 1xx response start over */

static ngx_int_t
ngx_echelon_fetch_status_line(ngx_echelon_fetch_exchange_t *ex, u_char *p,
    size_t len)
{
    ngx_uint_t  i, status;

    if (len == 0) {
        return NGX_OK;
    }

    if (len < sizeof("HTTP/1.1 200") - 1
        || ngx_strncmp(p, "HTTP/1.", sizeof("HTTP/1.") - 1) != 0
        || p[7] < '0' || p[7] > '9' || p[8] != ' '
        || (len > 12 && p[12] != ' '))
    {
        ex->bad = "no HTTP/1.x status line";
        return NGX_ERROR;
    }

    status = 0;

    for (i = 9; i < 12; i++) {
        if (p[i] < '0' || p[i] > '9') {
            ex->bad = "no HTTP/1.x status line";
            return NGX_ERROR;
        }

        status = status * 10 + (p[i] - '0');
    }

    if (status < 100 || status > 599) {
        ex->bad = "a status out of range";
        return NGX_ERROR;
    }

    ex->status = status;
    ex->http11 = (p[7] != '0');

    ex->content_length = -1;
    ex->retry_after = -1;
    ex->chunked = 0;
    ex->encoded = 0;
    ex->close = 0;

    ex->state = NGX_ECHELON_FETCH_HEADER_LINE;

    return NGX_OK;
}


static ngx_int_t
ngx_echelon_fetch_header_line(ngx_echelon_fetch_exchange_t *ex, u_char *p,
    size_t len)
{
    u_char     *colon, *last, *comma;
    off_t       n;
    size_t      name_len;
    ngx_uint_t  i;

    /* obsolete line folding continues a header, of none read here */

    if (p[0] == ' ' || p[0] == '\t') {
        return NGX_OK;
    }

    last = p + len;
    colon = ngx_strlchr(p, last, ':');

    if (colon == NULL || colon == p) {
        ex->bad = "a header line without a name";
        return NGX_ERROR;
    }

    name_len = colon - p;

    for (i = 0; i < name_len; i++) {
        if (p[i] <= ' ' || p[i] >= 0x7f) {
            ex->bad = "an invalid header name";
            return NGX_ERROR;
        }
    }

    colon++;

    while (colon < last && (*colon == ' ' || *colon == '\t')) {
        colon++;
    }

    while (last > colon && (last[-1] == ' ' || last[-1] == '\t')) {
        last--;
    }

    len = last - colon;

    if (name_len == sizeof("Content-Length") - 1
        && ngx_strncasecmp(p, (u_char *) "Content-Length", name_len) == 0)
    {
        n = ngx_atoof(colon, len);

        if (n == NGX_ERROR
            || (ex->content_length != -1 && ex->content_length != n))
        {
            ex->bad = "an invalid Content-Length";
            return NGX_ERROR;
        }

        ex->content_length = n;
        return NGX_OK;
    }

    if (name_len == sizeof("Transfer-Encoding") - 1
        && ngx_strncasecmp(p, (u_char *) "Transfer-Encoding", name_len) == 0)
    {
        /* the last coding decides how the body ends */

        comma = colon;

        for (p = colon; p < last; p++) {
            if (*p == ',') {
                comma = p + 1;
            }
        }

        while (comma < last && (*comma == ' ' || *comma == '\t')) {
            comma++;
        }

        ex->chunked = (last - comma == sizeof("chunked") - 1
                       && ngx_strncasecmp(comma, (u_char *) "chunked",
                                          sizeof("chunked") - 1) == 0);
        ex->encoded = !ex->chunked;

        return NGX_OK;
    }

    if (name_len == sizeof("Connection") - 1
        && ngx_strncasecmp(p, (u_char *) "Connection", name_len) == 0)
    {
        if (ngx_echelon_fetch_has_token(colon, len, "close")) {
            ex->close = 1;
        }

        return NGX_OK;
    }

    if (name_len == sizeof("Retry-After") - 1
        && ngx_strncasecmp(p, (u_char *) "Retry-After", name_len) == 0)
    {
        ex->retry_after = ngx_echelon_fetch_retry_after(colon, len);
        return NGX_OK;
    }

    return NGX_OK;
}


/* RFC 9112, 6.3: how the length of the body is known */

static ngx_int_t
ngx_echelon_fetch_headers_done(ngx_echelon_fetch_exchange_t *ex)
{
    if (ex->status < 200) {

        if (ex->status == 101) {
            ex->bad = "an unasked-for protocol switch";
            return NGX_ERROR;
        }

        ex->state = NGX_ECHELON_FETCH_STATUS_LINE;
        return NGX_OK;
    }

    if (!ex->http11) {
        ex->close = 1;
    }

    if (ex->head || ex->status == 204 || ex->status == 304) {
        ex->state = NGX_ECHELON_FETCH_COMPLETE;
        return NGX_OK;
    }

    if (ex->chunked) {

        if (ex->content_length != -1) {
            ex->close = 1;
        }

        ex->state = NGX_ECHELON_FETCH_CHUNK_SIZE;
        return NGX_OK;
    }

    if (ex->encoded || ex->content_length == -1) {
        ex->close = 1;
        ex->state = NGX_ECHELON_FETCH_BODY_TO_CLOSE;
        return NGX_OK;
    }

    if (ex->content_length == 0) {
        ex->state = NGX_ECHELON_FETCH_COMPLETE;
        return NGX_OK;
    }

    ex->rest = ex->content_length;
    ex->state = NGX_ECHELON_FETCH_BODY;

    return NGX_OK;
}


/* "1a2b[;extension]"; a zero size ends the body, the trailers follow */

static ngx_int_t
ngx_echelon_fetch_chunk_size(ngx_echelon_fetch_exchange_t *ex, u_char *p,
    size_t len)
{
    u_char  *start, *last, c, digit;
    off_t    size;

    start = p;
    last = p + len;
    size = 0;

    for ( /* void */ ; p < last; p++) {
        c = (u_char) (*p | 0x20);

        if (*p >= '0' && *p <= '9') {
            digit = *p - '0';

        } else if (c >= 'a' && c <= 'f') {
            digit = c - 'a' + 10;

        } else {
            break;
        }

        if (size > (NGX_MAX_OFF_T_VALUE - 15) / 16) {
            ex->bad = "a chunk size too large";
            return NGX_ERROR;
        }

        size = size * 16 + digit;
    }

    if (p == start) {
        ex->bad = "no chunk size";
        return NGX_ERROR;
    }

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    if (p < last && *p != ';') {
        ex->bad = "an invalid chunk size";
        return NGX_ERROR;
    }

    if (size == 0) {
        ex->state = NGX_ECHELON_FETCH_TRAILER_LINE;
        return NGX_OK;
    }

    ex->rest = size;
    ex->state = NGX_ECHELON_FETCH_CHUNK_DATA;

    return NGX_OK;
}


/* keeps the first 64 KB of the body; the rest is read and let go */

static ngx_int_t
ngx_echelon_fetch_keep(ngx_echelon_fetch_exchange_t *ex, u_char *p,
    size_t len)
{
    u_char  *body;
    size_t   size;

    len = ngx_min(len, NGX_ECHELON_FETCH_BODY_MAX - ex->body_len);

    if (len == 0) {
        return NGX_OK;
    }

    if (ex->body_len + len > ex->body_size) {

        if (ex->content_length > 0 && !ex->chunked) {
            size = (size_t) ngx_min(ex->content_length,
                                    NGX_ECHELON_FETCH_BODY_MAX);

        } else {
            size = ngx_max(ex->body_size * 2, NGX_ECHELON_FETCH_BODY_MIN);
        }

        while (size < ex->body_len + len) {
            size *= 2;
        }

        size = ngx_min(size, NGX_ECHELON_FETCH_BODY_MAX);

        body = ngx_pnalloc(ex->pool, size);
        if (body == NULL) {
            ex->bad = "no memory for the body";
            return NGX_ERROR;
        }

        if (ex->body) {
            ngx_memcpy(body, ex->body, ex->body_len);
            ngx_pfree(ex->pool, ex->body);
        }

        ex->body = body;
        ex->body_size = size;
    }

    ngx_memcpy(ex->body + ex->body_len, p, len);
    ex->body_len += len;

    return NGX_OK;
}


/* whether a comma-separated list holds the token, in any case */

static ngx_uint_t
ngx_echelon_fetch_has_token(u_char *p, size_t len, const char *token)
{
    u_char  *last, *end;
    size_t   n;

    last = p + len;
    n = ngx_strlen(token);

    while (p < last) {

        while (p < last && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }

        end = ngx_strlchr(p, last, ',');

        if (end == NULL) {
            end = last;
        }

        len = end - p;

        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t')) {
            len--;
        }

        if (len == n && ngx_strncasecmp(p, (u_char *) token, n) == 0) {
            return 1;
        }

        p = end;
    }

    return 0;
}


/* seconds, or an HTTP-date turned into seconds from now; -1 if neither */

static time_t
ngx_echelon_fetch_retry_after(u_char *p, size_t len)
{
    time_t  t;

    if (len == 0) {
        return -1;
    }

    t = ngx_atotm(p, len);

    if (t != NGX_ERROR) {
        return t;
    }

    t = ngx_parse_http_time(p, len);

    if (t == NGX_ERROR) {
        return -1;
    }

    return (t > ngx_time()) ? t - ngx_time() : 0;
}


#if (NGX_SSL)

/*
 * One client context a worker.  The CA file can be replaced for tests by
 * ECHELON_CA_FILE; nginx clears a worker's environment but for TZ, so the
 * variable reaches the worker only with "env ECHELON_CA_FILE;" in
 * nginx.conf.
 */

static ngx_int_t
ngx_echelon_fetch_tls_init(ngx_echelon_fetch_t *fetch, ngx_cycle_t *cycle)
{
    char                *file;
    ngx_str_t            ca;
    ngx_conf_t           cf;
    ngx_pool_cleanup_t  *cln;

    fetch->ssl.log = cycle->log;

    if (ngx_ssl_create(&fetch->ssl, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, fetch)
        != NGX_OK)
    {
        if (fetch->ssl.ctx) {
            SSL_CTX_free(fetch->ssl.ctx);
        }

        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(fetch->pool, 0);
    if (cln == NULL) {
        SSL_CTX_free(fetch->ssl.ctx);
        return NGX_ERROR;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = &fetch->ssl;

    file = getenv("ECHELON_CA_FILE");

    if (file == NULL || *file == '\0') {
        file = NGX_ECHELON_FETCH_CA_FILE;
    }

    ca.data = (u_char *) file;
    ca.len = ngx_strlen(file);

    /* only the cycle and the log of a configuration are used */

    ngx_memzero(&cf, sizeof(ngx_conf_t));

    cf.cycle = cycle;
    cf.pool = fetch->pool;
    cf.log = cycle->log;

    if (ngx_ssl_trusted_certificate(&cf, &fetch->ssl, &ca,
                                    NGX_ECHELON_FETCH_CA_DEPTH)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                      "echelon fetch: no trusted CA certificates from "
                      "\"%V\": every https provider will fail", &ca);
        return NGX_OK;
    }

    fetch->trusted = 1;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, cycle->log, 0,
                   "echelon fetch: trusted CA certificates from \"%V\"", &ca);

    return NGX_OK;
}

#endif
