
/*
 * Copyright (C) Echelon
 *
 * SMTP on nginx's own event machinery: replies read as they come, commands
 * written as the socket takes them, TLS through nginx's OpenSSL layer.  A
 * message's result is reported as soon as the server answers its end.
 * With echelon_smtp_keepalive N, at most N connections are open and the
 * messages take turns on them, each connection waiting idle between two;
 * with 0, every message has a connection of its own, which says QUIT after
 * it.  Nothing ever waits for the reply to QUIT.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_event_connect.h>

#include "ngx_echelon.h"


#if !(NGX_SSL)
#error "echelon smtp needs nginx built with OpenSSL"
#endif


#define NGX_ECHELON_SMTP_TIMEOUT          30000
#define NGX_ECHELON_SMTP_CONNECTIONS      64    /* without keepalive */
#define NGX_ECHELON_SMTP_POOL_SIZE        2048
#define NGX_ECHELON_SMTP_BUFFER           4096
#define NGX_ECHELON_SMTP_COMMAND_LEN      512
#define NGX_ECHELON_SMTP_NAME_LEN         256
#define NGX_ECHELON_SMTP_VERIFY_DEPTH     10

/* hashed certificates of the trusted authorities; a test build has its own */
#ifndef NGX_ECHELON_SMTP_CA_PATH
#define NGX_ECHELON_SMTP_CA_PATH          "/etc/ssl/certs"
#endif

#define NGX_ECHELON_SMTP_ID_LEN           128
#define NGX_ECHELON_SMTP_ADDR_LEN         254
#define NGX_ECHELON_SMTP_REPLY_LEN        512
#define NGX_ECHELON_SMTP_PLAIN_LEN        900
#define NGX_ECHELON_SMTP_WORD_LEN         39
#define NGX_ECHELON_SMTP_QP_LINE          76


/* room for len bytes as folded RFC 2047 encoded-words */
#define ngx_echelon_smtp_words_size(len)                                      \
    (((len) / (NGX_ECHELON_SMTP_WORD_LEN - 3) + 1)                            \
     * (sizeof(CRLF " =?UTF-8?B?" "?=") - 1                                   \
        + ngx_base64_encoded_length(NGX_ECHELON_SMTP_WORD_LEN)))

/* room for len bytes as quoted-printable, soft breaks and last CRLF too */
#define ngx_echelon_smtp_qp_size(len)                                         \
    ((len) * 3 + ((len) * 3 / (NGX_ECHELON_SMTP_QP_LINE - 3) + 1) * 3 + 2)


/* what a transfer waits for; the order is the dialogue's */

typedef enum {
    NGX_ECHELON_SMTP_CONNECT = 0,
    NGX_ECHELON_SMTP_GREETING,
    NGX_ECHELON_SMTP_EHLO,
    NGX_ECHELON_SMTP_HELO,
    NGX_ECHELON_SMTP_STARTTLS,
    NGX_ECHELON_SMTP_HANDSHAKE,
    NGX_ECHELON_SMTP_AUTH,
    NGX_ECHELON_SMTP_RSET,
    NGX_ECHELON_SMTP_MAIL,
    NGX_ECHELON_SMTP_RCPT,
    NGX_ECHELON_SMTP_DATA,
    NGX_ECHELON_SMTP_MESSAGE
} ngx_echelon_smtp_state_e;


struct ngx_echelon_smtp_s {
    ngx_log_t                     *log;
    ngx_msec_t                     timeout;

    ngx_sockaddr_t                 sockaddr;
    socklen_t                      socklen;
    ngx_str_t                      name;        /* address:port, for logs */
    ngx_str_t                      host;        /* as the certificate says */
    ngx_str_t                      ehlo;        /* our name in EHLO */
    const char                    *unusable;    /* why every send fails */

    ngx_ssl_t                      ssl;

    ngx_event_t                    kick;        /* starts and reports */

    ngx_queue_t                    active;      /* started */
    ngx_queue_t                    waiting;     /* for a free connection */
    ngx_queue_t                    refused;     /* at send time */
    ngx_queue_t                    idle;        /* most recent first */
    ngx_uint_t                     nactive;
    ngx_uint_t                     nwaiting;
    ngx_uint_t                     nrefused;
    ngx_uint_t                     nidle;
    ngx_uint_t                     nopen;       /* connections, busy or idle */

    ngx_uint_t                     keepalive;   /* connections kept open */
    ngx_msec_t                     keepalive_timeout;
    ngx_uint_t                     keepalive_requests;  /* messages each */

    ngx_str_t                      auth;        /* "AUTH PLAIN ..." */

    unsigned                       smtps:1;     /* TLS from the start */
    unsigned                       literal:1;   /* the host is an address */
    unsigned                       loopback:1;  /* on this machine */

    u_char                         name_data[NGX_SOCKADDR_STRLEN];
    u_char                         host_data[NGX_SOCKADDR_STRLEN];
    u_char                         ehlo_data[NGX_ECHELON_SMTP_NAME_LEN];
    u_char                         auth_data[NGX_ECHELON_SMTP_COMMAND_LEN];
};


typedef struct ngx_echelon_smtp_session_s  ngx_echelon_smtp_session_t;


typedef struct {
    ngx_queue_t                    queue;
    ngx_echelon_smtp_t            *smtp;
    ngx_pool_t                    *pool;        /* owns all of it */
    ngx_log_t                      log;
    ngx_echelon_smtp_session_t    *session;     /* the connection it uses */
    ngx_echelon_smtp_state_e       state;
    ngx_msec_t                     deadline;    /* of the whole transfer */

    ngx_echelon_smtp_done_pt       done;
    void                          *data;

    ngx_str_t                      message_id;
    ngx_str_t                      from;
    ngx_str_t                      to;
    ngx_str_t                      message;     /* dot-stuffed, with its end */

    ngx_str_t                      out;         /* being written */
    size_t                         sent;

    u_char                        *in;          /* replies being read */
    size_t                         in_len;

    ngx_echelon_send_e             status;      /* of a refused transfer */
    const char                    *reason;

    unsigned                       started:1;
    unsigned                       utf8:1;      /* an address needs it */
    unsigned                       quit:1;      /* the dialogue is in step */
    unsigned                       keep:1;      /* ready for another message */
    unsigned                       reused:1;    /* on a kept connection */
    unsigned                       retried:1;   /* on a new one after that */

    u_char                         command[NGX_ECHELON_SMTP_COMMAND_LEN];
} ngx_echelon_smtp_transfer_t;


/* a connection to the server, in its own pool, kept between messages */

struct ngx_echelon_smtp_session_s {
    ngx_queue_t                    queue;       /* smtp->idle */
    ngx_echelon_smtp_t            *smtp;
    ngx_pool_t                    *pool;        /* the connection's */
    ngx_log_t                      log;
    ngx_peer_connection_t          peer;
    ngx_echelon_smtp_transfer_t   *transfer;    /* NULL while idle */
    ngx_uint_t                     messages;    /* started on it */

    unsigned                       tls:1;
    unsigned                       starttls:1;  /* offered by the server */
    unsigned                       smtputf8:1;  /* offered by the server */
    unsigned                       plain:1;     /* AUTH PLAIN offered */
    unsigned                       authenticated:1;
    unsigned                       reset:1;     /* RSET before the next */
};


typedef struct {
    ngx_int_t                      code;
    ngx_str_t                      line;        /* the last one */
    size_t                         size;        /* of all its lines */
} ngx_echelon_smtp_reply_t;


typedef struct {
    ngx_str_t                      name;
    ngx_str_t                      addr;
} ngx_echelon_smtp_mailbox_t;


static ngx_int_t ngx_echelon_smtp_parse_url(ngx_echelon_smtp_t *smtp,
    ngx_echelon_main_conf_t *emcf);
static ngx_int_t ngx_echelon_smtp_credentials(ngx_echelon_smtp_t *smtp,
    ngx_echelon_main_conf_t *emcf);
static ngx_int_t ngx_echelon_smtp_login(ngx_echelon_smtp_transfer_t *t);
static ngx_int_t ngx_echelon_smtp_domain(ngx_echelon_smtp_t *smtp,
    ngx_str_t *name);
static ngx_int_t ngx_echelon_smtp_ssl(ngx_echelon_smtp_t *smtp,
    ngx_cycle_t *cycle);
static ngx_int_t ngx_echelon_smtp_message(ngx_echelon_smtp_transfer_t *t,
    ngx_echelon_mail_t *mail, ngx_echelon_smtp_mailbox_t *from,
    ngx_echelon_smtp_mailbox_t *to);
static void ngx_echelon_smtp_refuse(ngx_echelon_smtp_t *smtp,
    ngx_echelon_smtp_transfer_t *t, ngx_echelon_send_e status,
    const char *reason);
static void ngx_echelon_smtp_kick(ngx_echelon_smtp_t *smtp);
static ngx_uint_t ngx_echelon_smtp_free_slot(ngx_echelon_smtp_t *smtp);
static void ngx_echelon_smtp_kick_handler(ngx_event_t *ev);

static void ngx_echelon_smtp_start(ngx_echelon_smtp_transfer_t *t);
static ngx_echelon_smtp_session_t *ngx_echelon_smtp_idle_get(
    ngx_echelon_smtp_t *smtp);
static void ngx_echelon_smtp_resume(ngx_echelon_smtp_transfer_t *t,
    ngx_echelon_smtp_session_t *s);
static void ngx_echelon_smtp_connect(ngx_echelon_smtp_transfer_t *t);
static void ngx_echelon_smtp_connected(ngx_echelon_smtp_transfer_t *t);
static void ngx_echelon_smtp_read_handler(ngx_event_t *rev);
static void ngx_echelon_smtp_write_handler(ngx_event_t *wev);
static void ngx_echelon_smtp_read(ngx_echelon_smtp_transfer_t *t);
static ngx_int_t ngx_echelon_smtp_parse(ngx_echelon_smtp_transfer_t *t,
    ngx_echelon_smtp_reply_t *r);
static ngx_int_t ngx_echelon_smtp_reply(ngx_echelon_smtp_transfer_t *t,
    ngx_echelon_smtp_reply_t *r);
static void ngx_echelon_smtp_extensions(ngx_echelon_smtp_transfer_t *t,
    ngx_echelon_smtp_reply_t *r);
static ngx_uint_t ngx_echelon_smtp_offers(u_char *line, u_char *end,
    const char *keyword);
