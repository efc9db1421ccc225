
/*
 * Copyright (C) Echelon
 *
 * A per-worker pool of asynchronous PostgreSQL connections on nginx's
 * event loop.  Handlers and the scheduler share it; nothing here blocks.
 *
 * A query is owned by its caller.  The pool holds it while it waits for a
 * connection or runs on one, and calls its handler exactly once, never from
 * inside ngx_echelon_pg_query() itself.  A caller that goes away first
 * calls ngx_echelon_pg_detach(): the pool then forgets the query, and a
 * result that still arrives is read and thrown away.
 */


#include "ngx_echelon.h"


typedef enum {
    NGX_ECHELON_CONN_CONNECTING = 0,
    NGX_ECHELON_CONN_SETUP,
    NGX_ECHELON_CONN_IDLE,
    NGX_ECHELON_CONN_PREPARING,
    NGX_ECHELON_CONN_BUSY
} ngx_echelon_conn_state_e;


struct ngx_echelon_pg_conn_s {
    ngx_echelon_pg_pool_t      *pool;
    PGconn                     *pg;
    ngx_connection_t           *connection;
    ngx_echelon_pg_query_t     *query;
    PGresult                   *result;
    ngx_queue_t                 queue;
    ngx_echelon_conn_state_e    state;
    u_char                      prepared[NGX_ECHELON_SQL_COUNT];
};


struct ngx_echelon_pg_pool_s {
    ngx_echelon_main_conf_t    *emcf;
    ngx_log_t                  *log;

    ngx_queue_t                 conns;
    ngx_queue_t                 waiting;
    ngx_queue_t                 failed;
    ngx_uint_t                  nconns;
    ngx_uint_t                  nconnecting;

    ngx_msec_t                  down_until;
    ngx_event_t                 queue_timer;
    ngx_event_t                 fail_event;

    u_char                      error[512];
    size_t                      error_len;

    unsigned                    schema_ready:1;
    unsigned                    migrating:1;
};


static void ngx_echelon_pg_dispatch(ngx_echelon_pg_pool_t *pool);
static ngx_int_t ngx_echelon_pg_connect(ngx_echelon_pg_pool_t *pool);
static ngx_int_t ngx_echelon_pg_attach(ngx_echelon_pg_conn_t *conn);
static void ngx_echelon_pg_connect_poll(ngx_echelon_pg_conn_t *conn);
static void ngx_echelon_pg_migrated(ngx_echelon_pg_pool_t *pool,
    ngx_echelon_pg_conn_t *conn, ngx_int_t rc);
static void ngx_echelon_pg_read_handler(ngx_event_t *rev);
static void ngx_echelon_pg_write_handler(ngx_event_t *wev);
static void ngx_echelon_pg_flush(ngx_echelon_pg_conn_t *conn);
static void ngx_echelon_pg_collect(ngx_echelon_pg_conn_t *conn);
static void ngx_echelon_pg_complete(ngx_echelon_pg_conn_t *conn);
static void ngx_echelon_pg_execute(ngx_echelon_pg_conn_t *conn);
static void ngx_echelon_pg_broken(ngx_echelon_pg_conn_t *conn,
    const char *what);
static void ngx_echelon_pg_close(ngx_echelon_pg_conn_t *conn);
static void ngx_echelon_pg_down(ngx_echelon_pg_pool_t *pool,
    const char *why);
static void ngx_echelon_pg_fail(ngx_echelon_pg_query_t *q,
    ngx_echelon_pg_status_e status);
static void ngx_echelon_pg_fail_handler(ngx_event_t *ev);
static void ngx_echelon_pg_queue_handler(ngx_event_t *ev);
static void ngx_echelon_pg_set_error(ngx_echelon_pg_pool_t *pool,
    const char *prefix, const char *message);
static void ngx_echelon_pg_notice(void *arg, const char *message);


