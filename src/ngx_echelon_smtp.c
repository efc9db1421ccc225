
/*
 * Copyright (C) Echelon
 *
 * SMTP through libcurl's multi-socket interface, driven by the event loop
 * of one worker: curl's sockets are watched as nginx connections, curl's
 * timeout is one nginx timer, and a finished transfer is reported from an
 * nginx event handler, never from inside curl.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <curl/curl.h>

#include "ngx_echelon.h"


#define NGX_ECHELON_SMTP_TIMEOUT          30000
#define NGX_ECHELON_SMTP_CONNECT_TIMEOUT  10000
#define NGX_ECHELON_SMTP_CONNECTIONS      32

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


typedef struct {
    ngx_connection_t              *connection;
    ngx_file_uniq_t                inode;
    unsigned                       owned:1;
} ngx_echelon_smtp_socket_t;


struct ngx_echelon_smtp_s {
    CURLM                         *multi;
    CURL                          *template;
    ngx_log_t                     *log;

    ngx_connection_t               dummy;       /* the timers' data */
    ngx_event_t                    timer;       /* curl's timeout */
    ngx_event_t                    refuse;      /* reports refused mail */

    ngx_queue_t                    transfers;   /* handed to curl */
    ngx_queue_t                    refused;     /* never handed to curl */

    ngx_echelon_smtp_socket_t     *sockets;     /* by descriptor */
    ngx_uint_t                     nsockets;
};


typedef struct {
    ngx_queue_t                    queue;
    ngx_echelon_smtp_t            *smtp;

    CURL                          *easy;
    struct curl_slist             *rcpt;

    ngx_echelon_smtp_done_pt       done;
    void                          *data;

    ngx_str_t                      message_id;
    ngx_str_t                      message;
    size_t                         sent;

    const char                    *refusal;

    size_t                         reply_len;
    u_char                         reply[NGX_ECHELON_SMTP_REPLY_LEN];
    char                           error[CURL_ERROR_SIZE];

    unsigned                       quit:1;
} ngx_echelon_smtp_transfer_t;


typedef struct {
    ngx_str_t                      name;
    ngx_str_t                      addr;
} ngx_echelon_smtp_mailbox_t;


static CURL *ngx_echelon_smtp_template(ngx_echelon_smtp_t *smtp,
    ngx_echelon_main_conf_t *emcf);
static ngx_int_t ngx_echelon_smtp_start(ngx_echelon_smtp_t *smtp,
    ngx_echelon_smtp_transfer_t *t, ngx_str_t *from, ngx_str_t *to);
static void ngx_echelon_smtp_refuse(ngx_echelon_smtp_t *smtp,
    ngx_echelon_smtp_transfer_t *t, const char *reason);
static void ngx_echelon_smtp_refuse_handler(ngx_event_t *ev);
static void ngx_echelon_smtp_event_handler(ngx_event_t *ev);
static void ngx_echelon_smtp_timer_handler(ngx_event_t *ev);
static void ngx_echelon_smtp_action(ngx_echelon_smtp_t *smtp, ngx_socket_t fd,
    int mask);
static void ngx_echelon_smtp_finish(ngx_echelon_smtp_transfer_t *t,
    CURLcode result);
static void ngx_echelon_smtp_complete(ngx_echelon_smtp_transfer_t *t,
    ngx_echelon_send_e status, u_char *text, size_t len);
static void ngx_echelon_smtp_free(ngx_echelon_smtp_transfer_t *t);

static int ngx_echelon_smtp_socket_callback(CURL *easy, curl_socket_t fd,
    int what, void *userp, void *socketp);
static int ngx_echelon_smtp_timer_callback(CURLM *multi, long timeout_ms,
    void *userp);
static curl_socket_t ngx_echelon_smtp_open_socket(void *userp,
    curlsocktype purpose, struct curl_sockaddr *addr);
static int ngx_echelon_smtp_close_socket(void *userp, curl_socket_t fd);
static size_t ngx_echelon_smtp_read(char *buf, size_t size, size_t n,
    void *userp);
static int ngx_echelon_smtp_seek(void *userp, curl_off_t offset, int origin);
static int ngx_echelon_smtp_debug(CURL *easy, curl_infotype type, char *data,
    size_t size, void *userp);

static ngx_echelon_smtp_socket_t *ngx_echelon_smtp_socket_add(
    ngx_echelon_smtp_t *smtp, ngx_socket_t fd, ngx_uint_t owned);
static ngx_echelon_smtp_socket_t *ngx_echelon_smtp_socket_get(
    ngx_echelon_smtp_t *smtp, ngx_socket_t fd);
