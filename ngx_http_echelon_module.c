
/*
 * Copyright (C) Echelon
 *
 * The module: its directives, its configuration and the life of a worker
 * (database pool, scheduler, SMTP transport).
 */


#include "ngx_echelon.h"


static void *ngx_http_echelon_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_echelon_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_echelon_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_echelon_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_echelon_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_echelon_location(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_echelon_smtp_url(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_echelon_endpoint(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_echelon_public_url(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_echelon_init_process(ngx_cycle_t *cycle);
static void ngx_http_echelon_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_echelon_is_scheduler(ngx_echelon_main_conf_t *emcf);


static ngx_conf_enum_t  ngx_http_echelon_whatsapp_providers[] = {
    { ngx_string("twilio"), NGX_ECHELON_WHATSAPP_TWILIO },
    { ngx_string("meta"), NGX_ECHELON_WHATSAPP_META },
    { ngx_null_string, 0 }
};


static ngx_conf_num_bounds_t  ngx_http_echelon_pool_bounds = {
    ngx_conf_check_num_bounds, 1, 512
};

static ngx_conf_num_bounds_t  ngx_http_echelon_batch_bounds = {
    ngx_conf_check_num_bounds, 1, 10000
};

static ngx_conf_num_bounds_t  ngx_http_echelon_attempts_bounds = {
    ngx_conf_check_num_bounds, 1, 100
};

static ngx_conf_num_bounds_t  ngx_http_echelon_worker_bounds = {
    ngx_conf_check_num_bounds, 0, 1023
};

static ngx_conf_num_bounds_t  ngx_http_echelon_keepalive_bounds = {
    ngx_conf_check_num_bounds, 0, 64
};

static ngx_conf_num_bounds_t  ngx_http_echelon_requests_bounds = {
    ngx_conf_check_num_bounds, 1, 100000
};


static ngx_command_t  ngx_http_echelon_commands[] = {

    { ngx_string("echelon_database"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_echelon_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, conninfo),
      NULL },

    { ngx_string("echelon_database_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, pool_size),
      &ngx_http_echelon_pool_bounds },

    { ngx_string("echelon_database_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, connect_timeout),
      NULL },

    { ngx_string("echelon_database_query_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, query_timeout),
      NULL },

    { ngx_string("echelon_database_queue_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, queue_timeout),
      NULL },

    { ngx_string("echelon_database_retry"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, retry_down),
      NULL },

    { ngx_string("echelon_admin_token"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_echelon_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, admin_token),
      NULL },

    { ngx_string("echelon_scheduler"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, scheduler),
      NULL },

    { ngx_string("echelon_scheduler_worker"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, scheduler_worker),
      &ngx_http_echelon_worker_bounds },

    { ngx_string("echelon_scheduler_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, scheduler_interval),
      NULL },

    { ngx_string("echelon_scheduler_batch"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, scheduler_batch),
      &ngx_http_echelon_batch_bounds },

    { ngx_string("echelon_scheduler_lease"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, scheduler_lease),
      NULL },

    { ngx_string("echelon_max_attempts"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, max_attempts),
      &ngx_http_echelon_attempts_bounds },

    { ngx_string("echelon_retry_backoff"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, retry_backoff),
      NULL },

    { ngx_string("echelon_smtp_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_echelon_smtp_url,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, smtp_url),
      NULL },

    { ngx_string("echelon_smtp_from"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, smtp_from),
      NULL },

    { ngx_string("echelon_smtp_user"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_echelon_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, smtp_user),
      NULL },

    { ngx_string("echelon_smtp_password"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_echelon_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, smtp_password),
      NULL },

    { ngx_string("echelon_smtp_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, smtp_timeout),
      NULL },

    { ngx_string("echelon_smtp_keepalive"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, smtp_keepalive),
      &ngx_http_echelon_keepalive_bounds },

    { ngx_string("echelon_smtp_keepalive_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, smtp_keepalive_timeout),
      NULL },

    { ngx_string("echelon_smtp_keepalive_requests"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, smtp_keepalive_requests),
      &ngx_http_echelon_requests_bounds },

    { ngx_string("echelon_public_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_echelon_public_url,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, public_url),
      NULL },

    { ngx_string("echelon_provider_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, provider_timeout),
      NULL },

    { ngx_string("echelon_twilio_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_echelon_endpoint,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, twilio),
      NULL },

    { ngx_string("echelon_twilio_account_sid"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_echelon_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, twilio_sid),
      NULL },

    { ngx_string("echelon_twilio_auth_token"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_echelon_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, twilio_token),
      NULL },

    { ngx_string("echelon_whatsapp_provider"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, whatsapp_provider),
      &ngx_http_echelon_whatsapp_providers },

    { ngx_string("echelon_meta_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_echelon_endpoint,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, meta),
      NULL },

    { ngx_string("echelon_meta_phone_number_id"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, meta_phone_id),
      NULL },

    { ngx_string("echelon_meta_access_token"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_echelon_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, meta_token),
      NULL },

    { ngx_string("echelon_meta_app_secret"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_echelon_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, meta_app_secret),
      NULL },

    { ngx_string("echelon_meta_verify_token"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_echelon_secret,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_echelon_main_conf_t, meta_verify_token),
      NULL },

    { ngx_string("echelon_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_echelon_location,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("echelon_webhooks"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_echelon_location,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("echelon_errors"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_echelon_location,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("echelon_max_body_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_echelon_loc_conf_t, max_body_size),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_echelon_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_echelon_create_main_conf,     /* create main configuration */
    ngx_http_echelon_init_main_conf,       /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_echelon_create_loc_conf,      /* create location configuration */
    ngx_http_echelon_merge_loc_conf        /* merge location configuration */
};


ngx_module_t  ngx_http_echelon_module = {
    NGX_MODULE_V1,
    &ngx_http_echelon_module_ctx,          /* module context */
    ngx_http_echelon_commands,             /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_echelon_init_process,         /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_echelon_exit_process,         /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_echelon_create_main_conf(ngx_conf_t *cf)
{
    ngx_echelon_main_conf_t  *emcf;

    emcf = ngx_pcalloc(cf->pool, sizeof(ngx_echelon_main_conf_t));
    if (emcf == NULL) {
        return NULL;
    }

    emcf->pool_size = NGX_CONF_UNSET_UINT;
    emcf->connect_timeout = NGX_CONF_UNSET_MSEC;
    emcf->query_timeout = NGX_CONF_UNSET_MSEC;
    emcf->queue_timeout = NGX_CONF_UNSET_MSEC;
    emcf->retry_down = NGX_CONF_UNSET_MSEC;
    emcf->scheduler = NGX_CONF_UNSET;
    emcf->scheduler_worker = NGX_CONF_UNSET_UINT;
    emcf->scheduler_interval = NGX_CONF_UNSET_MSEC;
    emcf->scheduler_batch = NGX_CONF_UNSET_UINT;
    emcf->scheduler_lease = NGX_CONF_UNSET_MSEC;
    emcf->max_attempts = NGX_CONF_UNSET_UINT;
    emcf->retry_backoff = NGX_CONF_UNSET_MSEC;
    emcf->smtp_timeout = NGX_CONF_UNSET_MSEC;
    emcf->smtp_keepalive = NGX_CONF_UNSET_UINT;
    emcf->smtp_keepalive_timeout = NGX_CONF_UNSET_MSEC;
    emcf->smtp_keepalive_requests = NGX_CONF_UNSET_UINT;
    emcf->provider_timeout = NGX_CONF_UNSET_MSEC;
    emcf->whatsapp_provider = NGX_CONF_UNSET_UINT;

    return emcf;
}


static char *
ngx_http_echelon_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_echelon_main_conf_t *emcf = conf;

    ngx_str_t                  url;
    ngx_msec_t                 timeout;
    ngx_resolver_t            *resolver;
    ngx_http_core_loc_conf_t  *clcf;

    ngx_conf_init_uint_value(emcf->pool_size, 8);
    ngx_conf_init_msec_value(emcf->connect_timeout, 3000);
    ngx_conf_init_msec_value(emcf->query_timeout, 10000);
    ngx_conf_init_msec_value(emcf->queue_timeout, 3000);
    ngx_conf_init_msec_value(emcf->retry_down, 1000);
    ngx_conf_init_value(emcf->scheduler, 1);
    ngx_conf_init_uint_value(emcf->scheduler_worker, 0);
    ngx_conf_init_msec_value(emcf->scheduler_interval, 1000);
    ngx_conf_init_uint_value(emcf->scheduler_batch, 50);
    ngx_conf_init_msec_value(emcf->scheduler_lease, 60000);
    ngx_conf_init_uint_value(emcf->max_attempts, 5);
    ngx_conf_init_msec_value(emcf->retry_backoff, 30000);
    ngx_conf_init_msec_value(emcf->smtp_timeout, 30000);
    ngx_conf_init_uint_value(emcf->smtp_keepalive, 16);
    ngx_conf_init_msec_value(emcf->smtp_keepalive_timeout, 30000);
    ngx_conf_init_uint_value(emcf->smtp_keepalive_requests, 100);
    ngx_conf_init_msec_value(emcf->provider_timeout, 10000);
    ngx_conf_init_uint_value(emcf->whatsapp_provider,
                             NGX_ECHELON_WHATSAPP_TWILIO);

    if (emcf->smtp_url.len == 0) {
        ngx_str_set(&emcf->smtp_url, "smtp://127.0.0.1:25");
    }

    if (emcf->smtp_from.len == 0) {
        ngx_str_set(&emcf->smtp_from, "Echelon <billing@localhost>");
    }

    if (emcf->twilio == NULL) {
        emcf->twilio = ngx_pcalloc(cf->pool, sizeof(ngx_echelon_endpoint_t));
        if (emcf->twilio == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_str_set(&url, "https://api.twilio.com");

        if (emcf->twilio_sid.len
            && ngx_echelon_endpoint_parse(cf, &url, emcf->twilio) != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    if (emcf->meta == NULL
        && emcf->whatsapp_provider == NGX_ECHELON_WHATSAPP_META)
    {
        emcf->meta = ngx_pcalloc(cf->pool, sizeof(ngx_echelon_endpoint_t));
        if (emcf->meta == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_str_set(&url, "https://graph.facebook.com");

        if (ngx_echelon_endpoint_parse(cf, &url, emcf->meta) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    if ((emcf->smtp_user.len == 0) != (emcf->smtp_password.len == 0)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"echelon_smtp_user\" and "
                           "\"echelon_smtp_password\" go together");
        return NGX_CONF_ERROR;
    }

    if (ngx_echelon_smtp_resolve(cf, emcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* the http block's resolver, if it has one, finds the providers */

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    resolver = (clcf->resolver == NGX_CONF_UNSET_PTR) ? NULL : clcf->resolver;
    timeout = (clcf->resolver_timeout == NGX_CONF_UNSET_MSEC)
              ? 30000 : clcf->resolver_timeout;

    if (ngx_echelon_endpoint_resolve(cf, emcf->twilio, resolver, timeout)
        != NGX_OK
        || (emcf->meta
            && ngx_echelon_endpoint_resolve(cf, emcf->meta, resolver, timeout)
               != NGX_OK))
    {
        return NGX_CONF_ERROR;
    }

    if (emcf->scheduler_lease < 2 * ngx_max(emcf->smtp_timeout,
                                            emcf->provider_timeout))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"echelon_scheduler_lease\" must be at least "
                           "twice \"echelon_smtp_timeout\" and "
                           "\"echelon_provider_timeout\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_echelon_create_loc_conf(ngx_conf_t *cf)
{
    ngx_echelon_loc_conf_t  *elcf;

    elcf = ngx_pcalloc(cf->pool, sizeof(ngx_echelon_loc_conf_t));
    if (elcf == NULL) {
        return NULL;
    }

    elcf->max_body_size = NGX_CONF_UNSET_SIZE;

    return elcf;
}


static char *
ngx_http_echelon_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_echelon_loc_conf_t *prev = parent;
    ngx_echelon_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t  *clcf;

    ngx_conf_merge_size_value(conf->max_body_size, prev->max_body_size,
                              2 * 1024 * 1024);

    if (conf->kind == 0) {
        return NGX_CONF_OK;
    }

    /*
     * our handlers enforce echelon_max_body_size themselves, so that a body
     * too large gets a JSON answer rather than nginx's HTML page
     */

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->client_max_body_size = 0;

    return NGX_CONF_OK;
}


/*
 * A secret is written in the configuration or, as "env:NAME", taken from
 * the environment of the process that reads the configuration.
 */

static char *
ngx_http_echelon_secret(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    u_char     *env;
    ngx_str_t  *field, *value;

    field = (ngx_str_t *) (p + cmd->offset);

    if (field->data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0) {
        return "must not be empty";
    }

    if (value[1].len > 4 && ngx_strncmp(value[1].data, "env:", 4) == 0) {
        env = (u_char *) getenv((char *) value[1].data + 4);

        if (env == NULL || *env == '\0') {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "environment variable \"%s\" is not set",
                               value[1].data + 4);
            return NGX_CONF_ERROR;
        }

        field->len = ngx_strlen(env);
        field->data = ngx_pstrdup(cf->pool, &(ngx_str_t) { field->len, env });
        if (field->data == NULL) {
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    *field = value[1];

    return NGX_CONF_OK;
}


static char *
ngx_http_echelon_location(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_echelon_loc_conf_t *elcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (elcf->kind) {
        return "is duplicate";
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (cmd->name.len == sizeof("echelon_api") - 1) {
        elcf->kind = NGX_ECHELON_LOC_API;
        clcf->handler = ngx_echelon_api_handler;

    } else if (cmd->name.len == sizeof("echelon_errors") - 1) {
        elcf->kind = NGX_ECHELON_LOC_ERRORS;
        clcf->handler = ngx_echelon_errors_handler;

    } else {
        elcf->kind = NGX_ECHELON_LOC_WEBHOOKS;
        clcf->handler = ngx_echelon_webhooks_handler;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_echelon_smtp_url(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_echelon_main_conf_t *emcf = conf;

    ngx_str_t  *value;

    if (emcf->smtp_url.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strncasecmp(value[1].data, (u_char *) "smtp://", 7) != 0
        && ngx_strncasecmp(value[1].data, (u_char *) "smtps://", 8) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid SMTP URL \"%V\": it must start with "
                           "\"smtp://\" or \"smtps://\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    emcf->smtp_url.len = value[1].len;
    emcf->smtp_url.data = ngx_pstrdup(cf->pool, &value[1]);
    if (emcf->smtp_url.data == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* a provider's base URL; its host is looked up at the end of http{} */

static char *
ngx_http_echelon_endpoint(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_str_t                *value;
    ngx_echelon_endpoint_t  **ep;

    ep = (ngx_echelon_endpoint_t **) (p + cmd->offset);

    if (*ep) {
        return "is duplicate";
    }

    *ep = ngx_pcalloc(cf->pool, sizeof(ngx_echelon_endpoint_t));
    if (*ep == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    if (ngx_echelon_endpoint_parse(cf, &value[1], *ep) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* the URL the outside reaches this server at, which providers sign */

static char *
ngx_http_echelon_public_url(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_echelon_main_conf_t *emcf = conf;

    ngx_str_t  *value;

    if (emcf->public_url.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strncmp(value[1].data, "https://", 8) != 0
        && ngx_strncmp(value[1].data, "http://", 7) != 0)
    {
        return "must start with \"http://\" or \"https://\"";
    }

    emcf->public_url = value[1];

    while (emcf->public_url.len
           && emcf->public_url.data[emcf->public_url.len - 1] == '/')
    {
        emcf->public_url.len--;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_echelon_init_process(ngx_cycle_t *cycle)
{
    ngx_echelon_main_conf_t  *emcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    emcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_echelon_module);

    if (emcf == NULL || emcf->conninfo.len == 0) {
        return NGX_OK;
    }

    emcf->pool = ngx_echelon_pg_pool_create(cycle, emcf);
    if (emcf->pool == NULL) {
        return NGX_ERROR;
    }

    if (!ngx_http_echelon_is_scheduler(emcf)) {
        return NGX_OK;
    }

    emcf->smtp = ngx_echelon_smtp_create(cycle, emcf);
    if (emcf->smtp == NULL) {
        return NGX_ERROR;
    }

    emcf->fetch = ngx_echelon_fetch_create(cycle);
    if (emcf->fetch == NULL) {
        return NGX_ERROR;
    }

    return ngx_echelon_scheduler_start(cycle, emcf);
}


static void
ngx_http_echelon_exit_process(ngx_cycle_t *cycle)
{
    ngx_echelon_main_conf_t  *emcf;

    emcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_echelon_module);

    if (emcf == NULL) {
        return;
    }

    ngx_echelon_scheduler_stop(cycle);

    if (emcf->smtp) {
        ngx_echelon_smtp_destroy(emcf->smtp);
        emcf->smtp = NULL;
    }

    if (emcf->fetch) {
        ngx_echelon_fetch_destroy(emcf->fetch);
        emcf->fetch = NULL;
    }

    if (emcf->pool) {
        ngx_echelon_pg_pool_destroy(emcf->pool);
        emcf->pool = NULL;
    }
}


static ngx_int_t
ngx_http_echelon_is_scheduler(ngx_echelon_main_conf_t *emcf)
{
    ngx_core_conf_t  *ccf;

    if (!emcf->scheduler) {
        return 0;
    }

    if (ngx_process == NGX_PROCESS_SINGLE) {
        return 1;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx,
                                           ngx_core_module);

    /* a worker number beyond the last worker means the last one */

    if (emcf->scheduler_worker >= (ngx_uint_t) ccf->worker_processes) {
        return ngx_worker == (ngx_uint_t) ccf->worker_processes - 1;
    }

    return ngx_worker == emcf->scheduler_worker;
}