ngx_echelon_pg_pool_t *
ngx_echelon_pg_pool_create(ngx_cycle_t *cycle, ngx_echelon_main_conf_t *emcf)
{
    ngx_echelon_pg_pool_t  *pool;

    pool = ngx_pcalloc(cycle->pool, sizeof(ngx_echelon_pg_pool_t));
    if (pool == NULL) {
        return NULL;
    }

    pool->emcf = emcf;
    pool->log = cycle->log;

    ngx_queue_init(&pool->conns);
    ngx_queue_init(&pool->waiting);
    ngx_queue_init(&pool->failed);

    pool->queue_timer.handler = ngx_echelon_pg_queue_handler;
    pool->queue_timer.data = pool;
    pool->queue_timer.log = cycle->log;

    pool->fail_event.handler = ngx_echelon_pg_fail_handler;
    pool->fail_event.data = pool;
    pool->fail_event.log = cycle->log;

    /* open one connection now: it also brings the schema up to date */

    (void) ngx_echelon_pg_connect(pool);

    return pool;
}


void
ngx_echelon_pg_pool_destroy(ngx_echelon_pg_pool_t *pool)
{
    ngx_queue_t            *qe;
    ngx_echelon_pg_conn_t  *conn;

    while (!ngx_queue_empty(&pool->conns)) {
        qe = ngx_queue_head(&pool->conns);
        conn = ngx_queue_data(qe, ngx_echelon_pg_conn_t, queue);
        ngx_echelon_pg_close(conn);
    }

    if (pool->queue_timer.timer_set) {
        ngx_del_timer(&pool->queue_timer);
    }

    if (pool->fail_event.posted) {
        ngx_delete_posted_event(&pool->fail_event);
    }
}


void
ngx_echelon_pg_query(ngx_echelon_pg_pool_t *pool, ngx_echelon_pg_query_t *q)
{
    q->pool = pool;
    q->conn = NULL;
    q->status = NGX_ECHELON_PG_OK;
    q->error.len = 0;
    q->sqlstate[0] = '\0';

    if (q->log == NULL) {
        q->log = pool->log;
    }

    if (ngx_current_msec < pool->down_until) {
        ngx_echelon_pg_fail(q, NGX_ECHELON_PG_UNAVAILABLE);
        return;
    }

    q->queued_at = ngx_current_msec;
    q->waiting = 1;
    ngx_queue_insert_tail(&pool->waiting, &q->queue);

    ngx_echelon_pg_dispatch(pool);

    if (q->waiting && !pool->queue_timer.timer_set) {
        ngx_add_timer(&pool->queue_timer, pool->emcf->queue_timeout);
    }
}


void
ngx_echelon_pg_detach(ngx_echelon_pg_query_t *q)
{
    if (q->pool == NULL) {
        return;
    }

    if (q->waiting) {
        ngx_queue_remove(&q->queue);
        q->waiting = 0;
    }

    if (q->conn) {
        q->conn->query = NULL;
        q->conn = NULL;
    }

    q->handler = NULL;
    q->pool = NULL;
}


/* a parameter from any string: libpq wants it NUL-terminated, so a copy */

ngx_int_t
ngx_echelon_pg_param(ngx_echelon_pg_query_t *q, ngx_pool_t *pool,
    ngx_str_t *value)
{
    u_char  *p;

    if (value->data == NULL) {
        ngx_echelon_pg_param_cstr(q, NULL);
        return NGX_OK;
    }

    p = ngx_pnalloc(pool, value->len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, value->data, value->len);
    p[value->len] = '\0';

    ngx_echelon_pg_param_cstr(q, (const char *) p);

    return NGX_OK;
}


/* a NUL-terminated parameter that lives as long as the query, or NULL */

void
ngx_echelon_pg_param_cstr(ngx_echelon_pg_query_t *q, const char *value)
{
    if (q->nparams == NGX_ECHELON_MAX_PARAMS) {
        ngx_log_error(NGX_LOG_ALERT, q->log ? q->log : ngx_cycle->log, 0,
                      "echelon: too many statement parameters");
        return;
    }

    q->values[q->nparams] = value;
    q->lengths[q->nparams] = 0;
    q->nparams++;
}


ngx_str_t
ngx_echelon_pg_value(PGresult *res, int row, const char *column)
{
    int        col;
    ngx_str_t  v;

    col = PQfnumber(res, column);

    if (col < 0 || row >= PQntuples(res) || PQgetisnull(res, row, col)) {
        ngx_str_null(&v);
        return v;
    }

    v.data = (u_char *) PQgetvalue(res, row, col);
    v.len = PQgetlength(res, row, col);

    return v;
}


ngx_log_t *
ngx_echelon_pg_conn_log(ngx_echelon_pg_conn_t *conn)
{
    return conn->pool->log;
}


