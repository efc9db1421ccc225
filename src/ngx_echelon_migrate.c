
/*
 * Copyright (C) Echelon
 *
 * Schema migrations, run on a worker's first database connection.
 *
 * One transaction holds an advisory lock while it reads the schema version
 * and applies every newer migration, so that workers and hosts starting
 * together wait for each other instead of colliding.
 */


#include "ngx_echelon.h"


#define NGX_ECHELON_MIGRATE_BEGIN                                            \
    "BEGIN; "                                                                \
    "SELECT pg_advisory_xact_lock(7319250117); "                             \
    "CREATE TABLE IF NOT EXISTS echelon_schema ("                            \
    "  version integer PRIMARY KEY,"                                         \
    "  applied_at timestamptz NOT NULL DEFAULT now()); "                     \
    "SELECT coalesce(max(version), 0) AS version FROM echelon_schema"


typedef struct {
    ngx_echelon_pg_pool_t        *pool;
    ngx_echelon_pg_conn_t        *conn;
    ngx_echelon_migrate_done_pt   done;
    ngx_echelon_pg_query_t        query;
    ngx_uint_t                    next;
    ngx_uint_t                    applied;
} ngx_echelon_migrate_t;


static void ngx_echelon_migrate_version(ngx_echelon_pg_query_t *q,
    PGresult *res);
static void ngx_echelon_migrate_step(ngx_echelon_pg_query_t *q,
    PGresult *res);
static void ngx_echelon_migrate_apply(ngx_echelon_migrate_t *m);
static void ngx_echelon_migrate_committed(ngx_echelon_pg_query_t *q,
    PGresult *res);
static void ngx_echelon_migrate_end(ngx_echelon_migrate_t *m,
    ngx_int_t rc);


/* one pool a process, and one migration at a time in it */

static ngx_echelon_migrate_t  ngx_echelon_migration;


ngx_int_t
ngx_echelon_migrate(ngx_echelon_pg_pool_t *pool, ngx_echelon_pg_conn_t *conn,
    ngx_echelon_migrate_done_pt done)
{
    ngx_echelon_migrate_t  *m;

    m = &ngx_echelon_migration;
    ngx_memzero(m, sizeof(ngx_echelon_migrate_t));

    m->pool = pool;
    m->conn = conn;
    m->done = done;

    m->query.text = NGX_ECHELON_MIGRATE_BEGIN;
    m->query.handler = ngx_echelon_migrate_version;
    m->query.data = m;
    m->query.log = ngx_echelon_pg_conn_log(conn);

    ngx_echelon_pg_conn_query(conn, &m->query);

    return NGX_OK;
}


static void
ngx_echelon_migrate_version(ngx_echelon_pg_query_t *q, PGresult *res)
{
    ngx_int_t               version;
    ngx_str_t               v;
    ngx_echelon_migrate_t  *m;

    m = q->data;

    if (res == NULL || q->status != NGX_ECHELON_PG_OK) {
        ngx_echelon_migrate_end(m, NGX_ERROR);
        return;
    }

    v = ngx_echelon_pg_value(res, 0, "version");
    version = ngx_atoi(v.data, v.len);

    if (version == NGX_ERROR) {
        ngx_echelon_migrate_end(m, NGX_ERROR);
        return;
    }

    while (ngx_echelon_migrations[m->next].text
           && ngx_echelon_migrations[m->next].version <= (ngx_uint_t) version)
    {
        m->next++;
    }

    ngx_echelon_migrate_apply(m);
}


static void
ngx_echelon_migrate_step(ngx_echelon_pg_query_t *q, PGresult *res)
{
    ngx_echelon_migrate_t  *m;

    m = q->data;

    if (res == NULL || q->status != NGX_ECHELON_PG_OK) {
        ngx_log_error(NGX_LOG_EMERG, q->log, 0,
                      "echelon: schema migration %ui failed: %V",
                      ngx_echelon_migrations[m->next].version, &q->error);
        ngx_echelon_migrate_end(m, NGX_ERROR);
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, q->log, 0,
                  "echelon: applied schema migration %ui",
                  ngx_echelon_migrations[m->next].version);

    m->next++;
    m->applied++;

    ngx_echelon_migrate_apply(m);
}


static void
ngx_echelon_migrate_apply(ngx_echelon_migrate_t *m)
{
    ngx_echelon_pg_query_t  *q;

    q = &m->query;

    if (ngx_echelon_migrations[m->next].text) {
        q->text = ngx_echelon_migrations[m->next].text;
        q->handler = ngx_echelon_migrate_step;

    } else {
        q->text = "COMMIT";
        q->handler = ngx_echelon_migrate_committed;
    }

    ngx_echelon_pg_conn_query(m->conn, q);
}


static void
ngx_echelon_migrate_committed(ngx_echelon_pg_query_t *q, PGresult *res)
{
    ngx_echelon_migrate_t  *m;

    m = q->data;

    if (res == NULL || q->status != NGX_ECHELON_PG_OK) {
        ngx_echelon_migrate_end(m, NGX_ERROR);
        return;
    }

    if (m->applied == 0) {
        ngx_log_debug0(NGX_LOG_DEBUG_EVENT, q->log, 0,
                       "echelon: schema is up to date");
    }

    ngx_echelon_migrate_end(m, NGX_OK);
}


static void
ngx_echelon_migrate_end(ngx_echelon_migrate_t *m, ngx_int_t rc)
{
    ngx_echelon_pg_pool_t        *pool;
    ngx_echelon_pg_conn_t        *conn;
    ngx_echelon_migrate_done_pt   done;

    pool = m->pool;
    done = m->done;

    /* a query that failed for want of a connection has lost it */

    conn = (m->query.status == NGX_ECHELON_PG_UNAVAILABLE) ? NULL : m->conn;

    ngx_memzero(m, sizeof(ngx_echelon_migrate_t));

    done(pool, conn, rc);
}