static ngx_echelon_smtp_socket_t *ngx_echelon_smtp_socket_find(
    ngx_echelon_smtp_t *smtp, ngx_socket_t fd);
static ngx_int_t ngx_echelon_smtp_socket_watch(ngx_echelon_smtp_socket_t *s,
    int what);
static void ngx_echelon_smtp_socket_release(ngx_echelon_smtp_socket_t *s,
    ngx_uint_t closed);
static ngx_uint_t ngx_echelon_smtp_socket_alive(ngx_echelon_smtp_socket_t *s);
static ngx_file_uniq_t ngx_echelon_smtp_socket_inode(ngx_socket_t fd);
static void ngx_echelon_smtp_socket_sweep(ngx_echelon_smtp_t *smtp);

static void ngx_echelon_smtp_mailbox(ngx_str_t *text,
    ngx_echelon_smtp_mailbox_t *mb);
static ngx_int_t ngx_echelon_smtp_valid_address(ngx_str_t *addr);
static ngx_int_t ngx_echelon_smtp_valid_id(ngx_str_t *id);
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


ngx_echelon_smtp_t *
ngx_echelon_smtp_create(ngx_cycle_t *cycle, ngx_echelon_main_conf_t *emcf)
{
    ngx_str_t               *url;
    ngx_echelon_smtp_t      *smtp;
    curl_version_info_data  *info;

    /* curl_global_init() has run once, in the master, from the module's init */

    url = &emcf->smtp_url;

    if (!(url->len > sizeof("smtp://") - 1
          && ngx_strncasecmp(url->data, (u_char *) "smtp://",
                             sizeof("smtp://") - 1) == 0)
        && !(url->len > sizeof("smtps://") - 1
             && ngx_strncasecmp(url->data, (u_char *) "smtps://",
                                sizeof("smtps://") - 1) == 0))
    {
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                      "echelon smtp: \"echelon_smtp_url\" must start with "
                      "smtp:// or smtps://");
        return NULL;
    }

    info = curl_version_info(CURLVERSION_NOW);

    if (!(info->features & CURL_VERSION_ASYNCHDNS)) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "echelon smtp: libcurl %s resolves host names "
                      "blocking the worker, give \"echelon_smtp_url\" "
                      "an IP address", info->version);
    }

    smtp = ngx_calloc(sizeof(ngx_echelon_smtp_t), cycle->log);
    if (smtp == NULL) {
        return NULL;
    }

    smtp->log = cycle->log;

    ngx_queue_init(&smtp->transfers);
    ngx_queue_init(&smtp->refused);

    /* nginx's debug log takes a timer's data for a connection */

    smtp->dummy.fd = (ngx_socket_t) -1;
    smtp->dummy.data = smtp;

    smtp->timer.handler = ngx_echelon_smtp_timer_handler;
    smtp->timer.data = &smtp->dummy;
    smtp->timer.log = smtp->log;
    smtp->timer.cancelable = 1;

    smtp->refuse.handler = ngx_echelon_smtp_refuse_handler;
    smtp->refuse.data = &smtp->dummy;
    smtp->refuse.log = smtp->log;
    smtp->refuse.cancelable = 1;

    smtp->multi = curl_multi_init();
    if (smtp->multi == NULL) {
        ngx_log_error(NGX_LOG_ERR, smtp->log, 0,
                      "echelon smtp: curl_multi_init() failed");
        goto failed;
    }

    /*
     * as many idle connections are kept as may be open at all, so that
     * libcurl never evicts one to make room: it would say QUIT and wait
     * for the reply blocking the worker
     *
     * Shortcoming: a mail queued behind busy connections starts its timeout
     * late; the scheduler's small batches keep that queue short.
     */

    if (curl_multi_setopt(smtp->multi, CURLMOPT_SOCKETFUNCTION,
                          ngx_echelon_smtp_socket_callback) != CURLM_OK
        || curl_multi_setopt(smtp->multi, CURLMOPT_SOCKETDATA, smtp)
           != CURLM_OK
        || curl_multi_setopt(smtp->multi, CURLMOPT_TIMERFUNCTION,
                             ngx_echelon_smtp_timer_callback) != CURLM_OK
        || curl_multi_setopt(smtp->multi, CURLMOPT_TIMERDATA, smtp)
           != CURLM_OK
        || curl_multi_setopt(smtp->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                             (long) NGX_ECHELON_SMTP_CONNECTIONS) != CURLM_OK
        || curl_multi_setopt(smtp->multi, CURLMOPT_MAXCONNECTS,
                             (long) NGX_ECHELON_SMTP_CONNECTIONS) != CURLM_OK)
    {
        ngx_log_error(NGX_LOG_ERR, smtp->log, 0,
                      "echelon smtp: curl_multi_setopt() failed");
        goto failed;
    }

    smtp->template = ngx_echelon_smtp_template(smtp, emcf);
    if (smtp->template == NULL) {
        goto failed;
    }

    return smtp;