static void
ngx_echelon_pg_dispatch(ngx_echelon_pg_pool_t *pool)
{
    ngx_uint_t              want;
    ngx_queue_t            *qe, *ce, *next;
    ngx_echelon_pg_conn_t  *conn;
    ngx_echelon_pg_query_t *q;

    if (pool->schema_ready) {

        /* a connection that breaks on sending leaves the list: step first */

        for (ce = ngx_queue_head(&pool->conns);
             ce != ngx_queue_sentinel(&pool->conns)
             && !ngx_queue_empty(&pool->waiting);
             ce = next)
        {
            next = ngx_queue_next(ce);
            conn = ngx_queue_data(ce, ngx_echelon_pg_conn_t, queue);

            if (conn->state != NGX_ECHELON_CONN_IDLE) {
                continue;
            }

            qe = ngx_queue_head(&pool->waiting);
            ngx_queue_remove(qe);
            q = ngx_queue_data(qe, ngx_echelon_pg_query_t, queue);
            q->waiting = 0;

            ngx_echelon_pg_conn_query(conn, q);
        }
    }

    if (ngx_queue_empty(&pool->waiting)) {
        return;
    }

    /* more connections, one at a time per waiting query */

    want = 0;

    for (qe = ngx_queue_head(&pool->waiting);
         qe != ngx_queue_sentinel(&pool->waiting);
         qe = ngx_queue_next(qe))
    {
        want++;
    }

    while (pool->nconnecting < want && pool->nconns < pool->emcf->pool_size) {
        if (ngx_echelon_pg_connect(pool) != NGX_OK) {
            break;
        }
    }
}


static ngx_int_t
ngx_echelon_pg_connect(ngx_echelon_pg_pool_t *pool)
{
    ngx_echelon_pg_conn_t  *conn;

    if (ngx_current_msec < pool->down_until) {
        return NGX_DECLINED;
    }

    conn = ngx_calloc(sizeof(ngx_echelon_pg_conn_t), pool->log);
    if (conn == NULL) {
        return NGX_ERROR;
    }

    conn->pool = pool;
    conn->state = NGX_ECHELON_CONN_CONNECTING;
    ngx_queue_insert_tail(&pool->conns, &conn->queue);
    pool->nconns++;
    pool->nconnecting++;

    conn->pg = PQconnectStart((const char *) pool->emcf->conninfo.data);

    if (conn->pg == NULL || PQstatus(conn->pg) == CONNECTION_BAD) {
        ngx_echelon_pg_set_error(pool, "database connection failed: ",
                                 conn->pg ? PQerrorMessage(conn->pg)
                                          : "out of memory");
        ngx_echelon_pg_close(conn);
        ngx_echelon_pg_down(pool, "connect");
        return NGX_ERROR;
    }

    if (PQsetnonblocking(conn->pg, 1) != 0 || ngx_echelon_pg_attach(conn)
        != NGX_OK)
    {
        ngx_echelon_pg_close(conn);
        return NGX_ERROR;
    }

    (void) PQsetNoticeProcessor(conn->pg, ngx_echelon_pg_notice, pool->log);

    ngx_add_timer(conn->connection->read, pool->emcf->connect_timeout);

    ngx_echelon_pg_connect_poll(conn);

    return NGX_OK;
}


/* wrap libpq's current socket in an nginx connection; libpq owns the fd */