static ngx_int_t ngx_echelon_smtp_ehlo(ngx_echelon_smtp_transfer_t *t);
static ngx_int_t ngx_echelon_smtp_mail(ngx_echelon_smtp_transfer_t *t);
static ngx_int_t ngx_echelon_smtp_command(ngx_echelon_smtp_transfer_t *t,
    ngx_echelon_smtp_state_e state, u_char *data, size_t len);
static ngx_int_t ngx_echelon_smtp_flush(ngx_echelon_smtp_transfer_t *t);
static void ngx_echelon_smtp_tls(ngx_echelon_smtp_transfer_t *t);
static void ngx_echelon_smtp_handshaked(ngx_connection_t *c);

static ngx_int_t ngx_echelon_smtp_refused(ngx_echelon_smtp_transfer_t *t,
    ngx_echelon_smtp_reply_t *r);
static void ngx_cdecl ngx_echelon_smtp_lost(ngx_echelon_smtp_transfer_t *t,
    const char *fmt, ...);
static ngx_uint_t ngx_echelon_smtp_retryable(ngx_echelon_smtp_transfer_t *t);
static void ngx_echelon_smtp_retry(ngx_echelon_smtp_transfer_t *t,
    u_char *text, size_t len);
static void ngx_cdecl ngx_echelon_smtp_error(ngx_echelon_smtp_transfer_t *t,
    const char *fmt, ...);
static void ngx_echelon_smtp_finish(ngx_echelon_smtp_transfer_t *t,
    ngx_echelon_send_e status, u_char *text, size_t len);
static void ngx_echelon_smtp_release(ngx_echelon_smtp_transfer_t *t);
static void ngx_echelon_smtp_free(ngx_echelon_smtp_transfer_t *t);
static ngx_msec_t ngx_echelon_smtp_left(ngx_echelon_smtp_transfer_t *t);
static const char *ngx_echelon_smtp_stage(ngx_echelon_smtp_transfer_t *t);
static u_char *ngx_echelon_smtp_log_error(ngx_log_t *log, u_char *buf,
    size_t len);

static void ngx_echelon_smtp_idle_handler(ngx_event_t *rev);
static void ngx_echelon_smtp_idle_write_handler(ngx_event_t *wev);
static void ngx_echelon_smtp_idle_close(ngx_echelon_smtp_session_t *s,
    ngx_uint_t quit);
static void ngx_echelon_smtp_session_close(ngx_echelon_smtp_session_t *s,
    ngx_uint_t quit);
static u_char *ngx_echelon_smtp_session_log_error(ngx_log_t *log,
    u_char *buf, size_t len);

static void ngx_echelon_smtp_mailbox(ngx_str_t *text,
    ngx_echelon_smtp_mailbox_t *mb);
static ngx_int_t ngx_echelon_smtp_valid_address(ngx_str_t *addr);
static ngx_int_t ngx_echelon_smtp_valid_id(ngx_str_t *id);
static ngx_uint_t ngx_echelon_smtp_utf8(ngx_str_t *text);
static ngx_uint_t ngx_echelon_smtp_plain(ngx_str_t *text);
static size_t ngx_echelon_smtp_message_size(ngx_echelon_mail_t *mail,
    ngx_echelon_smtp_mailbox_t *from, ngx_echelon_smtp_mailbox_t *to);
static size_t ngx_echelon_smtp_mailbox_size(ngx_echelon_smtp_mailbox_t *mb);
static u_char *ngx_echelon_smtp_compose(u_char *p, ngx_echelon_mail_t *mail,
    ngx_echelon_smtp_mailbox_t *from, ngx_echelon_smtp_mailbox_t *to);
static u_char *ngx_echelon_smtp_date(u_char *p);
static u_char *ngx_echelon_smtp_write_mailbox(u_char *p,
    ngx_echelon_smtp_mailbox_t *mb);
static u_char *ngx_echelon_smtp_write_text(u_char *p, ngx_str_t *text);
static u_char *ngx_echelon_smtp_encode_words(u_char *p, ngx_str_t *text);
static u_char *ngx_echelon_smtp_quoted_printable(u_char *p, ngx_str_t *text);


/* what a transfer is doing, by state, for timeouts and logs */

static char  *ngx_echelon_smtp_stages[] = {
    "connecting to the server",
    "waiting for the greeting",
    "waiting for the reply to EHLO",
    "waiting for the reply to HELO",
    "waiting for the reply to STARTTLS",
    "in the TLS handshake",
    "waiting for the reply to AUTH",
    "waiting for the reply to RSET",
    "waiting for the reply to MAIL FROM",
    "waiting for the reply to RCPT TO",
    "waiting for the reply to DATA",
    "waiting for the reply to the end of the message"
};

static u_char  ngx_echelon_smtp_mime[] =
    "MIME-Version: 1.0" CRLF
    "Content-Type: text/plain; charset=utf-8" CRLF
    "Content-Transfer-Encoding: quoted-printable" CRLF
    CRLF;

static char  *ngx_echelon_smtp_week[] = { "Sun", "Mon", "Tue", "Wed", "Thu",
                                          "Fri", "Sat" };

static char  *ngx_echelon_smtp_months[] = { "Jan", "Feb", "Mar", "Apr",
                                            "May", "Jun", "Jul", "Aug",
                                            "Sep", "Oct", "Nov", "Dec" };


/* whether a "From" would be sent as it is, for the API to check first */

ngx_int_t
ngx_echelon_smtp_sender_valid(ngx_str_t *from)
{
    ngx_echelon_smtp_mailbox_t  mb;

    ngx_echelon_smtp_mailbox(from, &mb);

    return ngx_echelon_smtp_valid_address(&mb.addr) == NGX_OK;
}


ngx_echelon_smtp_t *
ngx_echelon_smtp_create(ngx_cycle_t *cycle, ngx_echelon_main_conf_t *emcf)
{
    ngx_echelon_smtp_t  *smtp;

    smtp = ngx_calloc(sizeof(ngx_echelon_smtp_t), cycle->log);
    if (smtp == NULL) {
        return NULL;
    }

    smtp->log = cycle->log;

    smtp->timeout = emcf->smtp_timeout;

    if (smtp->timeout == 0 || smtp->timeout == NGX_CONF_UNSET_MSEC) {
        smtp->timeout = NGX_ECHELON_SMTP_TIMEOUT;
    }

    smtp->keepalive = emcf->smtp_keepalive;
    smtp->keepalive_timeout = emcf->smtp_keepalive_timeout;
    smtp->keepalive_requests = emcf->smtp_keepalive_requests;

    ngx_queue_init(&smtp->active);
    ngx_queue_init(&smtp->waiting);
    ngx_queue_init(&smtp->refused);
    ngx_queue_init(&smtp->idle);

    smtp->kick.handler = ngx_echelon_smtp_kick_handler;
    smtp->kick.data = smtp;
    smtp->kick.log = smtp->log;

    ngx_str_set(&smtp->ehlo, "localhost");
    (void) ngx_echelon_smtp_domain(smtp, &cycle->hostname);

    /* a URL that cannot be used fails every send, the worker stays */

    if (ngx_echelon_smtp_parse_url(smtp, emcf) == NGX_ERROR) {
        goto failed;
    }

    if (emcf->smtp_user.len
        && ngx_echelon_smtp_credentials(smtp, emcf) != NGX_OK)
    {
        goto failed;
    }

    if (ngx_echelon_smtp_ssl(smtp, cycle) != NGX_OK) {
        goto failed;
    }

    return smtp;

failed:

    if (smtp->ssl.ctx) {
        ngx_ssl_cleanup_ctx(&smtp->ssl);
    }

    ngx_free(smtp);

    return NULL;
}


/*
 * A relay named by its host name is looked up when nginx reads its
 * configuration, in the master, as nginx does for proxy_pass: a worker
 * must not wait for DNS.  A DNS change is followed on reload.
 */

ngx_int_t
ngx_echelon_smtp_resolve(ngx_conf_t *cf, ngx_echelon_main_conf_t *emcf)
{
    size_t      skip;
    ngx_str_t   host;
    ngx_url_t   u;
    in_port_t   port;

    if (emcf->smtp_url.len > sizeof("smtps://") - 1
        && ngx_strncasecmp(emcf->smtp_url.data, (u_char *) "smtps://",
                           sizeof("smtps://") - 1) == 0)
    {
        skip = sizeof("smtps://") - 1;
        port = 465;

    } else {
        skip = sizeof("smtp://") - 1;
        port = 25;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url.data = emcf->smtp_url.data + skip;
    u.url.len = emcf->smtp_url.len - skip;
    u.default_port = port;
    u.uri_part = 1;
    u.no_resolve = 1;

    /* what is wrong with the URL, the worker says when it sends */

    if (ngx_strlchr(u.url.data, u.url.data + u.url.len, '@')
        || ngx_parse_url(cf->pool, &u) != NGX_OK)
    {
        return NGX_OK;
    }

    host = u.host;

    if (host.len == 0
        || host.data[0] == '['
        || ngx_inet_addr(host.data, host.len) != INADDR_NONE
        || (host.len == sizeof("localhost") - 1
            && ngx_strncasecmp(host.data, (u_char *) "localhost",
                               sizeof("localhost") - 1) == 0))
    {
        return NGX_OK;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url.data = emcf->smtp_url.data + skip;
    u.url.len = emcf->smtp_url.len - skip;
    u.default_port = port;
    u.uri_part = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s in \"echelon_smtp_url\" \"%V\"",
                           u.err ? u.err : "host not found", &emcf->smtp_url);
        return NGX_ERROR;
    }

    emcf->smtp_addrs = &u.addrs[0];

    return NGX_OK;
}