failed:

    if (smtp->multi) {
        (void) curl_multi_cleanup(smtp->multi);
    }

    ngx_free(smtp);

    return NULL;
}


static CURL *
ngx_echelon_smtp_template(ngx_echelon_smtp_t *smtp,
    ngx_echelon_main_conf_t *emcf)
{
    CURL        *easy;
    u_char      *url;
    ngx_msec_t   timeout;

    timeout = emcf->smtp_timeout;

    if (timeout == 0 || timeout == NGX_CONF_UNSET_MSEC) {
        timeout = NGX_ECHELON_SMTP_TIMEOUT;
    }

    url = ngx_alloc(emcf->smtp_url.len + 1, smtp->log);
    if (url == NULL) {
        return NULL;
    }

    (void) ngx_cpystrn(url, emcf->smtp_url.data, emcf->smtp_url.len + 1);

    easy = curl_easy_init();
    if (easy == NULL) {
        ngx_log_error(NGX_LOG_ERR, smtp->log, 0,
                      "echelon smtp: curl_easy_init() failed");
        ngx_free(url);
        return NULL;
    }

    /*
     * every transfer starts as a copy of this handle; the server response
     * timeout also bounds the wait for the reply to QUIT
     *
     * Shortcoming: libcurl reads the replies to the end of DATA and to QUIT
     * blocking the worker; bounded by smtp_timeout, brief with a near relay.
     */

    if (curl_easy_setopt(easy, CURLOPT_URL, url) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "smtp,smtps")
           != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_USE_SSL, (long) CURLUSESSL_TRY)
           != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_QUICK_EXIT, 1L) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) timeout)
           != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                            (long) ngx_min(timeout,
                                           NGX_ECHELON_SMTP_CONNECT_TIMEOUT))
           != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_SERVER_RESPONSE_TIMEOUT,
                            (long) ((timeout + 999) / 1000)) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_UPLOAD, 1L) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_READFUNCTION,
                            ngx_echelon_smtp_read) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_SEEKFUNCTION,
                            ngx_echelon_smtp_seek) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_VERBOSE, 1L) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_DEBUGFUNCTION,
                            ngx_echelon_smtp_debug) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION,
                            ngx_echelon_smtp_open_socket) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, smtp) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION,
                            ngx_echelon_smtp_close_socket) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, smtp) != CURLE_OK)
    {
        ngx_log_error(NGX_LOG_ERR, smtp->log, 0,
                      "echelon smtp: curl_easy_setopt() failed");
        curl_easy_cleanup(easy);
        ngx_free(url);
        return NULL;
    }

    ngx_free(url);

    return easy;
}


void
ngx_echelon_smtp_destroy(ngx_echelon_smtp_t *smtp)
{
    ngx_uint_t                    fd, alive;
    ngx_queue_t                  *q;
    ngx_echelon_smtp_socket_t    *s;
    ngx_echelon_smtp_transfer_t  *t;

    /*
     * removing a transfer in the middle of its DATA makes libcurl end the
     * message and wait for the reply, and it says QUIT on every connection
     * it keeps, waiting again: shut our sockets down first, so that all of
     * this fails at once and no cut message is ever accepted
     */

    for (fd = 0; fd < smtp->nsockets; fd++) {
        s = &smtp->sockets[fd];

        if (s->connection && s->owned && ngx_echelon_smtp_socket_alive(s)) {
            (void) ngx_shutdown_socket((ngx_socket_t) fd, SHUT_RDWR);
        }
    }

    /* done is not called: the deliveries' leases expire, they are retried */

    while (!ngx_queue_empty(&smtp->transfers)) {
        q = ngx_queue_head(&smtp->transfers);
        t = ngx_queue_data(q, ngx_echelon_smtp_transfer_t, queue);
        ngx_echelon_smtp_free(t);
    }

    while (!ngx_queue_empty(&smtp->refused)) {
        q = ngx_queue_head(&smtp->refused);
        t = ngx_queue_data(q, ngx_echelon_smtp_transfer_t, queue);
        ngx_echelon_smtp_free(t);
    }

    curl_easy_cleanup(smtp->template);
    (void) curl_multi_cleanup(smtp->multi);

    if (smtp->timer.timer_set) {
        ngx_del_timer(&smtp->timer);
    }

    if (smtp->refuse.timer_set) {
        ngx_del_timer(&smtp->refuse);
    }

    /* only sockets libcurl closed behind our back should be left */

    for (fd = 0; fd < smtp->nsockets; fd++) {
        s = &smtp->sockets[fd];

        if (s->connection == NULL) {
            continue;
        }

        alive = ngx_echelon_smtp_socket_alive(s) && s->owned;

        ngx_echelon_smtp_socket_release(s, 1);

        if (alive) {
            ngx_log_error(NGX_LOG_ALERT, smtp->log, 0,
                          "echelon smtp: socket %ui left open by libcurl",
                          fd);
            (void) ngx_close_socket((ngx_socket_t) fd);
        }
    }

    if (smtp->sockets) {
        ngx_free(smtp->sockets);
    }

    ngx_free(smtp);
}