static ngx_int_t
ngx_echelon_pg_attach(ngx_echelon_pg_conn_t *conn)
{
    ngx_socket_t       fd;
    ngx_connection_t  *c;

    fd = PQsocket(conn->pg);
    if (fd == -1) {
        return NGX_ERROR;
    }

    c = ngx_get_connection(fd, conn->pool->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = conn;
    c->read->handler = ngx_echelon_pg_read_handler;
    c->write->handler = ngx_echelon_pg_write_handler;
    c->read->log = conn->pool->log;
    c->write->log = conn->pool->log;
    c->log_error = NGX_ERROR_INFO;

    conn->connection = c;

    return NGX_OK;
}


static void
ngx_echelon_pg_connect_poll(ngx_echelon_pg_conn_t *conn)
{
    ngx_msec_t                 left;
    ngx_event_t               *rev;
    ngx_connection_t          *c;
    ngx_echelon_pg_pool_t     *pool;
    PostgresPollingStatusType  st;

    st = PQconnectPoll(conn->pg);

    c = conn->connection;

    /* libpq may open a new socket, e.g. for the next host of a list */

    if (PQsocket(conn->pg) != c->fd && PQsocket(conn->pg) != -1) {
        left = c->read->timer_set ? c->read->timer.key - ngx_current_msec
                                  : conn->pool->emcf->connect_timeout;

        if (c->read->timer_set) {
            ngx_del_timer(c->read);
        }

        if (c->read->active) {
            ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
        }

        if (c->write->active) {
            ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
        }

        ngx_free_connection(c);
        conn->connection = NULL;

        if (ngx_echelon_pg_attach(conn) != NGX_OK) {
            ngx_echelon_pg_broken(conn, "attach");
            return;
        }

        c = conn->connection;
        ngx_add_timer(c->read, (ngx_msec_int_t) left > 0 ? left : 1);
    }

    rev = c->read;

    switch (st) {

    case PGRES_POLLING_READING:
        if (c->write->active) {
            ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
        }

        if (!rev->active && ngx_add_event(rev, NGX_READ_EVENT, NGX_LEVEL_EVENT)
                            != NGX_OK)
        {
            ngx_echelon_pg_broken(conn, "add read event");
        }

        return;

    case PGRES_POLLING_WRITING:
        if (!c->write->active
            && ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT)
               != NGX_OK)
        {
            ngx_echelon_pg_broken(conn, "add write event");
        }

        return;

    case PGRES_POLLING_OK:
        break;

    default:
        pool = conn->pool;
        ngx_echelon_pg_set_error(pool, "database connection failed: ",
                                 PQerrorMessage(conn->pg));
        ngx_echelon_pg_broken(conn, NULL);
        ngx_echelon_pg_down(pool, "connect");
        return;
    }

    /* connected */

    conn->pool->nconnecting--;
    conn->state = NGX_ECHELON_CONN_IDLE;

    if (rev->timer_set) {
        ngx_del_timer(rev);
    }

    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }

    if (!rev->active
        && ngx_add_event(rev, NGX_READ_EVENT, NGX_LEVEL_EVENT) != NGX_OK)
    {
        ngx_echelon_pg_broken(conn, "add read event");
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, conn->pool->log, 0,
                   "echelon pg: connected fd:%d", c->fd);

    if (conn->pool->schema_ready) {
        ngx_echelon_pg_dispatch(conn->pool);
        return;
    }

    if (conn->pool->migrating) {
        return;
    }

    conn->pool->migrating = 1;
    conn->state = NGX_ECHELON_CONN_SETUP;

    if (ngx_echelon_migrate(conn->pool, conn, ngx_echelon_pg_migrated)
        != NGX_OK)
    {
        ngx_echelon_pg_broken(conn, "out of memory");
    }
}


/* conn is NULL when the connection broke while the schema was updated */

static void
ngx_echelon_pg_migrated(ngx_echelon_pg_pool_t *pool,
    ngx_echelon_pg_conn_t *conn, ngx_int_t rc)
{
    pool->migrating = 0;

    if (rc != NGX_OK) {
        if (conn) {
            ngx_echelon_pg_broken(conn, NULL);
        }

        ngx_echelon_pg_down(pool, "schema");
        return;
    }

    pool->schema_ready = 1;
    conn->state = NGX_ECHELON_CONN_IDLE;

    ngx_echelon_pg_dispatch(pool);
}


void
ngx_echelon_pg_conn_query(ngx_echelon_pg_conn_t *conn,
    ngx_echelon_pg_query_t *q)
{
    int                 ok;
    ngx_echelon_sql_t  *stmt;

    conn->query = q;
    q->conn = conn;
    q->pool = conn->pool;
    q->status = NGX_ECHELON_PG_OK;

    if (q->text) {
        conn->state = NGX_ECHELON_CONN_BUSY;
        ok = PQsendQuery(conn->pg, q->text);

    } else if (conn->prepared[q->sql]) {
        conn->state = NGX_ECHELON_CONN_BUSY;
        stmt = &ngx_echelon_sql[q->sql];
        ok = PQsendQueryPrepared(conn->pg, stmt->name, q->nparams, q->values,
                                 q->lengths, NULL, 0);

    } else {
        conn->state = NGX_ECHELON_CONN_PREPARING;
        stmt = &ngx_echelon_sql[q->sql];
        ok = PQsendPrepare(conn->pg, stmt->name, stmt->text, stmt->nparams,
                           NULL);
    }

    if (!ok) {
        ngx_echelon_pg_set_error(conn->pool, "database send failed: ",
                                 PQerrorMessage(conn->pg));
        ngx_echelon_pg_broken(conn, NULL);
        return;
    }

    ngx_add_timer(conn->connection->read, conn->pool->emcf->query_timeout);

    ngx_echelon_pg_flush(conn);
}