static ngx_int_t
ngx_echelon_smtp_parse_url(ngx_echelon_smtp_t *smtp,
    ngx_echelon_main_conf_t *emcf)
{
    u_char      *p;
    size_t       skip;
    ngx_int_t    rc;
    ngx_str_t    host, path, *url;
    ngx_url_t    u;
    in_port_t    port;
    ngx_pool_t  *pool;

    url = &emcf->smtp_url;

    if (url->len > sizeof("smtps://") - 1
        && ngx_strncasecmp(url->data, (u_char *) "smtps://",
                           sizeof("smtps://") - 1) == 0)
    {
        smtp->smtps = 1;
        skip = sizeof("smtps://") - 1;
        port = 465;

    } else if (url->len > sizeof("smtp://") - 1
               && ngx_strncasecmp(url->data, (u_char *) "smtp://",
                                  sizeof("smtp://") - 1) == 0)
    {
        skip = sizeof("smtp://") - 1;
        port = 25;

    } else {
        ngx_log_error(NGX_LOG_ERR, smtp->log, 0,
                      "echelon smtp: \"echelon_smtp_url\" must start with "
                      "smtp:// or smtps://");
        smtp->unusable = "invalid echelon_smtp_url";
        return NGX_DECLINED;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url.data = url->data + skip;
    u.url.len = url->len - skip;
    u.default_port = port;
    u.uri_part = 1;
    u.no_resolve = 1;

    /* credentials have directives of their own, secrets may be env: */

    if (ngx_strlchr(u.url.data, u.url.data + u.url.len, '@')) {
        ngx_log_error(NGX_LOG_ERR, smtp->log, 0,
                      "echelon smtp: credentials in \"echelon_smtp_url\" "
                      "are not read; use \"echelon_smtp_user\" and "
                      "\"echelon_smtp_password\"");
        smtp->unusable = "invalid echelon_smtp_url";
        return NGX_DECLINED;
    }

    /* the address is kept in u itself, the pool only holds copies */

    pool = ngx_create_pool(NGX_ECHELON_SMTP_POOL_SIZE, smtp->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_parse_url(pool, &u);

    ngx_destroy_pool(pool);

    if (rc != NGX_OK) {
        if (u.err == NULL) {
            return NGX_ERROR;
        }

        ngx_log_error(NGX_LOG_ERR, smtp->log, 0,
                      "echelon smtp: %s in \"echelon_smtp_url\"", u.err);
        smtp->unusable = "invalid echelon_smtp_url";
        return NGX_DECLINED;
    }

    host = u.host;

    if (host.len > 2 && host.data[0] == '[') {
        host.data++;
        host.len -= 2;
    }

    if (u.naddrs) {
        smtp->literal = 1;

    } else if (emcf->smtp_addrs) {

        /* a name, looked up when the configuration was read */

        ngx_memcpy(&u.sockaddr, emcf->smtp_addrs->sockaddr,
                   emcf->smtp_addrs->socklen);
        u.socklen = emcf->smtp_addrs->socklen;

    } else if (host.len == sizeof("localhost") - 1
               && ngx_strncasecmp(host.data, (u_char *) "localhost",
                                  sizeof("localhost") - 1) == 0)
    {
        /* u.sockaddr has the family and the port already */

        u.sockaddr.sockaddr_in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    } else {
        ngx_log_error(NGX_LOG_ERR, smtp->log, 0,
                      "echelon smtp: the host \"%V\" of "
                      "\"echelon_smtp_url\" was not resolved", &host);
        smtp->unusable = "the SMTP host was not resolved";
        return NGX_DECLINED;
    }

    p = ngx_cpymem(smtp->host_data, host.data, host.len);
    *p = '\0';

    smtp->host.data = smtp->host_data;
    smtp->host.len = host.len;

    ngx_memcpy(&smtp->sockaddr, &u.sockaddr, u.socklen);
    smtp->socklen = u.socklen;

    switch (smtp->sockaddr.sockaddr.sa_family) {

#if (NGX_HAVE_INET6)
    case AF_INET6:
        smtp->loopback = IN6_IS_ADDR_LOOPBACK(
                             &smtp->sockaddr.sockaddr_in6.sin6_addr);
        break;
#endif

    default:
        smtp->loopback = (ntohl(smtp->sockaddr.sockaddr_in.sin_addr.s_addr)
                          >> 24) == 127;
    }

    smtp->name.data = smtp->name_data;
    smtp->name.len = ngx_sock_ntop(&smtp->sockaddr.sockaddr, smtp->socklen,
                                   smtp->name_data, NGX_SOCKADDR_STRLEN, 1);

    /* a path is our name in EHLO, as libcurl took it */

    if (u.uri.len > 1) {
        path.data = u.uri.data + 1;
        path.len = u.uri.len - 1;

        if (u.uri.data[0] != '/'
            || ngx_echelon_smtp_domain(smtp, &path) != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ERR, smtp->log, 0,
                          "echelon smtp: invalid domain \"%V\" in "
                          "\"echelon_smtp_url\"", &path);
            smtp->unusable = "invalid echelon_smtp_url";
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/* AUTH PLAIN's one command: the user and the password, in base64 */

static ngx_int_t
ngx_echelon_smtp_credentials(ngx_echelon_smtp_t *smtp,
    ngx_echelon_main_conf_t *emcf)
{
    u_char     *p, plain[NGX_ECHELON_SMTP_COMMAND_LEN];
    ngx_str_t   src, dst;

    src.len = 1 + emcf->smtp_user.len + 1 + emcf->smtp_password.len;

    if (src.len > sizeof(plain)
        || sizeof("AUTH PLAIN " CRLF) - 1 + ngx_base64_encoded_length(src.len)
           > sizeof(smtp->auth_data))
    {
        ngx_log_error(NGX_LOG_ERR, smtp->log, 0,
                      "echelon smtp: \"echelon_smtp_user\" and "
                      "\"echelon_smtp_password\" are too long");
        smtp->unusable = "the SMTP credentials are too long";
        return NGX_OK;
    }

    p = plain;
    *p++ = '\0';
    p = ngx_cpymem(p, emcf->smtp_user.data, emcf->smtp_user.len);
    *p++ = '\0';
    p = ngx_cpymem(p, emcf->smtp_password.data, emcf->smtp_password.len);

    src.data = plain;

    p = ngx_cpymem(smtp->auth_data, "AUTH PLAIN ", sizeof("AUTH PLAIN ") - 1);

    dst.data = p;
    ngx_encode_base64(&dst, &src);

    p = ngx_cpymem(p + dst.len, CRLF, sizeof(CRLF) - 1);

    smtp->auth.data = smtp->auth_data;
    smtp->auth.len = p - smtp->auth_data;

    ngx_explicit_memzero(plain, sizeof(plain));

    return NGX_OK;
}


static ngx_int_t
ngx_echelon_smtp_domain(ngx_echelon_smtp_t *smtp, ngx_str_t *name)
{
    u_char  *p, *last;

    /* a domain or an address literal, nothing that could end a command */

    if (name->len == 0 || name->len >= sizeof(smtp->ehlo_data)) {
        return NGX_DECLINED;
    }

    last = name->data + name->len;

    for (p = name->data; p < last; p++) {
        if ((*p >= '0' && *p <= '9')
            || ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z')
            || *p == '.' || *p == '-' || *p == '_'
            || *p == '[' || *p == ']' || *p == ':')
        {
            continue;
        }

        return NGX_DECLINED;
    }

    ngx_memcpy(smtp->ehlo_data, name->data, name->len);

    smtp->ehlo.data = smtp->ehlo_data;
    smtp->ehlo.len = name->len;

    return NGX_OK;
}


static ngx_int_t
ngx_echelon_smtp_ssl(ngx_echelon_smtp_t *smtp, ngx_cycle_t *cycle)
{
    ngx_str_t   file;
    ngx_conf_t  cf;

    smtp->ssl.log = smtp->log;

    if (ngx_ssl_create(&smtp->ssl, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* nginx's verify callback and depth, no file: the configuration is idle */

    ngx_memzero(&cf, sizeof(ngx_conf_t));

    cf.cycle = cycle;
    cf.pool = cycle->pool;
    cf.log = cycle->log;

    ngx_str_null(&file);

    if (ngx_ssl_trusted_certificate(&cf, &smtp->ssl, &file,
                                    NGX_ECHELON_SMTP_VERIFY_DEPTH)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /*
     * the system's authorities by their hashed names, each one read when a
     * chain first needs it: the whole bundle would hold the worker's start
     * for 30 ms, and for a second under valgrind
     */

    if (SSL_CTX_load_verify_locations(smtp->ssl.ctx, NULL,
                                      NGX_ECHELON_SMTP_CA_PATH)
        == 0)
    {
        /* then no server is trusted: every TLS transfer fails, transiently */

        ngx_ssl_error(NGX_LOG_ERR, smtp->log, 0,
                      "echelon smtp: SSL_CTX_load_verify_locations(\"%s\") "
                      "failed", NGX_ECHELON_SMTP_CA_PATH);
    }

    return NGX_OK;
}


void
ngx_echelon_smtp_destroy(ngx_echelon_smtp_t *smtp)
{
    ngx_queue_t                  *q;
    ngx_echelon_smtp_session_t   *s;
    ngx_echelon_smtp_transfer_t  *t;

    /* idle connections say QUIT as they go, if the socket takes it at once */

    while (!ngx_queue_empty(&smtp->idle)) {
        q = ngx_queue_head(&smtp->idle);
        s = ngx_queue_data(q, ngx_echelon_smtp_session_t, queue);
        ngx_echelon_smtp_idle_close(s, 1);
    }

    /*
     * done is not called: the deliveries' leases run out and they are
     * tried again; a message cut before its end is dropped by the server
     */

    while (!ngx_queue_empty(&smtp->active)) {
        q = ngx_queue_head(&smtp->active);
        t = ngx_queue_data(q, ngx_echelon_smtp_transfer_t, queue);
        ngx_echelon_smtp_free(t);
    }

    while (!ngx_queue_empty(&smtp->waiting)) {
        q = ngx_queue_head(&smtp->waiting);
        t = ngx_queue_data(q, ngx_echelon_smtp_transfer_t, queue);
        ngx_echelon_smtp_free(t);
    }

    while (!ngx_queue_empty(&smtp->refused)) {
        q = ngx_queue_head(&smtp->refused);
        t = ngx_queue_data(q, ngx_echelon_smtp_transfer_t, queue);
        ngx_echelon_smtp_free(t);
    }

    if (smtp->kick.posted) {
        ngx_delete_posted_event(&smtp->kick);
    }

    ngx_ssl_cleanup_ctx(&smtp->ssl);

    ngx_free(smtp);
}


ngx_int_t
ngx_echelon_smtp_send(ngx_echelon_smtp_t *smtp, ngx_echelon_mail_t *mail,
    ngx_echelon_smtp_done_pt done, void *data)
{
    ngx_pool_t                   *pool;
    ngx_echelon_smtp_mailbox_t    from, to;
    ngx_echelon_smtp_transfer_t  *t;

    if (ngx_echelon_smtp_valid_id(&mail->message_id) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, smtp->log, 0,
                      "echelon smtp: invalid message id of %uz bytes",
                      mail->message_id.len);
        return NGX_ERROR;
    }

    pool = ngx_create_pool(NGX_ECHELON_SMTP_POOL_SIZE, smtp->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    t = ngx_pcalloc(pool, sizeof(ngx_echelon_smtp_transfer_t));
    if (t == NULL) {
        goto failed;
    }

    t->smtp = smtp;
    t->pool = pool;
    t->done = done;
    t->data = data;

    t->log = *smtp->log;
    t->log.handler = ngx_echelon_smtp_log_error;
    t->log.data = t;

    t->message_id.len = mail->message_id.len;
    t->message_id.data = ngx_pstrdup(pool, &mail->message_id);
    if (t->message_id.data == NULL) {
        goto failed;
    }

    ngx_echelon_smtp_mailbox(&mail->from, &from);
    ngx_echelon_smtp_mailbox(&mail->to, &to);

    if (ngx_echelon_smtp_valid_address(&from.addr) != NGX_OK) {
        ngx_echelon_smtp_refuse(smtp, t, NGX_ECHELON_SEND_PERMANENT,
                                "malformed sender address");
        return NGX_OK;
    }

    if (ngx_echelon_smtp_valid_address(&to.addr) != NGX_OK) {
        ngx_echelon_smtp_refuse(smtp, t, NGX_ECHELON_SEND_PERMANENT,
                                "malformed recipient address");
        return NGX_OK;
    }

    if (smtp->unusable) {
        ngx_echelon_smtp_refuse(smtp, t, NGX_ECHELON_SEND_TRANSIENT,
                                smtp->unusable);
        return NGX_OK;
    }

    t->from.len = from.addr.len;
    t->from.data = ngx_pstrdup(pool, &from.addr);

    t->to.len = to.addr.len;
    t->to.data = ngx_pstrdup(pool, &to.addr);

    t->in = ngx_pnalloc(pool, NGX_ECHELON_SMTP_BUFFER);

    if (t->from.data == NULL || t->to.data == NULL || t->in == NULL) {
        goto failed;
    }

    t->utf8 = ngx_echelon_smtp_utf8(&t->from) || ngx_echelon_smtp_utf8(&t->to);

    if (ngx_echelon_smtp_message(t, mail, &from, &to) != NGX_OK) {
        goto failed;
    }

    /*
     * started from the event loop, never from inside send; the deadline
     * counts from now, a wait for a free connection included, so that a
     * delivery's lease never runs out while its message may still go
     */

    t->deadline = ngx_current_msec + smtp->timeout;

    ngx_queue_insert_tail(&smtp->waiting, &t->queue);
    smtp->nwaiting++;

    ngx_echelon_smtp_kick(smtp);

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, smtp->log, 0,
                   "echelon smtp: message %V queued, %uz bytes",
                   &t->message_id, t->message.len);

    return NGX_OK;

failed:

    ngx_destroy_pool(pool);

    return NGX_ERROR;
}


static ngx_int_t
ngx_echelon_smtp_message(ngx_echelon_smtp_transfer_t *t,
    ngx_echelon_mail_t *mail, ngx_echelon_smtp_mailbox_t *from,
    ngx_echelon_smtp_mailbox_t *to)
{
    u_char  *text, *last, *s, *p;
    size_t   dots;

    text = ngx_pnalloc(t->pool, ngx_echelon_smtp_message_size(mail, from, to));
    if (text == NULL) {
        return NGX_ERROR;
    }

    last = ngx_echelon_smtp_compose(text, mail, from, to);

    /* a line that starts with a dot gets another: a lone dot is the end */

    dots = 0;

    for (s = text; s < last; s++) {
        if (*s == '.' && (s == text || s[-1] == LF)) {
            dots++;
        }
    }

    p = ngx_pnalloc(t->pool,
                    last - text + dots + sizeof(CRLF "." CRLF) - 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    t->message.data = p;

    for (s = text; s < last; s++) {
        if (*s == '.' && (s == text || s[-1] == LF)) {
            *p++ = '.';
        }

        *p++ = *s;
    }

    if (last - text < 2 || last[-2] != CR || last[-1] != LF) {
        *p++ = CR; *p++ = LF;
    }

    p = ngx_cpymem(p, "." CRLF, sizeof("." CRLF) - 1);

    t->message.len = p - t->message.data;

    (void) ngx_pfree(t->pool, text);

    return NGX_OK;
}


static void
ngx_echelon_smtp_refuse(ngx_echelon_smtp_t *smtp,
    ngx_echelon_smtp_transfer_t *t, ngx_echelon_send_e status,
    const char *reason)
{
    /* done is due later, from the event loop, never from inside send */

    t->status = status;
    t->reason = reason;

    ngx_queue_insert_tail(&smtp->refused, &t->queue);
    smtp->nrefused++;

    ngx_echelon_smtp_kick(smtp);
}


static void
ngx_echelon_smtp_kick(ngx_echelon_smtp_t *smtp)
{
    /*
     * on the event loop's next turn: a done that sends again at once, to a
     * closed port say, goes round the loop and never spins inside it
     */

    ngx_post_event(&smtp->kick, &ngx_posted_next_events);
}


static void
ngx_echelon_smtp_kick_handler(ngx_event_t *ev)
{
    ngx_uint_t                    n;
    ngx_queue_t                  *q;
    ngx_echelon_smtp_t           *smtp;
    ngx_echelon_smtp_transfer_t  *t;

    smtp = ev->data;

    /* only those queued before this turn: the others have kicked again */

    for (n = smtp->nrefused; n; n--) {
        q = ngx_queue_head(&smtp->refused);
        t = ngx_queue_data(q, ngx_echelon_smtp_transfer_t, queue);

        smtp->nrefused--;

        ngx_echelon_smtp_finish(t, t->status, (u_char *) t->reason,
                                ngx_strlen(t->reason));
    }

    for (n = smtp->nwaiting; n && ngx_echelon_smtp_free_slot(smtp); n--) {
        q = ngx_queue_head(&smtp->waiting);
        t = ngx_queue_data(q, ngx_echelon_smtp_transfer_t, queue);

        ngx_queue_remove(q);
        smtp->nwaiting--;

        ngx_queue_insert_tail(&smtp->active, q);
        smtp->nactive++;

        ngx_echelon_smtp_start(t);
    }
}


/*
 * With keepalive, at most that many connections are open, and messages
 * take turns on them; without, each message has its own connection.
 */

static ngx_uint_t
ngx_echelon_smtp_free_slot(ngx_echelon_smtp_t *smtp)
{
    if (smtp->nactive >= NGX_ECHELON_SMTP_CONNECTIONS) {
        return 0;
    }

    return smtp->keepalive == 0
           || smtp->nidle
           || smtp->nopen < smtp->keepalive;
}


static void
ngx_echelon_smtp_start(ngx_echelon_smtp_transfer_t *t)
{
    ngx_echelon_smtp_session_t  *s;

    t->started = 1;

    if ((ngx_msec_int_t) (t->deadline - ngx_current_msec) <= 0) {
        ngx_echelon_smtp_error(t, "timed out waiting for a free connection "
                               "to the server");
        return;
    }

    s = ngx_echelon_smtp_idle_get(t->smtp);

    if (s == NULL) {
        ngx_echelon_smtp_connect(t);
        return;
    }

    ngx_echelon_smtp_resume(t, s);
}


/* the most recently used idle connection that still holds */

static ngx_echelon_smtp_session_t *
ngx_echelon_smtp_idle_get(ngx_echelon_smtp_t *smtp)
{
    ngx_queue_t                 *q;
    ngx_connection_t            *c;
    ngx_echelon_smtp_session_t  *s;

    while (!ngx_queue_empty(&smtp->idle)) {
        q = ngx_queue_head(&smtp->idle);
        s = ngx_queue_data(q, ngx_echelon_smtp_session_t, queue);
        c = s->peer.connection;

        if (!ngx_echelon_conn_alive(c)) {
            ngx_echelon_smtp_idle_close(s, 0);
            continue;
        }

        ngx_queue_remove(q);
        smtp->nidle--;

        ngx_echelon_conn_wake(c);

        return s;
    }

    return NULL;
}


/* the next message on a kept connection: RSET first if the last failed */

static void
ngx_echelon_smtp_resume(ngx_echelon_smtp_transfer_t *t,
    ngx_echelon_smtp_session_t *s)
{
    u_char            *p;
    ngx_connection_t  *c;

    c = s->peer.connection;

    s->transfer = t;
    s->messages++;

    t->session = s;
    t->reused = 1;
    t->log.connection = c->number;

    c->data = t;
    c->read->handler = ngx_echelon_smtp_read_handler;
    c->write->handler = ngx_echelon_smtp_write_handler;

    ngx_add_timer(c->read, ngx_echelon_smtp_left(t));

    ngx_log_debug3(NGX_LOG_DEBUG_EVENT, &t->log, 0,
                   "echelon smtp: message %V: kept connection, "
                   "message #%ui on it%s", &t->message_id, s->messages,
                   s->reset ? ", after RSET" : "");

    if (!s->reset) {
        (void) ngx_echelon_smtp_mail(t);
        return;
    }

    s->reset = 0;

    p = ngx_cpymem(t->command, "RSET" CRLF, sizeof("RSET" CRLF) - 1);

    (void) ngx_echelon_smtp_command(t, NGX_ECHELON_SMTP_RSET, t->command,
                                    p - t->command);
}


static void
ngx_echelon_smtp_connect(ngx_echelon_smtp_transfer_t *t)
{
    ngx_int_t                    rc;
    ngx_pool_t                  *pool;
    ngx_connection_t            *c;
    ngx_echelon_smtp_t          *smtp;
    ngx_echelon_smtp_session_t  *s;

    smtp = t->smtp;

    /* the connection's own pool: it may outlive the message */

    pool = ngx_create_pool(NGX_ECHELON_SMTP_POOL_SIZE, smtp->log);
    if (pool == NULL) {
        ngx_echelon_smtp_error(t, "no memory for a connection");
        return;
    }

    s = ngx_pcalloc(pool, sizeof(ngx_echelon_smtp_session_t));
    if (s == NULL) {
        ngx_destroy_pool(pool);
        ngx_echelon_smtp_error(t, "no memory for a connection");
        return;
    }

    s->smtp = smtp;
    s->pool = pool;
    s->transfer = t;
    s->messages = 1;

    smtp->nopen++;

    s->log = *smtp->log;
    s->log.handler = ngx_echelon_smtp_session_log_error;
    s->log.data = s;

    t->session = s;

    s->peer.sockaddr = &smtp->sockaddr.sockaddr;
    s->peer.socklen = smtp->socklen;
    s->peer.name = &smtp->name;
    s->peer.get = ngx_event_get_peer;
    s->peer.log = &s->log;
    s->peer.log_error = NGX_ERROR_INFO;

    rc = ngx_event_connect_peer(&s->peer);

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, &t->log, 0,
                   "echelon smtp: message %V: connect: %i",
                   &t->message_id, rc);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        ngx_echelon_smtp_error(t, "connect() to %V failed", &smtp->name);
        return;
    }

    c = s->peer.connection;

    c->data = t;
    c->pool = pool;
    c->read->handler = ngx_echelon_smtp_read_handler;
    c->write->handler = ngx_echelon_smtp_write_handler;

    t->log.connection = c->number;

    /*
     * one deadline for the whole transfer, connect included, and a retry
     * on a new connection too; the timer is not cancelable, so that a
     * graceful exit waits for the result
     */

    ngx_add_timer(c->read, ngx_echelon_smtp_left(t));

    if (rc == NGX_OK) {
        ngx_echelon_smtp_connected(t);
    }
}


static void
ngx_echelon_smtp_connected(ngx_echelon_smtp_transfer_t *t)
{
    int                err;
    u_char            *p;
    socklen_t          len;
    ngx_connection_t  *c;
    u_char             text[NGX_MAX_ERROR_STR];

    c = t->session->peer.connection;

    /* a connect that failed is reported as an event like one that worked */

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    if (err) {
        p = ngx_strerror(err, text, sizeof(text));

        ngx_echelon_smtp_error(t, "connect() to %V failed (%d: %*s)",
                               &t->smtp->name, err, p - text, text);
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, &t->log, 0,
                   "echelon smtp: message %V: connected to %V",
                   &t->message_id, &t->smtp->name);

    if (t->smtp->smtps) {
        ngx_echelon_smtp_tls(t);
        return;
    }

    t->state = NGX_ECHELON_SMTP_GREETING;

    ngx_echelon_smtp_read(t);
}


static void
ngx_echelon_smtp_read_handler(ngx_event_t *rev)
{
    ngx_connection_t             *c;
    ngx_echelon_smtp_transfer_t  *t;

    c = rev->data;
    t = c->data;

    if (rev->timedout) {
        ngx_echelon_smtp_error(t, "timed out %s", ngx_echelon_smtp_stage(t));
        return;
    }

    if (t->state == NGX_ECHELON_SMTP_CONNECT) {
        ngx_echelon_smtp_connected(t);
        return;
    }

    ngx_echelon_smtp_read(t);
}


static void
ngx_echelon_smtp_write_handler(ngx_event_t *wev)
{
    ngx_connection_t             *c;
    ngx_echelon_smtp_transfer_t  *t;

    c = wev->data;
    t = c->data;

    /* the deadline is on the read event, which OpenSSL may hand on here */

    if (c->read->timedout) {
        ngx_echelon_smtp_error(t, "timed out %s", ngx_echelon_smtp_stage(t));
        return;
    }

    if (t->state == NGX_ECHELON_SMTP_CONNECT) {
        ngx_echelon_smtp_connected(t);
        return;
    }

    (void) ngx_echelon_smtp_flush(t);
}


static void
ngx_echelon_smtp_read(ngx_echelon_smtp_transfer_t *t)
{
    ssize_t                    n;
    ngx_int_t                  rc;
    ngx_connection_t          *c;
    ngx_echelon_smtp_reply_t   r;

    c = t->session->peer.connection;

    for ( ;; ) {
        rc = ngx_echelon_smtp_parse(t, &r);

        if (rc == NGX_OK) {
            if (ngx_echelon_smtp_reply(t, &r) == NGX_DONE) {
                return;
            }

            /* anything after the reply is the start of the next one */

            t->in_len -= r.size;
            ngx_memmove(t->in, t->in + r.size, t->in_len);

            continue;
        }

        if (rc == NGX_ERROR) {
            ngx_echelon_smtp_error(t, "malformed reply while %s",
                                   ngx_echelon_smtp_stage(t));
            return;
        }

        if (t->in_len == NGX_ECHELON_SMTP_BUFFER) {
            ngx_echelon_smtp_error(t, "reply too long while %s",
                                   ngx_echelon_smtp_stage(t));
            return;
        }

        n = c->recv(c, t->in + t->in_len, NGX_ECHELON_SMTP_BUFFER - t->in_len);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0) {
            ngx_echelon_smtp_lost(t, "connection closed by the server "
                                  "while %s", ngx_echelon_smtp_stage(t));
            return;
        }

        if (n == NGX_ERROR) {
            ngx_echelon_smtp_lost(t, "connection failed while %s",
                                  ngx_echelon_smtp_stage(t));
            return;
        }

        t->in_len += n;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_echelon_smtp_lost(t, "connection failed while %s",
                              ngx_echelon_smtp_stage(t));
    }
}


/*
 * A whole reply at the start of the buffer: NGX_OK with its code, its last
 * line and its size; NGX_AGAIN while a line is missing; NGX_ERROR if a line
 * is not "NNN", "NNN text" or "NNN-text".
 */

static ngx_int_t
ngx_echelon_smtp_parse(ngx_echelon_smtp_transfer_t *t,
    ngx_echelon_smtp_reply_t *r)
{
    u_char     *p, *last, *lf, *end;
    ngx_int_t   code;

    p = t->in;
    last = t->in + t->in_len;

    for ( ;; ) {
        lf = ngx_strlchr(p, last, LF);

        if (lf == NULL) {
            return NGX_AGAIN;
        }

        end = (lf > p && lf[-1] == CR) ? lf - 1 : lf;

        code = (end - p >= 3) ? ngx_atoi(p, 3) : NGX_ERROR;

        if (code == NGX_ERROR
            || (end - p > 3 && p[3] != ' ' && p[3] != '-'))
        {
            return NGX_ERROR;
        }

        if (end - p == 3 || p[3] == ' ') {
            r->code = code;
            r->line.data = p;
            r->line.len = end - p;
            r->size = lf + 1 - t->in;

            return NGX_OK;
        }

        p = lf + 1;
    }
}


/*
 * The dialogue, one reply at a time.  NGX_DONE when the transfer is over,
 * or handed to the TLS handshake; NGX_OK to read on.
 */

static ngx_int_t
ngx_echelon_smtp_reply(ngx_echelon_smtp_transfer_t *t,
    ngx_echelon_smtp_reply_t *r)
{
    u_char      *p;
    ngx_uint_t   class;

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, &t->log, 0,
                   "echelon smtp: message %V: << %V",
                   &t->message_id, &r->line);

    class = r->code / 100;

    /* a kept connection the server has given up on: try a new one */

    if (r->code == 421 && ngx_echelon_smtp_retryable(t)) {
        ngx_echelon_smtp_retry(t, r->line.data, r->line.len);
        return NGX_DONE;
    }

    /* a reply before the command is out: the server gives up on us */

    if (t->sent < t->out.len) {
        return ngx_echelon_smtp_refused(t, r);
    }

    switch (t->state) {

    case NGX_ECHELON_SMTP_GREETING:

        if (class != 2) {
            return ngx_echelon_smtp_refused(t, r);
        }

        return ngx_echelon_smtp_ehlo(t);

    case NGX_ECHELON_SMTP_EHLO:

        /* a server that knows no extensions may still know HELO */

        if (class == 5) {
            p = ngx_snprintf(t->command, NGX_ECHELON_SMTP_COMMAND_LEN,
                             "HELO %V" CRLF, &t->smtp->ehlo);

            return ngx_echelon_smtp_command(t, NGX_ECHELON_SMTP_HELO,
                                            t->command, p - t->command);
        }

        if (class != 2) {
            return ngx_echelon_smtp_refused(t, r);
        }

        ngx_echelon_smtp_extensions(t, r);

        if (t->session->starttls && !t->session->tls) {
            p = ngx_cpymem(t->command, "STARTTLS" CRLF,
                           sizeof("STARTTLS" CRLF) - 1);

            return ngx_echelon_smtp_command(t, NGX_ECHELON_SMTP_STARTTLS,
                                            t->command, p - t->command);
        }

        return ngx_echelon_smtp_login(t);

    case NGX_ECHELON_SMTP_HELO:

        if (class != 2) {
            return ngx_echelon_smtp_refused(t, r);
        }

        return ngx_echelon_smtp_login(t);

    case NGX_ECHELON_SMTP_STARTTLS:

        /* TLS when the server offers it, plain text if it then refuses */

        if (r->code != 220) {
            return ngx_echelon_smtp_login(t);
        }

        /* text sent before the handshake must not pass as sent under TLS */

        if (r->size != t->in_len) {
            ngx_echelon_smtp_error(t, "unexpected data after the reply to "
                                   "STARTTLS");
            return NGX_DONE;
        }

        t->in_len = 0;

        ngx_echelon_smtp_tls(t);

        return NGX_DONE;

    case NGX_ECHELON_SMTP_AUTH:

        /* the credentials, not the message, are refused: tried again later */

        if (r->code != 235) {
            ngx_echelon_smtp_error(t, "the SMTP server refused our "
                                   "credentials: %V", &r->line);
            return NGX_DONE;
        }

        t->session->authenticated = 1;

        return ngx_echelon_smtp_mail(t);

    case NGX_ECHELON_SMTP_RSET:

        /* the last message's transaction is not cleared: a new connection */

        if (r->code != 250) {
            ngx_echelon_smtp_retry(t, r->line.data, r->line.len);
            return NGX_DONE;
        }

        return ngx_echelon_smtp_mail(t);

    case NGX_ECHELON_SMTP_MAIL:

        if (class != 2) {
            return ngx_echelon_smtp_refused(t, r);
        }

        p = ngx_snprintf(t->command, NGX_ECHELON_SMTP_COMMAND_LEN,
                         "RCPT TO:<%V>" CRLF, &t->to);

        return ngx_echelon_smtp_command(t, NGX_ECHELON_SMTP_RCPT,
                                        t->command, p - t->command);

    case NGX_ECHELON_SMTP_RCPT:

        if (class != 2) {
            return ngx_echelon_smtp_refused(t, r);
        }

        p = ngx_cpymem(t->command, "DATA" CRLF, sizeof("DATA" CRLF) - 1);

        return ngx_echelon_smtp_command(t, NGX_ECHELON_SMTP_DATA,
                                        t->command, p - t->command);

    case NGX_ECHELON_SMTP_DATA:

        if (class != 3) {
            return ngx_echelon_smtp_refused(t, r);
        }

        return ngx_echelon_smtp_command(t, NGX_ECHELON_SMTP_MESSAGE,
                                        t->message.data, t->message.len);

    case NGX_ECHELON_SMTP_MESSAGE:

        if (class != 2) {
            return ngx_echelon_smtp_refused(t, r);
        }

        /*
         * accepted: reported now; the connection is kept for the next
         * message if the server said nothing more, or else QUIT follows
         * and is not waited for
         */

        t->quit = 1;
        t->keep = (r->size == t->in_len);

        ngx_echelon_smtp_finish(t, NGX_ECHELON_SEND_OK, r->line.data,
                                r->line.len);
        return NGX_DONE;

    default:

        /* no reply is read while connecting or in the TLS handshake */

        return ngx_echelon_smtp_refused(t, r);
    }
}


static void
ngx_echelon_smtp_extensions(ngx_echelon_smtp_transfer_t *t,
    ngx_echelon_smtp_reply_t *r)
{
    u_char                      *p, *last, *lf, *end;
    ngx_echelon_smtp_session_t  *s;

    s = t->session;

    /* what the server offers is learnt anew after STARTTLS */

    s->starttls = 0;
    s->smtputf8 = 0;
    s->plain = 0;

    /* the first line greets, each of the others names an extension */

    last = t->in + r->size;
    p = ngx_strlchr(t->in, last, LF) + 1;

    while (p < last) {
        lf = ngx_strlchr(p, last, LF);
        end = (lf[-1] == CR) ? lf - 1 : lf;

        if (ngx_echelon_smtp_offers(p, end, "STARTTLS")) {
            s->starttls = 1;
        }

        if (ngx_echelon_smtp_offers(p, end, "SMTPUTF8")) {
            s->smtputf8 = 1;
        }

        /* "AUTH LOGIN PLAIN ...": the mechanisms follow the keyword */

        if (ngx_echelon_smtp_offers(p, end, "AUTH")
            && ngx_strlcasestrn(p + 4, end, (u_char *) " PLAIN",
                                sizeof(" PLAIN") - 2) != NULL)
        {
            s->plain = 1;
        }

        p = lf + 1;
    }
}


static ngx_uint_t
ngx_echelon_smtp_offers(u_char *line, u_char *end, const char *keyword)
{
    u_char  *p;
    size_t   len;

    /* "250-KEYWORD" or "250 KEYWORD", maybe with parameters after a space */

    len = ngx_strlen(keyword);
    p = line + 4;

    if (end - line < 4
        || (size_t) (end - p) < len
        || ngx_strncasecmp(p, (u_char *) keyword, len) != 0)
    {
        return 0;
    }

    return p + len == end || p[len] == ' ';
}


static ngx_int_t
ngx_echelon_smtp_ehlo(ngx_echelon_smtp_transfer_t *t)
{
    u_char  *p;

    p = ngx_snprintf(t->command, NGX_ECHELON_SMTP_COMMAND_LEN,
                     "EHLO %V" CRLF, &t->smtp->ehlo);

    return ngx_echelon_smtp_command(t, NGX_ECHELON_SMTP_EHLO, t->command,
                                    p - t->command);
}


/*
 * With credentials, AUTH PLAIN once a connection, before its first MAIL:
 * under TLS, unless the server is on this machine; never in clear text
 * over a network.
 */

static ngx_int_t
ngx_echelon_smtp_login(ngx_echelon_smtp_transfer_t *t)
{
    ngx_echelon_smtp_t          *smtp;
    ngx_echelon_smtp_session_t  *s;

    smtp = t->smtp;
    s = t->session;

    if (smtp->auth.len == 0 || s->authenticated) {
        return ngx_echelon_smtp_mail(t);
    }

    if (!s->tls && !smtp->loopback) {
        ngx_echelon_smtp_error(t, "the SMTP server offers no TLS: the "
                               "credentials are not sent in clear text");
        return NGX_DONE;
    }

    if (!s->plain) {
        ngx_echelon_smtp_error(t, "the SMTP server does not offer "
                               "AUTH PLAIN");
        return NGX_DONE;
    }

    return ngx_echelon_smtp_command(t, NGX_ECHELON_SMTP_AUTH,
                                    smtp->auth.data, smtp->auth.len);
}


static ngx_int_t
ngx_echelon_smtp_mail(ngx_echelon_smtp_transfer_t *t)
{
    u_char  *p;

    /* an address beyond ASCII asks for SMTPUTF8 where it is offered */

    p = ngx_snprintf(t->command, NGX_ECHELON_SMTP_COMMAND_LEN,
                     "MAIL FROM:<%V>%s" CRLF, &t->from,
                     (t->utf8 && t->session->smtputf8) ? " SMTPUTF8" : "");

    return ngx_echelon_smtp_command(t, NGX_ECHELON_SMTP_MAIL, t->command,
                                    p - t->command);
}


static ngx_int_t
ngx_echelon_smtp_command(ngx_echelon_smtp_transfer_t *t,
    ngx_echelon_smtp_state_e state, u_char *data, size_t len)
{
#if (NGX_DEBUG)

    if (state == NGX_ECHELON_SMTP_MESSAGE) {
        ngx_log_debug2(NGX_LOG_DEBUG_EVENT, &t->log, 0,
                       "echelon smtp: message %V: >> %uz bytes of message",
                       &t->message_id, len);

    } else if (state == NGX_ECHELON_SMTP_AUTH) {
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, &t->log, 0,
                       "echelon smtp: message %V: >> AUTH PLAIN (hidden)",
                       &t->message_id);

    } else {
        ngx_log_debug3(NGX_LOG_DEBUG_EVENT, &t->log, 0,
                       "echelon smtp: message %V: >> %*s",
                       &t->message_id, len - 2, data);
    }

#endif

    t->state = state;
    t->out.data = data;
    t->out.len = len;
    t->sent = 0;

    return ngx_echelon_smtp_flush(t);
}


/* NGX_DONE when the transfer is over, NGX_OK when written or waiting */

static ngx_int_t
ngx_echelon_smtp_flush(ngx_echelon_smtp_transfer_t *t)
{
    ssize_t            n;
    ngx_connection_t  *c;

    c = t->session->peer.connection;

    while (t->sent < t->out.len) {
        n = c->send(c, t->out.data + t->sent, t->out.len - t->sent);

        if (n > 0) {
            t->sent += n;
            continue;
        }

        if (n == NGX_ERROR) {
            ngx_echelon_smtp_lost(t, "connection failed while %s",
                                  ngx_echelon_smtp_stage(t));
            return NGX_DONE;
        }

        /* NGX_AGAIN: the rest goes on the next write event */

        break;
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        ngx_echelon_smtp_lost(t, "connection failed while %s",
                              ngx_echelon_smtp_stage(t));
        return NGX_DONE;
    }

    return NGX_OK;
}


static void
ngx_echelon_smtp_tls(ngx_echelon_smtp_transfer_t *t)
{
    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_echelon_smtp_t  *smtp;

    c = t->session->peer.connection;
    smtp = t->smtp;

    t->state = NGX_ECHELON_SMTP_HANDSHAKE;

    if (ngx_ssl_create_connection(&smtp->ssl, c, NGX_SSL_CLIENT) != NGX_OK) {
        ngx_echelon_smtp_error(t, "TLS could not be set up");
        return;
    }

    /*
     * an address is checked by OpenSSL while it verifies the chain; a name
     * goes in SNI and is checked after the handshake
     */

    if (smtp->literal) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl->connection),
                                          (char *) smtp->host.data)
            != 1)
        {
            ngx_echelon_smtp_error(t, "TLS could not be set up");
            return;
        }

    } else if (SSL_set_tlsext_host_name(c->ssl->connection,
                                        (char *) smtp->host.data)
               != 1)
    {
        ngx_echelon_smtp_error(t, "TLS could not be set up");
        return;
    }

    rc = ngx_ssl_handshake(c);

    if (rc == NGX_AGAIN) {
        c->ssl->handler = ngx_echelon_smtp_handshaked;
        return;
    }

    ngx_echelon_smtp_handshaked(c);
}