ngx_int_t
ngx_echelon_smtp_send(ngx_echelon_smtp_t *smtp, ngx_echelon_mail_t *mail,
    ngx_echelon_smtp_done_pt done, void *data)
{
    u_char                       *p;
    size_t                        size;
    ngx_echelon_smtp_mailbox_t    from, to;
    ngx_echelon_smtp_transfer_t  *t;

    if (ngx_echelon_smtp_valid_id(&mail->message_id) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, smtp->log, 0,
                      "echelon smtp: invalid message id of %uz bytes",
                      mail->message_id.len);
        return NGX_ERROR;
    }

    ngx_echelon_smtp_mailbox(&mail->from, &from);
    ngx_echelon_smtp_mailbox(&mail->to, &to);

    size = sizeof(ngx_echelon_smtp_transfer_t) + mail->message_id.len
           + ngx_echelon_smtp_message_size(mail, &from, &to);

    t = ngx_alloc(size, smtp->log);
    if (t == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(t, sizeof(ngx_echelon_smtp_transfer_t));

    t->smtp = smtp;
    t->done = done;
    t->data = data;

    p = (u_char *) &t[1];

    t->message_id.data = p;
    t->message_id.len = mail->message_id.len;
    p = ngx_cpymem(p, mail->message_id.data, mail->message_id.len);

    if (ngx_echelon_smtp_valid_address(&from.addr) != NGX_OK) {
        ngx_echelon_smtp_refuse(smtp, t, "malformed sender address");
        return NGX_OK;
    }

    if (ngx_echelon_smtp_valid_address(&to.addr) != NGX_OK) {
        ngx_echelon_smtp_refuse(smtp, t, "malformed recipient address");
        return NGX_OK;
    }

    t->message.data = p;
    t->message.len = ngx_echelon_smtp_compose(p, mail, &from, &to) - p;

    ngx_queue_insert_tail(&smtp->transfers, &t->queue);

    if (ngx_echelon_smtp_start(smtp, t, &from.addr, &to.addr) != NGX_OK) {
        ngx_echelon_smtp_free(t);
        return NGX_ERROR;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, smtp->log, 0,
                   "echelon smtp: message %V started, %uz bytes",
                   &t->message_id, t->message.len);

    return NGX_OK;
}