static void
ngx_echelon_pg_execute(ngx_echelon_pg_conn_t *conn)
{
    ngx_echelon_sql_t       *stmt;
    ngx_echelon_pg_query_t  *q;

    q = conn->query;
    stmt = &ngx_echelon_sql[q->sql];

    conn->state = NGX_ECHELON_CONN_BUSY;

    if (!PQsendQueryPrepared(conn->pg, stmt->name, q->nparams, q->values,
                             q->lengths, NULL, 0))
    {
        ngx_echelon_pg_set_error(conn->pool, "database send failed: ",
                                 PQerrorMessage(conn->pg));
        ngx_echelon_pg_broken(conn, NULL);
        return;
    }

    ngx_echelon_pg_flush(conn);
}


static void
ngx_echelon_pg_flush(ngx_echelon_pg_conn_t *conn)
{
    int           rc;
    ngx_event_t  *wev;

    wev = conn->connection->write;

    rc = PQflush(conn->pg);

    if (rc == -1) {
        ngx_echelon_pg_set_error(conn->pool, "database write failed: ",
                                 PQerrorMessage(conn->pg));
        ngx_echelon_pg_broken(conn, NULL);
        return;
    }

    if (rc == 1) {
        if (!wev->active
            && ngx_add_event(wev, NGX_WRITE_EVENT, NGX_LEVEL_EVENT) != NGX_OK)
        {
            ngx_echelon_pg_broken(conn, "add write event");
        }

        return;
    }

    if (wev->active) {
        ngx_del_event(wev, NGX_WRITE_EVENT, 0);
    }
}


static void
ngx_echelon_pg_write_handler(ngx_event_t *wev)
{
    ngx_connection_t       *c;
    ngx_echelon_pg_conn_t  *conn;

    c = wev->data;
    conn = c->data;

    if (conn->state == NGX_ECHELON_CONN_CONNECTING) {
        ngx_echelon_pg_connect_poll(conn);
        return;
    }

    ngx_echelon_pg_flush(conn);
}


static void
ngx_echelon_pg_read_handler(ngx_event_t *rev)
{
    ngx_connection_t       *c;
    ngx_echelon_pg_pool_t  *pool;
    ngx_echelon_pg_conn_t  *conn;

    c = rev->data;
    conn = c->data;

    if (rev->timedout) {
        rev->timedout = 0;

        if (conn->state == NGX_ECHELON_CONN_CONNECTING) {
            pool = conn->pool;
            ngx_echelon_pg_set_error(pool, "database connection failed: ",
                                     "timed out");
            ngx_echelon_pg_broken(conn, NULL);
            ngx_echelon_pg_down(pool, "connect timeout");
            return;
        }

        ngx_echelon_pg_set_error(conn->pool, "database query failed: ",
                                 "timed out");
        ngx_echelon_pg_broken(conn, NULL);
        return;
    }

    if (conn->state == NGX_ECHELON_CONN_CONNECTING) {
        ngx_echelon_pg_connect_poll(conn);
        return;
    }

    if (!PQconsumeInput(conn->pg)) {
        ngx_echelon_pg_set_error(conn->pool, "database read failed: ",
                                 PQerrorMessage(conn->pg));
        ngx_echelon_pg_broken(conn, NULL);
        return;
    }

    if (conn->state == NGX_ECHELON_CONN_IDLE) {

        /* an idle connection may only hear notices; anything else is odd */

        while (!PQisBusy(conn->pg)) {
            PGresult *res = PQgetResult(conn->pg);

            if (res == NULL) {
                break;
            }

            PQclear(res);
        }

        return;
    }

    ngx_echelon_pg_collect(conn);
}


/* read every result of the command; keep the first error or the last one */