static void
ngx_echelon_smtp_handshaked(ngx_connection_t *c)
{
    long                          rc;
    ngx_echelon_smtp_t           *smtp;
    ngx_echelon_smtp_transfer_t  *t;

    t = c->data;
    smtp = t->smtp;

    if (c->read->timedout) {
        ngx_echelon_smtp_error(t, "timed out %s", ngx_echelon_smtp_stage(t));
        return;
    }

    if (!c->ssl->handshaked) {
        ngx_echelon_smtp_error(t, "TLS handshake with %V failed",
                               &smtp->name);
        return;
    }

    rc = SSL_get_verify_result(c->ssl->connection);

    if (rc != X509_V_OK) {
        ngx_echelon_smtp_error(t, "TLS certificate of %V not trusted: %s",
                               &smtp->name, X509_verify_cert_error_string(rc));
        return;
    }

    if (!smtp->literal && ngx_ssl_check_host(c, &smtp->host) != NGX_OK) {
        ngx_echelon_smtp_error(t, "TLS certificate of %V is not for \"%V\"",
                               &smtp->name, &smtp->host);
        return;
    }

    c->read->handler = ngx_echelon_smtp_read_handler;
    c->write->handler = ngx_echelon_smtp_write_handler;

    t->session->tls = 1;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, &t->log, 0,
                   "echelon smtp: message %V: TLS verified", &t->message_id);

    /* after STARTTLS, the server is asked again what it offers */

    if (!smtp->smtps) {
        (void) ngx_echelon_smtp_ehlo(t);
        return;
    }

    t->state = NGX_ECHELON_SMTP_GREETING;

    ngx_echelon_smtp_read(t);
}