static ngx_int_t
ngx_echelon_smtp_start(ngx_echelon_smtp_t *smtp,
    ngx_echelon_smtp_transfer_t *t, ngx_str_t *from, ngx_str_t *to)
{
    CURL       *easy;
    CURLMcode   rc;
    u_char      sender[NGX_ECHELON_SMTP_ADDR_LEN + 3];
    u_char      recipient[NGX_ECHELON_SMTP_ADDR_LEN + 3];

    (void) ngx_sprintf(sender, "<%V>%Z", from);
    (void) ngx_sprintf(recipient, "<%V>%Z", to);

    easy = curl_easy_duphandle(smtp->template);
    if (easy == NULL) {
        ngx_log_error(NGX_LOG_ERR, smtp->log, 0,
                      "echelon smtp: curl_easy_duphandle() failed");
        return NGX_ERROR;
    }

    t->easy = easy;

    t->rcpt = curl_slist_append(NULL, (char *) recipient);
    if (t->rcpt == NULL) {
        ngx_log_error(NGX_LOG_ERR, smtp->log, 0,
                      "echelon smtp: curl_slist_append() failed");
        return NGX_ERROR;
    }

    if (curl_easy_setopt(easy, CURLOPT_PRIVATE, t) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t->error) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_DEBUGDATA, t) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_READDATA, t) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_SEEKDATA, t) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_INFILESIZE_LARGE,
                            (curl_off_t) t->message.len) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_MAIL_FROM, sender) != CURLE_OK
        || curl_easy_setopt(easy, CURLOPT_MAIL_RCPT, t->rcpt) != CURLE_OK)
    {
        ngx_log_error(NGX_LOG_ERR, smtp->log, 0,
                      "echelon smtp: curl_easy_setopt() failed");
        return NGX_ERROR;
    }

    rc = curl_multi_add_handle(smtp->multi, easy);

    if (rc != CURLM_OK) {
        ngx_log_error(NGX_LOG_ERR, smtp->log, 0,
                      "echelon smtp: curl_multi_add_handle() failed: %s",
                      curl_multi_strerror(rc));
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_echelon_smtp_refuse(ngx_echelon_smtp_t *smtp,
    ngx_echelon_smtp_transfer_t *t, const char *reason)
{
    /* done is due later, from a timer, never from inside send */

    t->refusal = reason;

    ngx_queue_insert_tail(&smtp->refused, &t->queue);

    if (!smtp->refuse.timer_set) {
        ngx_add_timer(&smtp->refuse, 0);
    }
}


static void
ngx_echelon_smtp_refuse_handler(ngx_event_t *ev)
{
    ngx_queue_t                  *q;
    ngx_connection_t             *c;
    ngx_echelon_smtp_t           *smtp;
    ngx_echelon_smtp_transfer_t  *t;

    c = ev->data;
    smtp = c->data;

    while (!ngx_queue_empty(&smtp->refused)) {
        q = ngx_queue_head(&smtp->refused);
        t = ngx_queue_data(q, ngx_echelon_smtp_transfer_t, queue);

        ngx_echelon_smtp_complete(t, NGX_ECHELON_SEND_PERMANENT,
                                  (u_char *) t->refusal,
                                  ngx_strlen(t->refusal));
    }
}


static void
ngx_echelon_smtp_event_handler(ngx_event_t *ev)
{
    ngx_connection_t  *c;

    c = ev->data;

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, ev->log, 0,
                   "echelon smtp: socket %d %s", c->fd,
                   ev->write ? "writable" : "readable");

    ngx_echelon_smtp_action(c->data, c->fd,
                            ev->write ? CURL_CSELECT_OUT : CURL_CSELECT_IN);
}


static void
ngx_echelon_smtp_timer_handler(ngx_event_t *ev)
{
    ngx_connection_t  *c;

    c = ev->data;

    ngx_log_debug0(NGX_LOG_DEBUG_EVENT, ev->log, 0, "echelon smtp: timer");

    ngx_echelon_smtp_action(c->data, CURL_SOCKET_TIMEOUT, 0);
}


static void
ngx_echelon_smtp_action(ngx_echelon_smtp_t *smtp, ngx_socket_t fd, int mask)
{
    int          running, left;
    CURL        *easy;
    void        *t;
    CURLMsg     *msg;
    CURLcode     result;
    CURLMcode    rc;
    ngx_uint_t   failed;

    /* the socket's connection may be released while curl acts */

    rc = curl_multi_socket_action(smtp->multi, fd, mask, &running);

    if (rc != CURLM_OK) {
        ngx_log_error(NGX_LOG_ALERT, smtp->log, 0,
                      "echelon smtp: curl_multi_socket_action() failed: %s",
                      curl_multi_strerror(rc));
    }

    /* curl has returned: finished transfers are reported from here */

    failed = 0;

    for ( ;; ) {
        msg = curl_multi_info_read(smtp->multi, &left);

        if (msg == NULL) {
            break;
        }

        if (msg->msg != CURLMSG_DONE) {
            continue;
        }

        easy = msg->easy_handle;
        result = msg->data.result;

        (void) curl_easy_getinfo(easy, CURLINFO_PRIVATE, &t);

        if (result != CURLE_OK) {
            failed = 1;
        }

        ngx_echelon_smtp_finish(t, result);
    }

    if (failed) {
        ngx_echelon_smtp_socket_sweep(smtp);
    }
}


static void
ngx_echelon_smtp_finish(ngx_echelon_smtp_transfer_t *t, CURLcode result)
{
    long                 code;
    const char          *error;
    ngx_echelon_send_e   status;

    if (result == CURLE_OK) {
        ngx_echelon_smtp_complete(t, NGX_ECHELON_SEND_OK, t->reply,
                                  t->reply_len);
        return;
    }

    code = 0;
    (void) curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);

    if (code >= 400 && code < 600 && t->reply_len) {
        status = (code >= 500) ? NGX_ECHELON_SEND_PERMANENT
                               : NGX_ECHELON_SEND_TRANSIENT;

        ngx_echelon_smtp_complete(t, status, t->reply, t->reply_len);
        return;
    }

    /* no refusal from the server: connection, TLS, timeout, DNS */

    error = t->error[0] ? t->error : curl_easy_strerror(result);

    ngx_echelon_smtp_complete(t, NGX_ECHELON_SEND_TRANSIENT, (u_char *) error,
                              ngx_strlen(error));
}