static void
ngx_echelon_pg_collect(ngx_echelon_pg_conn_t *conn)
{
    PGresult        *res;
    ExecStatusType   st;

    while (!PQisBusy(conn->pg)) {

        res = PQgetResult(conn->pg);

        if (res == NULL) {
            ngx_echelon_pg_complete(conn);
            return;
        }

        st = PQresultStatus(conn->result ? conn->result : res);

        if (conn->result == NULL
            || (st != PGRES_FATAL_ERROR && st != PGRES_BAD_RESPONSE))
        {
            if (conn->result) {
                PQclear(conn->result);
            }

            conn->result = res;

        } else {
            PQclear(res);
        }
    }
}


static void
ngx_echelon_pg_complete(ngx_echelon_pg_conn_t *conn)
{
    char                    *field;
    PGresult                *res;
    ExecStatusType           st;
    ngx_event_t             *rev;
    ngx_echelon_pg_pool_t   *pool;
    ngx_echelon_pg_query_t  *q;

    pool = conn->pool;
    res = conn->result;
    conn->result = NULL;
    q = conn->query;

    st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;

    if (conn->state == NGX_ECHELON_CONN_PREPARING
        && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK))
    {
        PQclear(res);

        if (q == NULL) {
            if (conn->connection->read->timer_set) {
                ngx_del_timer(conn->connection->read);
            }

            conn->state = NGX_ECHELON_CONN_IDLE;
            goto next;
        }

        conn->prepared[q->sql] = 1;
        ngx_echelon_pg_execute(conn);
        return;
    }

    rev = conn->connection->read;

    if (rev->timer_set) {
        ngx_del_timer(rev);
    }

    conn->query = NULL;
    conn->state = NGX_ECHELON_CONN_IDLE;

    if (q == NULL || q->handler == NULL) {
        if (res) {
            PQclear(res);
        }

        goto next;
    }

    q->conn = NULL;
    q->pool = NULL;

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        q->status = NGX_ECHELON_PG_OK;

    } else {
        q->status = NGX_ECHELON_PG_FAILED;

        field = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        if (field) {
            ngx_cpystrn((u_char *) q->sqlstate, (u_char *) field,
                        sizeof(q->sqlstate));
        }

        ngx_echelon_pg_set_error(pool, "",
                                 res ? PQresultErrorMessage(res)
                                     : "no result");
        q->error.data = pool->error;
        q->error.len = pool->error_len;

        ngx_log_error(NGX_LOG_ERR, q->log, 0,
                      "echelon: statement \"%s\" failed: %V (SQLSTATE %s)",
                      q->text ? "simple query" : ngx_echelon_sql[q->sql].name,
                      &q->error, q->sqlstate);
    }

    q->handler(q, res);

    if (res) {
        PQclear(res);
    }

next:

    ngx_echelon_pg_dispatch(pool);
}


static void
ngx_echelon_pg_broken(ngx_echelon_pg_conn_t *conn, const char *what)
{
    ngx_echelon_pg_pool_t   *pool;
    ngx_echelon_pg_query_t  *q;

    pool = conn->pool;
    q = conn->query;

    if (what) {
        ngx_echelon_pg_set_error(pool, "database connection failed: ", what);
    }

    ngx_log_error(NGX_LOG_WARN, pool->log, 0, "echelon: %*s",
                  pool->error_len, pool->error);

    conn->query = NULL;
    ngx_echelon_pg_close(conn);

    if (q && q->handler) {
        ngx_echelon_pg_fail(q, NGX_ECHELON_PG_UNAVAILABLE);
    }
}


static void
ngx_echelon_pg_close(ngx_echelon_pg_conn_t *conn)
{
    ngx_connection_t  *c;

    if (conn->state == NGX_ECHELON_CONN_CONNECTING) {
        conn->pool->nconnecting--;
    }

    c = conn->connection;

    if (c) {
        if (c->read->timer_set) {
            ngx_del_timer(c->read);
        }

        if (c->read->posted) {
            ngx_delete_posted_event(c->read);
        }

        if (c->write->posted) {
            ngx_delete_posted_event(c->write);
        }

        /* libpq closes the socket: only forget it in the event module */

        if (c->read->active) {
            ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
        }

        if (c->write->active) {
            ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
        }

        ngx_free_connection(c);
        c->fd = (ngx_socket_t) -1;
    }

    if (conn->result) {
        PQclear(conn->result);
    }

    if (conn->pg) {
        PQfinish(conn->pg);
    }

    if (conn->query) {
        conn->query->conn = NULL;
    }

    ngx_queue_remove(&conn->queue);
    conn->pool->nconns--;

    ngx_free(conn);
}


