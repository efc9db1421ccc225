
/*
 * Copyright (C) Echelon
 *
 * The scheduler: a timer in one worker that claims due deliveries from
 * PostgreSQL, checks that they should still go out, renders them, hands
 * them to a transport and writes down what became of each.
 *
 * A claim is a lease with a token.  Only the holder of the token can
 * finish a delivery, so a worker presumed dead cannot overwrite a newer
 * result; a lease that runs out puts the delivery back in the queue.
 */


#include "ngx_echelon.h"


#define NGX_ECHELON_FINISH_RETRY   1000
#define NGX_ECHELON_FINISH_MAX     500
#define NGX_ECHELON_REASON_SHORT   200

/* sent, waiting for their results to be written: at most batches of them */
#define NGX_ECHELON_WRITING_MAX    4
#define NGX_ECHELON_BACKOFF_MAX    86400


typedef struct {
    ngx_echelon_main_conf_t    *emcf;
    ngx_log_t                  *log;
    ngx_event_t                 tick;
    ngx_event_t                 guard;
    ngx_echelon_pg_query_t      query;
    ngx_queue_t                 jobs;
    ngx_uint_t                  njobs;
    ngx_uint_t                  nsending;   /* not yet ended */

    /* results waiting to be written, and those being written */
    ngx_queue_t                 finishing;
    ngx_queue_t                 flushing;
    ngx_echelon_pg_query_t      flush;
    char                       *flush_json;
    ngx_event_t                 flush_retry;

    char                        limit[NGX_INT_T_LEN + 1];
    ngx_uint_t                  nlimit;
    char                        lease[NGX_INT_T_LEN + 1];
    char                        attempts[NGX_INT_T_LEN + 1];
    unsigned                    claiming:1;
    unsigned                    again:1;
    unsigned                    flushing_now:1;
} ngx_echelon_scheduler_t;


typedef struct {
    ngx_echelon_scheduler_t    *sched;
    ngx_pool_t                 *pool;
    ngx_queue_t                 queue;
    ngx_queue_t                 finish;     /* finishing or flushing */
    ngx_msec_t                  started;

    ngx_str_t                   id;
    ngx_str_t                   token;
    ngx_str_t                   account_id;
    ngx_uint_t                  attempts;

    const char                 *status;
    const char                 *outcome;
    ngx_str_t                   reason;
    ngx_str_t                   provider_id;
    time_t                      retry_after;
    ngx_str_t                   channel;
    ngx_str_t                   sender;
    ngx_str_t                   address;
    ngx_str_t                   subject;
    ngx_str_t                   body;
    char                        retry_in[NGX_INT_T_LEN + 1];
    unsigned                    retrying:1;
    unsigned                    sending:1;  /* counted in nsending */
    unsigned                    alone:1;    /* failed in a group */
    unsigned                    degraded:1; /* failed alone as well */
} ngx_echelon_job_t;


static void ngx_echelon_sched_tick(ngx_event_t *ev);
static void ngx_echelon_sched_rescued(ngx_echelon_pg_query_t *q,
    PGresult *res);
static void ngx_echelon_sched_claimed(ngx_echelon_pg_query_t *q,
    PGresult *res);
static void ngx_echelon_sched_next(ngx_echelon_scheduler_t *sched,
    ngx_msec_t delay);
static ngx_uint_t ngx_echelon_sched_room(ngx_echelon_scheduler_t *sched);
static void ngx_echelon_sched_resume(ngx_echelon_scheduler_t *sched);
static void ngx_echelon_job_start(ngx_echelon_scheduler_t *sched,
    PGresult *res, int row);
static ngx_int_t ngx_echelon_job_check(ngx_echelon_job_t *job,
    PGresult *res, int row, ngx_str_t *channel);
static ngx_int_t ngx_echelon_job_render(ngx_echelon_job_t *job,
    PGresult *res, int row, ngx_echelon_mail_t *mail);
static void ngx_echelon_job_sent(void *data, ngx_echelon_send_e rc,
    ngx_str_t *reason);
static void ngx_echelon_job_texted(void *data, ngx_echelon_send_e rc,
    ngx_str_t *provider_id, ngx_str_t *reason, time_t retry_after);
static ngx_int_t ngx_echelon_job_text(ngx_echelon_job_t *job);
static void ngx_echelon_job_end(ngx_echelon_job_t *job, const char *status,
    const char *outcome, const char *reason);
static void ngx_echelon_job_finish(ngx_echelon_job_t *job);
static void ngx_echelon_sched_flush(ngx_echelon_scheduler_t *sched);
static json_t *ngx_echelon_job_result(ngx_echelon_job_t *job);
static void ngx_echelon_sched_flushed(ngx_echelon_pg_query_t *q,
    PGresult *res);