static void
ngx_echelon_smtp_complete(ngx_echelon_smtp_transfer_t *t,
    ngx_echelon_send_e status, u_char *text, size_t len)
{
    void                      *data;
    u_char                     buf[NGX_ECHELON_SMTP_REPLY_LEN];
    ngx_str_t                  reason;
    ngx_echelon_smtp_done_pt   done;

    reason.len = ngx_min(len, sizeof(buf));
    reason.data = buf;
    ngx_memcpy(buf, text, reason.len);

    if (status == NGX_ECHELON_SEND_OK) {
        ngx_log_debug2(NGX_LOG_DEBUG_EVENT, t->smtp->log, 0,
                       "echelon smtp: message %V sent: %V",
                       &t->message_id, &reason);

    } else {
        ngx_log_error(NGX_LOG_WARN, t->smtp->log, 0,
                      "echelon smtp: message %V not sent, %s failure: %V",
                      &t->message_id,
                      status == NGX_ECHELON_SEND_PERMANENT ? "permanent"
                                                           : "temporary",
                      &reason);
    }

    /* the transfer is gone before done runs: done may send again */

    done = t->done;
    data = t->data;

    ngx_echelon_smtp_free(t);

    done(data, status, &reason);
}


static void
ngx_echelon_smtp_free(ngx_echelon_smtp_transfer_t *t)
{
    ngx_queue_remove(&t->queue);

    if (t->easy) {
        (void) curl_multi_remove_handle(t->smtp->multi, t->easy);
        curl_easy_cleanup(t->easy);
    }

    if (t->rcpt) {
        curl_slist_free_all(t->rcpt);
    }

    ngx_free(t);
}


static int
ngx_echelon_smtp_socket_callback(CURL *easy, curl_socket_t fd, int what,
    void *userp, void *socketp)
{
    ngx_echelon_smtp_t         *smtp;
    ngx_echelon_smtp_socket_t  *s;

    smtp = userp;

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, smtp->log, 0,
                   "echelon smtp: watch socket %d: %d", fd, what);

    s = ngx_echelon_smtp_socket_find(smtp, fd);

    if (what == CURL_POLL_REMOVE) {

        if (s == NULL) {
            return 0;
        }

        /* a socket of ours is watched again or closed by the callback */

        if (s->owned) {
            (void) ngx_echelon_smtp_socket_watch(s, 0);

        } else {
            ngx_echelon_smtp_socket_release(s, 0);
        }

        return 0;
    }

    if (s == NULL) {

        /* libcurl's own: the threaded resolver's socketpair */

        s = ngx_echelon_smtp_socket_add(smtp, fd, 0);
        if (s == NULL) {
            return 0;
        }
    }

    /*
     * a failure is logged and the transfer runs into its timeout;
     * returning -1 would make libcurl fail every transfer from now on
     */

    (void) ngx_echelon_smtp_socket_watch(s, what);

    return 0;
}


static int
ngx_echelon_smtp_timer_callback(CURLM *multi, long timeout_ms, void *userp)
{
    ngx_echelon_smtp_t  *smtp;

    smtp = userp;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, smtp->log, 0,
                   "echelon smtp: timeout %l", timeout_ms);

    /*
     * no call into curl from here: "now" becomes 1 ms, so that nginx also
     * looks at its sockets between two rounds of curl; deleting first keeps
     * nginx from keeping an older, later timer within its lazy delay
     */

    if (smtp->timer.timer_set) {
        ngx_del_timer(&smtp->timer);
    }

    if (timeout_ms >= 0) {
        ngx_add_timer(&smtp->timer, timeout_ms ? (ngx_msec_t) timeout_ms : 1);
    }

    return 0;
}


static curl_socket_t
ngx_echelon_smtp_open_socket(void *userp, curlsocktype purpose,
    struct curl_sockaddr *addr)
{
    int                         what;
    ngx_socket_t                fd;
    ngx_connection_t           *c;
    ngx_echelon_smtp_t         *smtp;
    ngx_echelon_smtp_socket_t  *s;

    smtp = userp;

    if (purpose != CURLSOCKTYPE_IPCXN) {
        return CURL_SOCKET_BAD;
    }