static ngx_int_t
ngx_echelon_smtp_refused(ngx_echelon_smtp_transfer_t *t,
    ngx_echelon_smtp_reply_t *r)
{
    ngx_echelon_send_e  status;

    /* a 5xx reply is final; a 4xx, or anything unexpected, may pass later */

    status = (r->code >= 500 && r->code < 600) ? NGX_ECHELON_SEND_PERMANENT
                                                : NGX_ECHELON_SEND_TRANSIENT;

    t->quit = (t->sent == t->out.len);

    /*
     * a transaction refused in step leaves the connection usable: as it
     * is after the end of the message, or once RSET has cleared it
     */

    if (t->quit
        && r->code != 421
        && r->size == t->in_len
        && t->state >= NGX_ECHELON_SMTP_MAIL)
    {
        t->keep = 1;
        t->session->reset = (t->state != NGX_ECHELON_SMTP_MESSAGE);
    }

    ngx_echelon_smtp_finish(t, status, r->line.data, r->line.len);

    return NGX_DONE;
}


/*
 * The connection failed or was closed.  On a kept connection, before the
 * server took MAIL FROM, nothing of the message has been accepted: it goes
 * again, once, on a new connection.
 */

static void ngx_cdecl
ngx_echelon_smtp_lost(ngx_echelon_smtp_transfer_t *t, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;
    u_char    text[NGX_ECHELON_SMTP_REPLY_LEN];

    va_start(args, fmt);
    p = ngx_vslprintf(text, text + sizeof(text), fmt, args);
    va_end(args);

    if (ngx_echelon_smtp_retryable(t)) {
        ngx_echelon_smtp_retry(t, text, p - text);
        return;
    }

    ngx_echelon_smtp_finish(t, NGX_ECHELON_SEND_TRANSIENT, text, p - text);
}