/* the store is down: fail what waits now, and refuse quickly for a while */

static void
ngx_echelon_pg_down(ngx_echelon_pg_pool_t *pool, const char *why)
{
    ngx_queue_t             *qe;
    ngx_echelon_pg_query_t  *q;

    pool->down_until = ngx_current_msec + pool->emcf->retry_down;

    ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                  "echelon: database unavailable (%s): %*s; "
                  "retrying in %M ms", why, pool->error_len, pool->error,
                  pool->emcf->retry_down);

    while (!ngx_queue_empty(&pool->waiting)) {
        qe = ngx_queue_head(&pool->waiting);
        ngx_queue_remove(qe);
        q = ngx_queue_data(qe, ngx_echelon_pg_query_t, queue);
        q->waiting = 0;
        ngx_echelon_pg_fail(q, NGX_ECHELON_PG_UNAVAILABLE);
    }
}


/* failures reach their handlers from a posted event, never re-entrantly */

static void
ngx_echelon_pg_fail(ngx_echelon_pg_query_t *q,
    ngx_echelon_pg_status_e status)
{
    ngx_echelon_pg_pool_t  *pool;

    pool = q->pool;

    q->status = status;
    q->conn = NULL;
    q->waiting = 1;

    ngx_queue_insert_tail(&pool->failed, &q->queue);

    if (!pool->fail_event.posted) {
        ngx_post_event(&pool->fail_event, &ngx_posted_events);
    }
}


static void
ngx_echelon_pg_fail_handler(ngx_event_t *ev)
{
    ngx_queue_t             *qe;
    ngx_echelon_pg_pool_t   *pool;
    ngx_echelon_pg_query_t  *q;

    pool = ev->data;

    while (!ngx_queue_empty(&pool->failed)) {
        qe = ngx_queue_head(&pool->failed);
        ngx_queue_remove(qe);
        q = ngx_queue_data(qe, ngx_echelon_pg_query_t, queue);

        q->waiting = 0;
        q->pool = NULL;

        if (pool->error_len == 0) {
            ngx_echelon_pg_set_error(pool, "", "database unavailable");
        }

        q->error.data = pool->error;
        q->error.len = pool->error_len;

        if (q->handler) {
            q->handler(q, NULL);
        }
    }
}


static void
ngx_echelon_pg_queue_handler(ngx_event_t *ev)
{
    ngx_msec_t               age;
    ngx_queue_t             *qe;
    ngx_echelon_pg_pool_t   *pool;
    ngx_echelon_pg_query_t  *q;

    pool = ev->data;

    while (!ngx_queue_empty(&pool->waiting)) {
        qe = ngx_queue_head(&pool->waiting);
        q = ngx_queue_data(qe, ngx_echelon_pg_query_t, queue);

        age = ngx_current_msec - q->queued_at;

        if (age < pool->emcf->queue_timeout) {
            ngx_add_timer(ev, pool->emcf->queue_timeout - age);
            return;
        }

        ngx_queue_remove(qe);
        q->waiting = 0;

        ngx_echelon_pg_set_error(pool, "",
                                 "no database connection became free");
        ngx_echelon_pg_fail(q, NGX_ECHELON_PG_UNAVAILABLE);
    }
}


static void
ngx_echelon_pg_set_error(ngx_echelon_pg_pool_t *pool, const char *prefix,
    const char *message)
{
    u_char  *p, *last;

    last = pool->error + sizeof(pool->error);
    p = ngx_slprintf(pool->error, last, "%s%s", prefix, message);

    /* libpq ends its messages with a newline */

    while (p > pool->error && (p[-1] == '\n' || p[-1] == ' ')) {
        p--;
    }

    pool->error_len = p - pool->error;
}


/* the server's notices go to nginx's log, not to the process's stderr */

static void
ngx_echelon_pg_notice(void *arg, const char *message)
{
    ngx_log_t  *log = arg;

    size_t  len;

    len = ngx_strlen(message);

    while (len && (message[len - 1] == '\n' || message[len - 1] == ' ')) {
        len--;
    }

    ngx_log_error(NGX_LOG_INFO, log, 0, "echelon: database notice: %*s",
                  len, message);
}