    fd = socket(addr->family, addr->socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                addr->protocol);

    if (fd == (ngx_socket_t) -1) {
        ngx_log_error(NGX_LOG_ERR, smtp->log, ngx_socket_errno,
                      "echelon smtp: " ngx_socket_n " failed");
        return CURL_SOCKET_BAD;
    }

    /*
     * the number is known still: libcurl 7.88 closed that socket itself
     * (a connect that never completed) and did not tell; keep the watch
     * it believes to be in place on the number
     */

    what = 0;
    s = ngx_echelon_smtp_socket_get(smtp, fd);

    if (s) {
        c = s->connection;
        what = (c->read->active ? CURL_POLL_IN : 0)
               | (c->write->active ? CURL_POLL_OUT : 0);

        ngx_echelon_smtp_socket_release(s, 1);
    }

    s = ngx_echelon_smtp_socket_add(smtp, fd, 1);

    if (s == NULL || ngx_echelon_smtp_socket_watch(s, what) != NGX_OK) {

        if (s) {
            ngx_echelon_smtp_socket_release(s, 1);
        }

        (void) ngx_close_socket(fd);
        return CURL_SOCKET_BAD;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, smtp->log, 0,
                   "echelon smtp: socket %d opened", fd);

    return fd;
}


static int
ngx_echelon_smtp_close_socket(void *userp, curl_socket_t fd)
{
    ngx_echelon_smtp_t         *smtp;
    ngx_echelon_smtp_socket_t  *s;

    smtp = userp;

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, smtp->log, 0,
                   "echelon smtp: socket %d closed", fd);

    /* the only place our sockets are closed; epoll forgets them by itself */

    s = ngx_echelon_smtp_socket_get(smtp, fd);

    if (s) {
        ngx_echelon_smtp_socket_release(s, 1);
    }

    if (ngx_close_socket(fd) == -1) {
        ngx_log_error(NGX_LOG_ERR, smtp->log, ngx_socket_errno,
                      "echelon smtp: " ngx_close_socket_n " %d failed", fd);
        return 1;
    }

    return 0;
}


static size_t
ngx_echelon_smtp_read(char *buf, size_t size, size_t n, void *userp)
{
    size_t                        len;
    ngx_echelon_smtp_transfer_t  *t;

    t = userp;
    len = ngx_min(size * n, t->message.len - t->sent);

    ngx_memcpy(buf, t->message.data + t->sent, len);
    t->sent += len;

    return len;
}


static int
ngx_echelon_smtp_seek(void *userp, curl_off_t offset, int origin)
{
    ngx_echelon_smtp_transfer_t  *t;

    t = userp;

    /* libcurl rewinds when it sends again on a fresh connection */

    if (origin != SEEK_SET || offset < 0
        || (size_t) offset > t->message.len)
    {
        return CURL_SEEKFUNC_CANTSEEK;
    }

    t->sent = (size_t) offset;

    return CURL_SEEKFUNC_OK;
}


static int
ngx_echelon_smtp_debug(CURL *easy, curl_infotype type, char *data,
    size_t size, void *userp)
{
    ngx_echelon_smtp_transfer_t  *t;

    t = userp;

    /* keeps the server's last reply line; the message itself never */

    switch (type) {

    case CURLINFO_HEADER_OUT:

        /* the reply to QUIT says nothing about the message */

        if (size >= 4
            && ngx_strncasecmp((u_char *) data, (u_char *) "QUIT", 4) == 0)
        {
            t->quit = 1;
        }

        break;

    case CURLINFO_HEADER_IN:

        if (t->quit) {
            break;
        }

        while (size && (data[size - 1] == CR || data[size - 1] == LF)) {
            size--;
        }

        t->reply_len = ngx_min(size, sizeof(t->reply));
        ngx_memcpy(t->reply, data, t->reply_len);

        ngx_log_debug3(NGX_LOG_DEBUG_EVENT, t->smtp->log, 0,
                       "echelon smtp: message %V: %*s", &t->message_id,
                       t->reply_len, t->reply);
        break;

    default:
        break;
    }

    return 0;
}