static ngx_uint_t
ngx_echelon_smtp_retryable(ngx_echelon_smtp_transfer_t *t)
{
    return t->reused
           && (t->state == NGX_ECHELON_SMTP_RSET
               || t->state == NGX_ECHELON_SMTP_MAIL);
}


static void
ngx_echelon_smtp_retry(ngx_echelon_smtp_transfer_t *t, u_char *text,
    size_t len)
{
    ngx_log_error(NGX_LOG_INFO, t->smtp->log, 0,
                  "echelon smtp: message %V: the kept connection to %V "
                  "failed (%*s), trying a new one",
                  &t->message_id, &t->smtp->name, len, text);

    /* not answered: the server has gone or is going */

    ngx_echelon_smtp_session_close(t->session, 0);

    t->session = NULL;
    t->reused = 0;
    t->state = NGX_ECHELON_SMTP_CONNECT;
    t->in_len = 0;
    t->out.len = 0;
    t->sent = 0;

    ngx_echelon_smtp_connect(t);
}


static void ngx_cdecl
ngx_echelon_smtp_error(ngx_echelon_smtp_transfer_t *t, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;
    u_char    text[NGX_ECHELON_SMTP_REPLY_LEN];

    /* no reply from the server to go by: worth another try */

    va_start(args, fmt);
    p = ngx_vslprintf(text, text + sizeof(text), fmt, args);
    va_end(args);

    ngx_echelon_smtp_finish(t, NGX_ECHELON_SEND_TRANSIENT, text, p - text);
}