static void ngx_echelon_flush_retry_handler(ngx_event_t *ev);
static void ngx_echelon_job_free(ngx_echelon_job_t *job);
static ngx_str_t ngx_echelon_job_copy(ngx_echelon_job_t *job, PGresult *res,
    int row, const char *column);
static ngx_int_t ngx_echelon_is(ngx_str_t *v, const char *s);
static void ngx_echelon_guard_handler(ngx_event_t *ev);
static json_t *ngx_echelon_json_cstr(const char *s);


static ngx_echelon_scheduler_t  *ngx_echelon_scheduler;


ngx_int_t
ngx_echelon_scheduler_start(ngx_cycle_t *cycle,
    ngx_echelon_main_conf_t *emcf)
{
    ngx_echelon_scheduler_t  *sched;

    sched = ngx_pcalloc(cycle->pool, sizeof(ngx_echelon_scheduler_t));
    if (sched == NULL) {
        return NGX_ERROR;
    }

    sched->emcf = emcf;
    sched->log = cycle->log;
    ngx_queue_init(&sched->jobs);
    ngx_queue_init(&sched->finishing);
    ngx_queue_init(&sched->flushing);

    ngx_sprintf((u_char *) sched->lease, "%M%Z",
                emcf->scheduler_lease / 1000);
    ngx_sprintf((u_char *) sched->attempts, "%ui%Z", emcf->max_attempts);

    sched->tick.handler = ngx_echelon_sched_tick;
    sched->tick.data = sched;
    sched->tick.log = cycle->log;
    sched->tick.cancelable = 1;

    /* held while sends are in flight, so that a graceful exit waits */

    sched->guard.handler = ngx_echelon_guard_handler;
    sched->guard.data = sched;
    sched->guard.log = cycle->log;

    sched->flush_retry.handler = ngx_echelon_flush_retry_handler;
    sched->flush_retry.data = sched;
    sched->flush_retry.log = cycle->log;
    sched->flush_retry.cancelable = 1;

    ngx_echelon_scheduler = sched;

    ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                  "echelon: scheduler runs in this process, every %M ms, "
                  "%ui deliveries a batch", emcf->scheduler_interval,
                  emcf->scheduler_batch);

    ngx_add_timer(&sched->tick, 1);

    return NGX_OK;
}


void
ngx_echelon_scheduler_stop(ngx_cycle_t *cycle)
{
    ngx_queue_t              *qe;
    ngx_echelon_job_t        *job;
    ngx_echelon_scheduler_t  *sched;

    sched = ngx_echelon_scheduler;

    if (sched == NULL) {
        return;
    }

    if (sched->tick.timer_set) {
        ngx_del_timer(&sched->tick);
    }

    if (sched->guard.timer_set) {
        ngx_del_timer(&sched->guard);
    }

    if (sched->flush_retry.timer_set) {
        ngx_del_timer(&sched->flush_retry);
    }

    ngx_echelon_pg_detach(&sched->query);
    ngx_echelon_pg_detach(&sched->flush);

    if (sched->flush_json) {
        ngx_free(sched->flush_json);
        sched->flush_json = NULL;
    }

    ngx_queue_init(&sched->finishing);
    ngx_queue_init(&sched->flushing);

    sched->again = 0;

    /* what is still claimed goes back to the queue when its lease ends */

    while (!ngx_queue_empty(&sched->jobs)) {
        qe = ngx_queue_head(&sched->jobs);
        job = ngx_queue_data(qe, ngx_echelon_job_t, queue);
        ngx_echelon_job_free(job);
    }

    ngx_echelon_scheduler = NULL;
}


static void
ngx_echelon_sched_tick(ngx_event_t *ev)
{
    ngx_echelon_scheduler_t  *sched;

    sched = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (sched->claiming) {
        return;
    }

    /* no more in flight than one batch */

    if (!ngx_echelon_sched_room(sched)) {
        sched->again = 1;
        return;
    }

    sched->claiming = 1;

    ngx_memzero(&sched->query, sizeof(ngx_echelon_pg_query_t));
    sched->query.sql = NGX_ECHELON_SQL_RESCUE;
    sched->query.handler = ngx_echelon_sched_rescued;
    sched->query.data = sched;
    sched->query.log = sched->log;

    ngx_echelon_pg_param_cstr(&sched->query, sched->attempts);

    ngx_echelon_pg_query(sched->emcf->pool, &sched->query);
}