static ngx_echelon_smtp_socket_t *
ngx_echelon_smtp_socket_add(ngx_echelon_smtp_t *smtp, ngx_socket_t fd,
    ngx_uint_t owned)
{
    ngx_uint_t                  n;
    ngx_connection_t           *c;
    ngx_echelon_smtp_socket_t  *s, *sockets;

    if ((ngx_uint_t) fd >= smtp->nsockets) {
        n = ngx_max(smtp->nsockets * 2, 64);

        if (n <= (ngx_uint_t) fd) {
            n = (ngx_uint_t) fd + 1;
        }

        sockets = ngx_calloc(n * sizeof(ngx_echelon_smtp_socket_t), smtp->log);
        if (sockets == NULL) {
            return NULL;
        }

        if (smtp->sockets) {
            ngx_memcpy(sockets, smtp->sockets,
                       smtp->nsockets * sizeof(ngx_echelon_smtp_socket_t));
            ngx_free(smtp->sockets);
        }

        smtp->sockets = sockets;
        smtp->nsockets = n;
    }

    c = ngx_get_connection(fd, smtp->log);
    if (c == NULL) {
        return NULL;
    }

    c->data = smtp;
    c->read->handler = ngx_echelon_smtp_event_handler;
    c->write->handler = ngx_echelon_smtp_event_handler;
    c->read->log = smtp->log;
    c->write->log = smtp->log;

    s = &smtp->sockets[fd];

    s->connection = c;
    s->inode = ngx_echelon_smtp_socket_inode(fd);
    s->owned = owned;

    return s;
}


static ngx_echelon_smtp_socket_t *
ngx_echelon_smtp_socket_get(ngx_echelon_smtp_t *smtp, ngx_socket_t fd)
{
    if ((ngx_uint_t) fd >= smtp->nsockets
        || smtp->sockets[fd].connection == NULL)
    {
        return NULL;
    }

    return &smtp->sockets[fd];
}


static ngx_echelon_smtp_socket_t *
ngx_echelon_smtp_socket_find(ngx_echelon_smtp_t *smtp, ngx_socket_t fd)
{
    ngx_echelon_smtp_socket_t  *s;

    s = ngx_echelon_smtp_socket_get(smtp, fd);

    if (s == NULL || ngx_echelon_smtp_socket_alive(s)) {
        return s;
    }

    /*
     * libcurl 7.88 closes a socket whose connect never completed itself,
     * without the close socket callback and before CURL_POLL_REMOVE: the
     * number now is closed or someone else's, touch nothing but our entry
     */

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, smtp->log, 0,
                   "echelon smtp: socket %d was closed by libcurl", fd);

    ngx_echelon_smtp_socket_release(s, 1);

    return NULL;
}


static ngx_int_t
ngx_echelon_smtp_socket_watch(ngx_echelon_smtp_socket_t *s, int what)
{
    ngx_connection_t  *c;

    c = s->connection;

    /*
     * level-triggered: libcurl reads a reply line or a TLS record at a time
     * and need not drain the socket, so with edge-triggered epoll the rest
     * would wait for data that never comes; a level event is repeated until
     * curl has taken everything
     */

    if ((what & CURL_POLL_IN) && !c->read->active) {
        if (ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (!(what & CURL_POLL_IN) && c->read->active) {
        if (ngx_del_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if ((what & CURL_POLL_OUT) && !c->write->active) {
        if (ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (!(what & CURL_POLL_OUT) && c->write->active) {
        if (ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_echelon_smtp_socket_release(ngx_echelon_smtp_socket_t *s,
    ngx_uint_t closed)
{
    ngx_uint_t         flags;
    ngx_connection_t  *c;

    c = s->connection;

    /* a closed descriptor has left epoll by itself: no epoll_ctl() for it */

    flags = closed ? NGX_CLOSE_EVENT : NGX_LEVEL_EVENT;

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, flags);
    }

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, flags);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    /* the descriptor is closed by its owner, never by nginx */

    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;

    s->connection = NULL;
}


static ngx_uint_t
ngx_echelon_smtp_socket_alive(ngx_echelon_smtp_socket_t *s)
{
    return s->inode != 0
           && s->inode == ngx_echelon_smtp_socket_inode(s->connection->fd);
}


static ngx_file_uniq_t
ngx_echelon_smtp_socket_inode(ngx_socket_t fd)
{
    ngx_file_info_t  fi;

    /* a socket's inode tells it from a later one with the same number */

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR || !S_ISSOCK(fi.st_mode)) {
        return 0;
    }

    return ngx_file_uniq(&fi);
}


static void
ngx_echelon_smtp_socket_sweep(ngx_echelon_smtp_t *smtp)
{
    ngx_uint_t                  fd;
    ngx_echelon_smtp_socket_t  *s;

    /* entries of sockets libcurl closed itself and never asked to watch */

    for (fd = 0; fd < smtp->nsockets; fd++) {
        s = &smtp->sockets[fd];

        if (s->connection && !ngx_echelon_smtp_socket_alive(s)) {
            ngx_echelon_smtp_socket_release(s, 1);
        }
    }
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