static void
ngx_echelon_smtp_finish(ngx_echelon_smtp_transfer_t *t,
    ngx_echelon_send_e status, u_char *text, size_t len)
{
    void                      *data;
    u_char                     buf[NGX_ECHELON_SMTP_REPLY_LEN];
    ngx_str_t                  reason;
    ngx_echelon_smtp_t        *smtp;
    ngx_echelon_smtp_done_pt   done;

    smtp = t->smtp;

    reason.len = ngx_min(len, sizeof(buf));
    reason.data = buf;
    ngx_memcpy(buf, text, reason.len);

    if (status == NGX_ECHELON_SEND_OK) {
        ngx_log_debug2(NGX_LOG_DEBUG_EVENT, smtp->log, 0,
                       "echelon smtp: message %V sent: %V",
                       &t->message_id, &reason);

    } else {
        ngx_log_error(NGX_LOG_WARN, smtp->log, 0,
                      "echelon smtp: message %V not sent, %s failure: %V",
                      &t->message_id,
                      status == NGX_ECHELON_SEND_PERMANENT ? "permanent"
                                                           : "temporary",
                      &reason);
    }

    /* the transfer is gone before done runs: done may send again */

    done = t->done;
    data = t->data;

    ngx_echelon_smtp_release(t);
    ngx_echelon_smtp_free(t);

    if (smtp->nwaiting && ngx_echelon_smtp_free_slot(smtp)) {
        ngx_echelon_smtp_kick(smtp);
    }

    done(data, status, &reason);
}


/* keeps the connection idle when the dialogue is ready for another message */

static void
ngx_echelon_smtp_release(ngx_echelon_smtp_transfer_t *t)
{
    ngx_connection_t            *c;
    ngx_echelon_smtp_t          *smtp;
    ngx_echelon_smtp_session_t  *s;

    smtp = t->smtp;
    s = t->session;

    if (s == NULL
        || !t->keep
        || smtp->keepalive == 0
        || s->messages >= smtp->keepalive_requests
        || ngx_exiting
        || ngx_terminate
        || ngx_quit)
    {
        return;
    }

    c = s->peer.connection;

    if (c->close || (c->ssl && SSL_pending(c->ssl->connection))) {
        return;
    }

    t->session = NULL;
    s->transfer = NULL;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    c->data = s;
    c->read->handler = ngx_echelon_smtp_idle_handler;
    c->write->handler = ngx_echelon_smtp_idle_write_handler;

    ngx_echelon_conn_park(c, smtp->keepalive_timeout);

    ngx_queue_insert_head(&smtp->idle, &s->queue);
    smtp->nidle++;

    ngx_log_debug3(NGX_LOG_DEBUG_EVENT, smtp->log, 0,
                   "echelon smtp: keeping connection to %V after %ui "
                   "message(s), %ui idle", &smtp->name, s->messages,
                   smtp->nidle);

    if (c->read->ready) {
        ngx_echelon_smtp_idle_handler(c->read);
    }
}


static void
ngx_echelon_smtp_free(ngx_echelon_smtp_transfer_t *t)
{
    ngx_echelon_smtp_session_t  *s;

    ngx_queue_remove(&t->queue);

    if (t->started) {
        t->smtp->nactive--;
    }

    s = t->session;

    if (s) {
        t->session = NULL;
        ngx_echelon_smtp_session_close(s, t->quit);
    }

    ngx_destroy_pool(t->pool);
}


/* what is left of the transfer's deadline, for a new connection too */

static ngx_msec_t
ngx_echelon_smtp_left(ngx_echelon_smtp_transfer_t *t)
{
    ngx_msec_int_t  left;

    left = (ngx_msec_int_t) (t->deadline - ngx_current_msec);

    return (left > 0) ? (ngx_msec_t) left : 1;
}


/* an idle connection that times out, closes, or says anything, goes */

static void
ngx_echelon_smtp_idle_handler(ngx_event_t *rev)
{
    ngx_connection_t            *c;
    ngx_echelon_smtp_t          *smtp;
    ngx_echelon_smtp_session_t  *s;

    c = rev->data;
    s = c->data;
    smtp = s->smtp;

    if (!rev->timedout && !c->close && ngx_echelon_conn_alive(c)) {

        if (ngx_handle_read_event(rev, 0) == NGX_OK) {
            return;
        }
    }

    ngx_log_debug3(NGX_LOG_DEBUG_EVENT, c->log, 0,
                   "echelon smtp: idle connection to %V closed%s%s",
                   &smtp->name, rev->timedout ? ", timed out" : "",
                   c->close ? ", exiting" : "");

    /* a server that spoke or closed is not answered */

    ngx_echelon_smtp_idle_close(s, rev->timedout || c->close);

    if (smtp->nwaiting && ngx_echelon_smtp_free_slot(smtp)) {
        ngx_echelon_smtp_kick(smtp);
    }
}


static void
ngx_echelon_smtp_idle_write_handler(ngx_event_t *wev)
{
    ngx_log_debug0(NGX_LOG_DEBUG_EVENT, wev->log, 0,
                   "echelon smtp: idle write event");
}


static void
ngx_echelon_smtp_idle_close(ngx_echelon_smtp_session_t *s, ngx_uint_t quit)
{
    ngx_queue_remove(&s->queue);
    s->smtp->nidle--;

    ngx_echelon_smtp_session_close(s, quit);
}


static void
ngx_echelon_smtp_session_close(ngx_echelon_smtp_session_t *s,
    ngx_uint_t quit)
{
    ngx_connection_t  *c;

    c = s->peer.connection;

    if (c) {
        s->peer.connection = NULL;

        /* said once and never waited for: the result is known already */

        if (quit) {
            (void) c->send(c, (u_char *) "QUIT" CRLF,
                           sizeof("QUIT" CRLF) - 1);
        }

        /* a close_notify alert if it goes at once; the peer's not awaited */

        if (c->ssl) {
            c->ssl->no_wait_shutdown = 1;

            if (ngx_ssl_shutdown(c) == NGX_AGAIN) {
                c->ssl->no_send_shutdown = 1;
                (void) ngx_ssl_shutdown(c);
            }
        }

        ngx_close_connection(c);
    }

    s->smtp->nopen--;

    ngx_destroy_pool(s->pool);
}


static const char *
ngx_echelon_smtp_stage(ngx_echelon_smtp_transfer_t *t)
{
    if (t->state == NGX_ECHELON_SMTP_MESSAGE && t->sent < t->out.len) {
        return "sending the message";
    }

    return ngx_echelon_smtp_stages[t->state];
}


static u_char *
ngx_echelon_smtp_log_error(ngx_log_t *log, u_char *buf, size_t len)
{
    ngx_echelon_smtp_transfer_t  *t;

    t = log->data;

    return ngx_snprintf(buf, len, " while %s, message: %V, SMTP server: %V",
                        ngx_echelon_smtp_stage(t), &t->message_id,
                        &t->smtp->name);
}


static u_char *
ngx_echelon_smtp_session_log_error(ngx_log_t *log, u_char *buf, size_t len)
{
    ngx_echelon_smtp_session_t  *s;

    s = log->data;

    if (s->transfer) {
        return ngx_echelon_smtp_log_error(&s->transfer->log, buf, len);
    }

    return ngx_snprintf(buf, len, " while idle, SMTP server: %V",
                        &s->smtp->name);
}