static void
ngx_echelon_sched_rescued(ngx_echelon_pg_query_t *q, PGresult *res)
{
    char                     *n;
    ngx_echelon_scheduler_t  *sched;

    sched = q->data;

    if (res == NULL || q->status != NGX_ECHELON_PG_OK) {
        sched->claiming = 0;
        ngx_echelon_sched_next(sched, sched->emcf->scheduler_interval);
        return;
    }

    n = PQcmdTuples(res);

    if (n[0] != '0') {
        ngx_log_error(NGX_LOG_WARN, sched->log, 0,
                      "echelon: %s deliveries whose lease ran out are due "
                      "again", n);
    }

    ngx_memzero(q, sizeof(ngx_echelon_pg_query_t));
    q->sql = NGX_ECHELON_SQL_CLAIM;
    q->handler = ngx_echelon_sched_claimed;
    q->data = sched;
    q->log = sched->log;

    /* what is still sending counts against the batch */

    sched->nlimit = sched->emcf->scheduler_batch - sched->nsending;
    ngx_sprintf((u_char *) sched->limit, "%ui%Z", sched->nlimit);

    ngx_echelon_pg_param_cstr(q, sched->limit);
    ngx_echelon_pg_param_cstr(q, sched->lease);

    ngx_echelon_pg_query(sched->emcf->pool, q);
}


static void
ngx_echelon_sched_claimed(ngx_echelon_pg_query_t *q, PGresult *res)
{
    int                       i, n;
    ngx_echelon_scheduler_t  *sched;

    sched = q->data;
    sched->claiming = 0;

    if (res == NULL || q->status != NGX_ECHELON_PG_OK) {
        ngx_echelon_sched_next(sched, sched->emcf->scheduler_interval);
        return;
    }

    n = PQntuples(res);

    if (n) {
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, sched->log, 0,
                       "echelon: claimed %d deliveries", n);
    }

    for (i = 0; i < n; i++) {
        ngx_echelon_job_start(sched, res, i);
    }

    /* as many as asked for means more are due now */

    if ((ngx_uint_t) n == sched->nlimit) {
        ngx_echelon_sched_next(sched, 1);
        return;
    }

    ngx_echelon_sched_next(sched, sched->emcf->scheduler_interval);
}


static void
ngx_echelon_sched_next(ngx_echelon_scheduler_t *sched, ngx_msec_t delay)
{
    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (sched->tick.timer_set) {
        ngx_del_timer(&sched->tick);
    }

    ngx_add_timer(&sched->tick, delay);
}


/*
 * Room for another claim: fewer than a batch still sending, and the results
 * waiting to be written have not piled up (the database is slow or away).
 */

static ngx_uint_t
ngx_echelon_sched_room(ngx_echelon_scheduler_t *sched)
{
    ngx_uint_t  batch;

    batch = sched->emcf->scheduler_batch;

    return sched->nsending < batch
           && sched->njobs < NGX_ECHELON_WRITING_MAX * batch;
}


/* a tick that found no room is taken as soon as there is some */

static void
ngx_echelon_sched_resume(ngx_echelon_scheduler_t *sched)
{
    if (sched->again && ngx_echelon_sched_room(sched)) {
        sched->again = 0;
        ngx_echelon_sched_next(sched, 1);
    }
}


static void
ngx_echelon_job_start(ngx_echelon_scheduler_t *sched, PGresult *res, int row)
{
    ngx_str_t            v, channel;
    ngx_int_t            rc;
    ngx_pool_t          *pool;
    ngx_echelon_job_t   *job;
    ngx_echelon_mail_t   mail;

    pool = ngx_create_pool(2048, sched->log);
    if (pool == NULL) {
        return;
    }

    job = ngx_pcalloc(pool, sizeof(ngx_echelon_job_t));
    if (job == NULL) {
        ngx_destroy_pool(pool);
        return;
    }

    job->sched = sched;
    job->pool = pool;
    job->started = ngx_current_msec;

    ngx_queue_insert_tail(&sched->jobs, &job->queue);
    sched->njobs++;
    sched->nsending++;
    job->sending = 1;

    if (!sched->guard.timer_set) {
        ngx_add_timer(&sched->guard, sched->emcf->scheduler_lease);
    }

    job->id = ngx_echelon_job_copy(job, res, row, "id");
    job->token = ngx_echelon_job_copy(job, res, row, "claim_token");
    job->channel = ngx_echelon_job_copy(job, res, row, "channel");
    job->account_id = ngx_echelon_job_copy(job, res, row, "account_id");
    job->retry_after = -1;

    v = ngx_echelon_pg_value(res, row, "attempts");
    job->attempts = ngx_atoi(v.data, v.len);

    channel = ngx_echelon_pg_value(res, row, "channel");

    if (ngx_echelon_job_check(job, res, row, &channel) != NGX_OK) {
        return;
    }

    ngx_memzero(&mail, sizeof(ngx_echelon_mail_t));

    if (ngx_echelon_job_render(job, res, row, &mail) != NGX_OK) {
        ngx_echelon_job_end(job, "failed", NULL,
                            "the message could not be rendered");
        return;
    }

    if (!ngx_echelon_is(&job->channel, "email")) {
        rc = ngx_echelon_job_text(job);

    } else {
        rc = ngx_echelon_smtp_send(sched->emcf->smtp, &mail,
                                   ngx_echelon_job_sent, job);
    }

    if (rc != NGX_OK) {
        ngx_echelon_job_end(job, "scheduled", "transient",
                            "the transfer could not be started");
    }
}