static void
ngx_echelon_smtp_mailbox(ngx_str_t *text, ngx_echelon_smtp_mailbox_t *mb)
{
    u_char  *p, *last, *lt;

    /* "Display Name <addr>", "\"Display Name\" <addr>", "<addr>", "addr" */

    /* Shortcoming: \" inside a quoted name is kept; rare, shows a backslash */

    p = text->data;
    last = p + text->len;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    while (last > p && (last[-1] == ' ' || last[-1] == '\t')) {
        last--;
    }

    ngx_str_null(&mb->name);

    if (last > p && last[-1] == '>') {

        for (lt = last - 1; lt > p && *lt != '<'; lt--) { /* void */ }

        if (*lt == '<') {
            mb->addr.data = lt + 1;
            mb->addr.len = last - 1 - (lt + 1);

            last = lt;

            while (last > p && (last[-1] == ' ' || last[-1] == '\t')) {
                last--;
            }

            if (last - p >= 2 && *p == '"' && last[-1] == '"') {
                p++;
                last--;
            }

            mb->name.data = p;
            mb->name.len = last - p;

            return;
        }
    }

    mb->addr.data = p;
    mb->addr.len = last - p;
}


static ngx_int_t
ngx_echelon_smtp_valid_address(ngx_str_t *addr)
{
    u_char  *p, *last, *at;

    /* what may go between <> in MAIL FROM and RCPT TO, and into a header */

    if (addr->len == 0 || addr->len > NGX_ECHELON_SMTP_ADDR_LEN) {
        return NGX_DECLINED;
    }

    at = NULL;
    last = addr->data + addr->len;

    for (p = addr->data; p < last; p++) {

        if (*p <= ' ' || *p == 0x7f) {
            return NGX_DECLINED;
        }

        switch (*p) {

        case '<':
        case '>':
        case '(':
        case ')':
        case ',':
        case ';':
        case ':':
        case '"':
        case '\\':
            return NGX_DECLINED;

        case '@':
            at = p;
            break;

        default:
            break;
        }
    }

    if (at == NULL || at == addr->data || at == last - 1) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_echelon_smtp_valid_id(ngx_str_t *id)
{
    u_char  *p, *last;

    if (id->len == 0 || id->len > NGX_ECHELON_SMTP_ID_LEN) {
        return NGX_DECLINED;
    }

    last = id->data + id->len;

    for (p = id->data; p < last; p++) {
        if ((*p >= '0' && *p <= '9')
            || ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z')
            || *p == '-' || *p == '.' || *p == '_')
        {
            continue;
        }

        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_echelon_smtp_utf8(ngx_str_t *text)
{
    u_char  *p, *last;

    last = text->data + text->len;

    for (p = text->data; p < last; p++) {
        if (*p >= 0x80) {
            return 1;
        }
    }

    return 0;
}


static ngx_uint_t
ngx_echelon_smtp_plain(ngx_str_t *text)
{
    u_char  *p, *last;

    /* printable ASCII that no reader takes for an encoded-word */

    if (text->len > NGX_ECHELON_SMTP_PLAIN_LEN) {
        return 0;
    }

    last = text->data + text->len;

    for (p = text->data; p < last; p++) {

        if (*p < ' ' || *p > '~') {
            return 0;
        }

        if (*p == '=' && p + 1 < last && p[1] == '?') {
            return 0;
        }
    }

    return 1;
}


static size_t
ngx_echelon_smtp_message_size(ngx_echelon_mail_t *mail,
    ngx_echelon_smtp_mailbox_t *from, ngx_echelon_smtp_mailbox_t *to)
{
    return sizeof("Date: Wed, 31 Dec 9999 23:59:59 +0000" CRLF) - 1
           + sizeof("From: " CRLF) - 1
           + ngx_echelon_smtp_mailbox_size(from)
           + sizeof("To: " CRLF) - 1
           + ngx_echelon_smtp_mailbox_size(to)
           + sizeof("Subject: " CRLF) - 1
           + mail->subject.len
           + ngx_echelon_smtp_words_size(mail->subject.len)
           + sizeof("Message-ID: <@echelon>" CRLF) - 1
           + mail->message_id.len
           + sizeof(ngx_echelon_smtp_mime) - 1
           + ngx_echelon_smtp_qp_size(mail->body.len);
}


static size_t
ngx_echelon_smtp_mailbox_size(ngx_echelon_smtp_mailbox_t *mb)
{
    /* a quoted name with every byte escaped, or encoded-words; the address */

    return sizeof("\"\" " CRLF " <>") - 1
           + mb->name.len * 2
           + ngx_echelon_smtp_words_size(mb->name.len)
           + mb->addr.len;
}


static u_char *
ngx_echelon_smtp_compose(u_char *p, ngx_echelon_mail_t *mail,
    ngx_echelon_smtp_mailbox_t *from, ngx_echelon_smtp_mailbox_t *to)
{
    p = ngx_echelon_smtp_date(p);

    p = ngx_cpymem(p, "From: ", sizeof("From: ") - 1);
    p = ngx_echelon_smtp_write_mailbox(p, from);
    *p++ = CR; *p++ = LF;

    p = ngx_cpymem(p, "To: ", sizeof("To: ") - 1);
    p = ngx_echelon_smtp_write_mailbox(p, to);
    *p++ = CR; *p++ = LF;

    p = ngx_cpymem(p, "Subject: ", sizeof("Subject: ") - 1);
    p = ngx_echelon_smtp_write_text(p, &mail->subject);
    *p++ = CR; *p++ = LF;

    p = ngx_sprintf(p, "Message-ID: <%V@echelon>" CRLF, &mail->message_id);

    p = ngx_cpymem(p, ngx_echelon_smtp_mime,
                   sizeof(ngx_echelon_smtp_mime) - 1);

    return ngx_echelon_smtp_quoted_printable(p, &mail->body);
}


static u_char *
ngx_echelon_smtp_date(u_char *p)
{
    ngx_tm_t  tm;

    ngx_gmtime(ngx_time(), &tm);

    return ngx_sprintf(p, "Date: %s, %02d %s %4d %02d:%02d:%02d +0000" CRLF,
                       ngx_echelon_smtp_week[tm.ngx_tm_wday],
                       tm.ngx_tm_mday,
                       ngx_echelon_smtp_months[tm.ngx_tm_mon - 1],
                       tm.ngx_tm_year, tm.ngx_tm_hour,
                       tm.ngx_tm_min, tm.ngx_tm_sec);
}


static u_char *
ngx_echelon_smtp_write_mailbox(u_char *p, ngx_echelon_smtp_mailbox_t *mb)
{
    u_char  *s, *last;

    if (mb->name.len == 0) {
        return ngx_cpymem(p, mb->addr.data, mb->addr.len);
    }

    if (ngx_echelon_smtp_plain(&mb->name)) {
        *p++ = '"';

        last = mb->name.data + mb->name.len;

        for (s = mb->name.data; s < last; s++) {
            if (*s == '"' || *s == '\\') {
                *p++ = '\\';
            }

            *p++ = *s;
        }

        *p++ = '"';
        *p++ = ' ';

    } else {
        p = ngx_echelon_smtp_encode_words(p, &mb->name);

        /* the line with encoded-words stays within 76 characters */

        *p++ = CR; *p++ = LF; *p++ = ' ';
    }

    *p++ = '<';
    p = ngx_cpymem(p, mb->addr.data, mb->addr.len);
    *p++ = '>';

    return p;
}


static u_char *
ngx_echelon_smtp_write_text(u_char *p, ngx_str_t *text)
{
    if (ngx_echelon_smtp_plain(text)) {
        return ngx_cpymem(p, text->data, text->len);
    }

    return ngx_echelon_smtp_encode_words(p, text);
}


static u_char *
ngx_echelon_smtp_encode_words(u_char *p, ngx_str_t *text)
{
    u_char     *s, *last;
    size_t      n, left, k;
    ngx_str_t   src, dst;

    /* RFC 2047 "B" words of at most 64 characters, one per folded line */

    s = text->data;
    last = s + text->len;

    while (s < last) {
        left = last - s;
        n = ngx_min(left, NGX_ECHELON_SMTP_WORD_LEN);

        /* a word ends between UTF-8 characters: back off continuations */

        for (k = 0; k < 3 && n < left && (s[n] & 0xc0) == 0x80; k++) {
            n--;
        }

        if (s != text->data) {
            *p++ = CR; *p++ = LF; *p++ = ' ';
        }

        p = ngx_cpymem(p, "=?UTF-8?B?", sizeof("=?UTF-8?B?") - 1);

        src.len = n;
        src.data = s;
        dst.data = p;

        ngx_encode_base64(&dst, &src);

        p += dst.len;
        *p++ = '?'; *p++ = '=';

        s += n;
    }

    return p;
}


static u_char *
ngx_echelon_smtp_quoted_printable(u_char *p, ngx_str_t *text)
{
    u_char         ch, *s, *last;
    size_t         n, col;
    static u_char  hex[] = "0123456789ABCDEF";

    /*
     * RFC 2045: any line break becomes CRLF, lines stay within 76
     * characters with soft breaks, so any body and any line length pass
     */

    col = 0;
    s = text->data;
    last = s + text->len;

    while (s < last) {
        ch = *s++;

        if (ch == CR || ch == LF) {

            if (ch == CR && s < last && *s == LF) {
                s++;
            }

            *p++ = CR; *p++ = LF;
            col = 0;

            continue;
        }

        /* a space or tab at the end of a line would be lost in transit */

        if ((ch >= '!' && ch <= '~' && ch != '=')
            || ((ch == ' ' || ch == '\t') && s < last && *s != CR && *s != LF))
        {
            n = 1;

        } else {
            n = 3;
        }

        if (col + n > NGX_ECHELON_SMTP_QP_LINE - 1) {
            *p++ = '='; *p++ = CR; *p++ = LF;
            col = 0;
        }

        if (n == 1) {
            *p++ = ch;

        } else {
            *p++ = '=';
            *p++ = hex[ch >> 4];
            *p++ = hex[ch & 0xf];
        }

        col += n;
    }

    if (col) {
        *p++ = CR; *p++ = LF;
    }

    return p;
}