/*
 * Should it still go out?  NGX_OK to send; otherwise the delivery has been
 * ended as cancelled or skipped, with the reason.
 */

static ngx_int_t
ngx_echelon_job_check(ngx_echelon_job_t *job, PGresult *res, int row,
    ngx_str_t *channel)
{
    ngx_str_t    v, event;
    const char  *reason;

    v = ngx_echelon_pg_value(res, row, "trigger_deleted");
    if (ngx_echelon_is(&v, "t")) {
        ngx_echelon_job_end(job, "cancelled", NULL,
                            "the trigger was deleted");
        return NGX_DECLINED;
    }

    v = ngx_echelon_pg_value(res, row, "employee_deleted");
    if (ngx_echelon_is(&v, "t")) {
        ngx_echelon_job_end(job, "cancelled", NULL,
                            "the employee was deleted");
        return NGX_DECLINED;
    }

    /* reminders go out only while the invoice is unpaid */

    v = ngx_echelon_pg_value(res, row, "unless_paid");
    event = ngx_echelon_pg_value(res, row, "event");

    if (ngx_echelon_is(&v, "t") || ngx_echelon_is(&event, "invoice.overdue")
        || ngx_echelon_is(&event, "invoice.unpaid_repeated"))
    {
        v = ngx_echelon_pg_value(res, row, "invoice_status");

        if (ngx_echelon_is(&v, "paid") || ngx_echelon_is(&v, "void")
            || ngx_echelon_is(&v, "uncollectible"))
        {
            ngx_echelon_job_end(job, "cancelled", NULL,
                                ngx_echelon_is(&v, "paid")
                                ? "the invoice is paid"
                                : ngx_echelon_is(&v, "void")
                                ? "the invoice is void"
                                : "the invoice is uncollectible");
            return NGX_DECLINED;
        }
    }

    v = ngx_echelon_pg_value(res, row, "channel_enabled");
    if (!ngx_echelon_is(&v, "t")) {
        ngx_echelon_job_end(job, "skipped", NULL,
                            "the employee no longer uses this channel");
        return NGX_DECLINED;
    }

    if (ngx_echelon_is(channel, "email")) {
        job->address = ngx_echelon_job_copy(job, res, row, "email");

        if (job->address.len == 0) {
            ngx_echelon_job_end(job, "skipped", NULL,
                                "the contact has no email address");
            return NGX_DECLINED;
        }

        return NGX_OK;
    }

    /* SMS and WhatsApp: the plan, the account's number, the contact's */

    v = ngx_echelon_pg_value(res, row, "plan");
    if (ngx_echelon_is(&v, "starter")) {
        ngx_echelon_job_end(job, "skipped", NULL,
                            "the starter plan does not include this channel");
        return NGX_DECLINED;
    }

    job->sender = ngx_echelon_job_copy(job, res, row, "sender");
    if (job->sender.len == 0) {
        ngx_echelon_job_end(job, "skipped", NULL,
                            ngx_echelon_is(channel, "sms")
                            ? "the account has not connected SMS"
                            : "the account has not connected WhatsApp");
        return NGX_DECLINED;
    }

    job->address = ngx_echelon_job_copy(job, res, row,
                                        ngx_echelon_is(channel, "sms")
                                        ? "phone" : "whatsapp");
    if (job->address.len == 0) {
        ngx_echelon_job_end(job, "skipped", NULL,
                            ngx_echelon_is(channel, "sms")
                            ? "the contact has no phone number"
                            : "the contact has no WhatsApp number");
        return NGX_DECLINED;
    }

    reason = ngx_echelon_text_unavailable(job->sched->emcf, channel);
    if (reason) {
        ngx_echelon_job_end(job, "skipped", NULL, reason);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_echelon_job_render(ngx_echelon_job_t *job, PGresult *res, int row,
    ngx_echelon_mail_t *mail)
{
    int64_t              amount;
    ngx_int_t            rc;
    ngx_str_t            v, currency, tmpl;
    ngx_echelon_vars_t   vars;

    ngx_memzero(&vars, sizeof(ngx_echelon_vars_t));

    vars.contact_name = ngx_echelon_pg_value(res, row, "contact_name");
    if (vars.contact_name.len == 0) {
        ngx_str_set(&vars.contact_name, "there");
    }

    vars.invoice_number = ngx_echelon_pg_value(res, row, "number");
    vars.invoice_url = ngx_echelon_pg_value(res, row, "url");
    vars.employee_name = ngx_echelon_pg_value(res, row, "employee_name");
    vars.account_name = ngx_echelon_pg_value(res, row, "account_name");

    vars.invoice_due_date = ngx_echelon_pg_value(res, row, "due_date");
    if (vars.invoice_due_date.len == 0) {
        ngx_str_set(&vars.invoice_due_date, "on receipt");
    }

    vars.event = ngx_echelon_pg_value(res, row, "event");
    vars.tone = ngx_echelon_pg_value(res, row, "tone");

    v = ngx_echelon_pg_value(res, row, "amount_due");
    currency = ngx_echelon_pg_value(res, row, "currency");

    if (v.len) {
        amount = ngx_atoof(v.data[0] == '-' ? v.data + 1 : v.data,
                           v.data[0] == '-' ? v.len - 1 : v.len);
        if (v.data[0] == '-') {
            amount = -amount;
        }

        if (ngx_echelon_format_money(job->pool, amount, &currency,
                                     &vars.invoice_amount)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    /* what the template leaves out, the employee writes in its tone */

    tmpl = ngx_echelon_pg_value(res, row, "template_subject");

    if (ngx_echelon_is(&job->channel, "email")) {
        rc = tmpl.data ? ngx_echelon_render(job->pool, &tmpl, &vars,
                                            &job->subject)
                       : ngx_echelon_render_subject(job->pool, &vars,
                                                    &job->subject);
        if (rc != NGX_OK) {
            return NGX_ERROR;
        }
    }

    tmpl = ngx_echelon_pg_value(res, row, "template_body");

    if (tmpl.data == NULL) {
        ngx_str_set(&tmpl, "{{greeting}}\n\n{{message}}\n\n{{closing}}");
    }

    if (ngx_echelon_render(job->pool, &tmpl, &vars, &job->body) != NGX_OK) {
        return NGX_ERROR;
    }

    mail->from = ngx_echelon_pg_value(res, row, "sender");
    if (mail->from.len == 0) {
        mail->from = job->sched->emcf->smtp_from;
    }

    mail->to = job->address;
    mail->subject = job->subject;
    mail->body = job->body;
    mail->message_id = job->id;

    return NGX_OK;
}


static void
ngx_echelon_job_sent(void *data, ngx_echelon_send_e rc, ngx_str_t *reason)
{
    u_char             *p;
    ngx_echelon_job_t  *job;

    job = data;

    switch (rc) {

    case NGX_ECHELON_SEND_OK:
        ngx_log_error(NGX_LOG_INFO, job->sched->log, 0,
                      "echelon: delivery %V sent by email in %M ms",
                      &job->id, ngx_current_msec - job->started);

        ngx_echelon_job_end(job, "sent", "sent", NULL);
        return;

    case NGX_ECHELON_SEND_TRANSIENT:
        p = ngx_pnalloc(job->pool, reason->len + 1);
        if (p) {
            *ngx_cpymem(p, reason->data, reason->len) = '\0';
        }

        ngx_echelon_job_end(job, "scheduled", "transient",
                            p ? (char *) p : "temporary failure");
        return;

    default:
        p = ngx_pnalloc(job->pool, reason->len + 1);
        if (p) {
            *ngx_cpymem(p, reason->data, reason->len) = '\0';
        }

        ngx_echelon_job_end(job, "failed", "permanent",
                            p ? (char *) p : "permanent failure");
        return;
    }
}


static ngx_int_t
ngx_echelon_job_text(ngx_echelon_job_t *job)
{
    ngx_echelon_text_t  msg;

    msg.channel = job->channel;
    msg.from = job->sender;
    msg.to = job->address;
    msg.body = job->body;
    msg.delivery_id = job->id;
    msg.account_id = job->account_id;

    return ngx_echelon_text_send(job->sched->emcf, job->pool, &msg,
                                 ngx_echelon_job_texted, job);
}


static void
ngx_echelon_job_texted(void *data, ngx_echelon_send_e rc,
    ngx_str_t *provider_id, ngx_str_t *reason, time_t retry_after)
{
    u_char             *p;
    ngx_echelon_job_t  *job;

    job = data;

    if (provider_id->len) {
        job->provider_id.data = ngx_pnalloc(job->pool, provider_id->len + 1);
        if (job->provider_id.data) {
            *ngx_cpymem(job->provider_id.data, provider_id->data,
                        provider_id->len) = '\0';
            job->provider_id.len = provider_id->len;
        }
    }

    if (rc == NGX_ECHELON_SEND_OK) {
        ngx_log_error(NGX_LOG_INFO, job->sched->log, 0,
                      "echelon: delivery %V sent by %V in %M ms",
                      &job->id, &job->channel,
                      ngx_current_msec - job->started);

        ngx_echelon_job_end(job, "sent", "sent", NULL);
        return;
    }

    p = ngx_pnalloc(job->pool, reason->len + 1);
    if (p) {
        *ngx_cpymem(p, reason->data, reason->len) = '\0';
    }

    job->retry_after = retry_after;

    if (rc == NGX_ECHELON_SEND_TRANSIENT) {
        ngx_echelon_job_end(job, "scheduled", "transient",
                            p ? (char *) p : "temporary failure");
        return;
    }

    ngx_echelon_job_end(job, "failed", "permanent",
                        p ? (char *) p : "permanent failure");
}


/*
 * What became of the delivery: a final status, or "scheduled" for another
 * attempt after a backoff, unless the attempts are used up
 */

static void
ngx_echelon_job_end(ngx_echelon_job_t *job, const char *status,
    const char *outcome, const char *reason)
{
    u_char                   *p;
    size_t                    len;
    ngx_uint_t                attempt, delay, jitter;
    ngx_echelon_main_conf_t  *emcf;

    emcf = job->sched->emcf;

    job->status = status;
    job->outcome = outcome;

    /* its place in the batch is free while the result is written */

    if (job->sending) {
        job->sending = 0;
        job->sched->nsending--;
        ngx_echelon_sched_resume(job->sched);
    }

    if (reason) {
        job->reason.data = (u_char *) reason;
        job->reason.len = ngx_strlen(reason);
    }

    if (ngx_strcmp(status, "scheduled") == 0) {
        attempt = job->attempts + 1;

        if (attempt >= emcf->max_attempts) {
            len = sizeof("gave up after  attempts: ") + NGX_INT_T_LEN
                  + job->reason.len;

            p = ngx_pnalloc(job->pool, len);
            if (p) {
                *ngx_snprintf(p, len - 1, "gave up after %ui attempts: %V",
                              attempt, &job->reason) = '\0';
                job->reason.data = p;
                job->reason.len = ngx_strlen(p);
            }

            job->status = "failed";

        } else {
            delay = emcf->retry_backoff / 1000;
            delay = ngx_max(delay, 1) << ngx_min(attempt - 1, 16);
            delay = ngx_min(delay, NGX_ECHELON_BACKOFF_MAX);

            /* up to a fifth more, so that retries do not march together */

            jitter = delay / 5 ? ngx_random() % (delay / 5 + 1) : 0;

            /* a provider's Retry-After is a floor */

            if (job->retry_after > 0
                && (ngx_uint_t) job->retry_after > delay + jitter)
            {
                delay = ngx_min((ngx_uint_t) job->retry_after,
                                NGX_ECHELON_BACKOFF_MAX);
                jitter = 0;
            }

            job->retrying = 1;
            ngx_sprintf((u_char *) job->retry_in, "%ui%Z", delay + jitter);
        }

        ngx_log_error(NGX_LOG_WARN, job->sched->log, 0,
                      "echelon: delivery %V attempt %ui failed: %V%s",
                      &job->id, attempt, &job->reason,
                      job->retrying ? "; will retry" : "; giving up");

    } else if (ngx_strcmp(status, "sent") != 0) {
        ngx_log_error(NGX_LOG_INFO, job->sched->log, 0,
                      "echelon: delivery %V %s: %V",
                      &job->id, job->status, &job->reason);
    }

    ngx_echelon_job_finish(job);
}


/*
 * Results are written together: one statement for all that ended while the
 * previous one was on its way, so that a busy scheduler commits once per
 * group rather than once per delivery.
 */

static void
ngx_echelon_job_finish(ngx_echelon_job_t *job)
{
    ngx_queue_insert_tail(&job->sched->finishing, &job->finish);

    ngx_echelon_sched_flush(job->sched);
}


static void
ngx_echelon_sched_flush(ngx_echelon_scheduler_t *sched)
{
    json_t                  *results, *result;
    ngx_uint_t               n;
    ngx_queue_t             *qe;
    ngx_echelon_job_t       *job;
    ngx_echelon_pg_query_t  *q;

    if (sched->flushing_now || sched->flush_retry.timer_set
        || ngx_queue_empty(&sched->finishing))
    {
        return;
    }

    results = json_array();
    if (results == NULL) {
        goto failed;
    }

    /* one that failed in a group is written by itself */

    for (n = 0; !ngx_queue_empty(&sched->finishing); n++) {

        qe = ngx_queue_head(&sched->finishing);
        job = ngx_queue_data(qe, ngx_echelon_job_t, finish);

        if (n == NGX_ECHELON_FINISH_MAX || (n && job->alone)) {
            break;
        }

        result = ngx_echelon_job_result(job);

        if (result == NULL || json_array_append_new(results, result) != 0) {
            json_decref(results);
            goto failed;
        }

        ngx_queue_remove(qe);
        ngx_queue_insert_tail(&sched->flushing, qe);

        if (job->alone) {
            break;
        }
    }

    sched->flush_json = json_dumps(results, JSON_COMPACT);
    json_decref(results);

    if (sched->flush_json == NULL) {
        goto failed;
    }

    sched->flushing_now = 1;

    q = &sched->flush;

    ngx_memzero(q, sizeof(ngx_echelon_pg_query_t));
    q->sql = NGX_ECHELON_SQL_FINISH;
    q->handler = ngx_echelon_sched_flushed;
    q->data = sched;
    q->log = sched->log;

    ngx_echelon_pg_param_cstr(q, sched->flush_json);

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, sched->log, 0,
                   "echelon: writing the results of %ui deliveries", n);

    ngx_echelon_pg_query(sched->emcf->pool, q);

    return;

failed:

    /* out of memory: put back what was taken, and try again later */

    while (!ngx_queue_empty(&sched->flushing)) {
        qe = ngx_queue_last(&sched->flushing);
        ngx_queue_remove(qe);
        ngx_queue_insert_head(&sched->finishing, qe);
    }

    ngx_add_timer(&sched->flush_retry, NGX_ECHELON_FINISH_RETRY);
}


static json_t *
ngx_echelon_job_result(ngx_echelon_job_t *job)
{
    u_char  *p;
    json_t  *o;

    o = json_object();
    if (o == NULL) {
        return NULL;
    }

    /*
     * A result the database refused even alone is written once more with
     * only what the delivery's state needs: the status, the retry, the
     * outcome, and a reason kept short.
     */

    if (job->degraded) {
        if (job->reason.len > NGX_ECHELON_REASON_SHORT) {
            p = ngx_pnalloc(job->pool, NGX_ECHELON_REASON_SHORT + 1);
            if (p == NULL) {
                json_decref(o);
                return NULL;
            }

            *ngx_cpymem(p, job->reason.data, NGX_ECHELON_REASON_SHORT) = '\0';
            job->reason.data = p;
            job->reason.len = NGX_ECHELON_REASON_SHORT;
        }

        ngx_str_null(&job->address);
        ngx_str_null(&job->subject);
        ngx_str_null(&job->body);
        ngx_str_null(&job->provider_id);
    }

    if (json_object_set_new(o, "id", ngx_echelon_json_cstr(
                                      (const char *) job->id.data))
        || json_object_set_new(o, "token", ngx_echelon_json_cstr(
                                         (const char *) job->token.data))
        || json_object_set_new(o, "status", ngx_echelon_json_cstr(
                                          job->status))
        || json_object_set_new(o, "reason", ngx_echelon_json_cstr(
                                          (const char *) job->reason.data))
        || json_object_set_new(o, "address", ngx_echelon_json_cstr(
                                           (const char *) job->address.data))
        || json_object_set_new(o, "subject", ngx_echelon_json_cstr(
                                           (const char *) job->subject.data))
        || json_object_set_new(o, "body", ngx_echelon_json_cstr(
                                        (const char *) job->body.data))
        || json_object_set_new(o, "retry_in", ngx_echelon_json_cstr(
                                            job->retrying ? job->retry_in
                                                          : NULL))
        || json_object_set_new(o, "outcome", ngx_echelon_json_cstr(
                                           job->outcome))
        || json_object_set_new(o, "provider_id", ngx_echelon_json_cstr(
                                   (const char *) job->provider_id.data)))
    {
        json_decref(o);
        return NULL;
    }

    return o;
}


static void
ngx_echelon_sched_flushed(ngx_echelon_pg_query_t *q, PGresult *res)
{
    ngx_uint_t                n;
    ngx_queue_t              *qe;
    ngx_echelon_job_t        *job;
    ngx_echelon_scheduler_t  *sched;

    sched = q->data;
    sched->flushing_now = 0;

    ngx_free(sched->flush_json);
    sched->flush_json = NULL;

    if (res != NULL && q->status == NGX_ECHELON_PG_OK) {

        while (!ngx_queue_empty(&sched->flushing)) {
            qe = ngx_queue_head(&sched->flushing);
            job = ngx_queue_data(qe, ngx_echelon_job_t, finish);
            ngx_queue_remove(qe);
            ngx_echelon_job_free(job);
        }

        ngx_echelon_sched_flush(sched);
        return;
    }

    /*
     * The results are known but not written.  Keep trying while the leases
     * hold; after that the deliveries are due again, and may go out twice.
     * A group the database refused is split, so that one bad result cannot
     * hold back the others.
     */

    n = 0;

    while (!ngx_queue_empty(&sched->flushing)) {
        qe = ngx_queue_head(&sched->flushing);
        job = ngx_queue_data(qe, ngx_echelon_job_t, finish);
        ngx_queue_remove(qe);

        if (ngx_current_msec - job->started
            >= sched->emcf->scheduler_lease - NGX_ECHELON_FINISH_RETRY)
        {
            ngx_log_error(NGX_LOG_ERR, sched->log, 0,
                          "echelon: the result of delivery %V could not be "
                          "stored before its lease ran out", &job->id);
            ngx_echelon_job_free(job);
            continue;
        }

        if (q->status == NGX_ECHELON_PG_FAILED) {

            if (job->degraded) {
                ngx_log_error(NGX_LOG_ERR, sched->log, 0,
                              "echelon: the result of delivery %V cannot be "
                              "stored; it is due again when its lease runs "
                              "out", &job->id);
                ngx_echelon_job_free(job);
                continue;
            }

            if (job->alone) {
                job->degraded = 1;

            } else {
                job->alone = 1;
            }

            n++;
        }

        ngx_queue_insert_tail(&sched->finishing, qe);
    }

    /* refused: written again at once, apart; unavailable: a second later */

    if (n) {
        ngx_echelon_sched_flush(sched);
        return;
    }

    if (!ngx_queue_empty(&sched->finishing)) {
        ngx_add_timer(&sched->flush_retry, NGX_ECHELON_FINISH_RETRY);
    }
}


static void
ngx_echelon_flush_retry_handler(ngx_event_t *ev)
{
    ngx_echelon_sched_flush(ev->data);
}


static void
ngx_echelon_job_free(ngx_echelon_job_t *job)
{
    ngx_echelon_scheduler_t  *sched;

    sched = job->sched;

    ngx_queue_remove(&job->queue);
    sched->njobs--;

    if (job->sending) {
        sched->nsending--;
    }

    ngx_destroy_pool(job->pool);

    if (sched->njobs == 0 && sched->guard.timer_set) {
        ngx_del_timer(&sched->guard);
    }

    ngx_echelon_sched_resume(sched);
}


static ngx_str_t
ngx_echelon_job_copy(ngx_echelon_job_t *job, PGresult *res, int row,
    const char *column)
{
    u_char     *p;
    ngx_str_t   v;

    v = ngx_echelon_pg_value(res, row, column);

    if (v.data == NULL) {
        return v;
    }

    p = ngx_pnalloc(job->pool, v.len + 1);
    if (p == NULL) {
        ngx_str_null(&v);
        return v;
    }

    *ngx_cpymem(p, v.data, v.len) = '\0';
    v.data = p;

    return v;
}


static ngx_int_t
ngx_echelon_is(ngx_str_t *v, const char *s)
{
    size_t  len;

    len = ngx_strlen(s);

    return v->len == len && ngx_strncmp(v->data, s, len) == 0;
}


static void
ngx_echelon_guard_handler(ngx_event_t *ev)
{
    ngx_echelon_scheduler_t  *sched;

    sched = ev->data;

    if (sched->njobs) {
        ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                      "echelon: %ui deliveries still in flight after a "
                      "lease", sched->njobs);
    }
}


/* a JSON string, or null for no value */

static json_t *
ngx_echelon_json_cstr(const char *s)
{
    if (s == NULL) {
        return json_null();
    }

    return ngx_echelon_json_text((u_char *) s, ngx_strlen(s));
}
