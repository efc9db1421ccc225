
/*
 * Copyright (C) Echelon
 *
 * Messages from templates: {{contact.name}} and friends, and money written
 * the way each currency is written.
 */


#include "ngx_echelon.h"


typedef struct {
    ngx_str_t                   name;
    size_t                      offset;
} ngx_echelon_var_t;


typedef struct {
    const char                 *code;
    const char                 *symbol;
    ngx_uint_t                  exponent;
} ngx_echelon_currency_t;


static ngx_int_t ngx_echelon_template_scan(ngx_str_t *tmpl, ngx_pool_t *pool,
    ngx_echelon_vars_t *vars, ngx_str_t *out, ngx_str_t *unknown);
static ngx_echelon_var_t *ngx_echelon_var_find(u_char *start, u_char *end);


static ngx_echelon_var_t  ngx_echelon_vars[] = {
    { ngx_string("contact.name"),
      offsetof(ngx_echelon_vars_t, contact_name) },
    { ngx_string("invoice.number"),
      offsetof(ngx_echelon_vars_t, invoice_number) },
    { ngx_string("invoice.amount"),
      offsetof(ngx_echelon_vars_t, invoice_amount) },
    { ngx_string("invoice.due_date"),
      offsetof(ngx_echelon_vars_t, invoice_due_date) },
    { ngx_string("invoice.url"),
      offsetof(ngx_echelon_vars_t, invoice_url) },
    { ngx_string("employee.name"),
      offsetof(ngx_echelon_vars_t, employee_name) },
    { ngx_string("account.name"),
      offsetof(ngx_echelon_vars_t, account_name) },
    { ngx_null_string, 0 }
};


/*
 * ISO 4217 minor units where they are not two: Stripe's zero-decimal
 * currencies, and the three-decimal ones
 */

static ngx_echelon_currency_t  ngx_echelon_currencies[] = {
    { "usd", "$", 2 },
    { "eur", "\xe2\x82\xac", 2 },
    { "gbp", "\xc2\xa3", 2 },
    { "jpy", "\xc2\xa5", 0 },
    { "bif", NULL, 0 },
    { "clp", NULL, 0 },
    { "djf", NULL, 0 },
    { "gnf", NULL, 0 },
    { "kmf", NULL, 0 },
    { "krw", "\xe2\x82\xa9", 0 },
    { "mga", NULL, 0 },
    { "pyg", NULL, 0 },
    { "rwf", NULL, 0 },
    { "ugx", NULL, 0 },
    { "vnd", NULL, 0 },
    { "vuv", NULL, 0 },
    { "xaf", NULL, 0 },
    { "xof", NULL, 0 },
    { "xpf", NULL, 0 },
    { "bhd", NULL, 3 },
    { "jod", NULL, 3 },
    { "kwd", NULL, 3 },
    { "omr", NULL, 3 },
    { "tnd", NULL, 3 },
    { NULL, NULL, 0 }
};


/* NGX_OK, or NGX_DECLINED with the first unknown variable's name */

ngx_int_t
ngx_echelon_template_check(ngx_str_t *tmpl, ngx_str_t *unknown)
{
    return ngx_echelon_template_scan(tmpl, NULL, NULL, NULL, unknown);
}


ngx_int_t
ngx_echelon_render(ngx_pool_t *pool, ngx_str_t *tmpl,
    ngx_echelon_vars_t *vars, ngx_str_t *out)
{
    ngx_str_t  unknown;

    return ngx_echelon_template_scan(tmpl, pool, vars, out, &unknown);
}


/*
 * One pass over the template: measures and checks it when pool is NULL,
 * writes it out otherwise.  Text outside {{ }} is copied as it is.
 */

static ngx_int_t
ngx_echelon_template_scan(ngx_str_t *tmpl, ngx_pool_t *pool,
    ngx_echelon_vars_t *vars, ngx_str_t *out, ngx_str_t *unknown)
{
    u_char             *p, *last, *open, *close, *name, *end, *dst;
    size_t              len;
    ngx_str_t          *value;
    ngx_uint_t          pass;
    ngx_echelon_var_t  *var;

    dst = NULL;
    len = 0;

    for (pass = 0; pass < 2; pass++) {

        p = tmpl->data;
        last = tmpl->data + tmpl->len;

        while (p < last) {
            open = ngx_strlcasestrn(p, last, (u_char *) "{{", 2 - 1);

            if (open == NULL) {
                open = last;
            }

            if (pass) {
                dst = ngx_cpymem(dst, p, open - p);
            } else {
                len += open - p;
            }

            if (open == last) {
                break;
            }

            close = ngx_strlcasestrn(open + 2, last, (u_char *) "}}", 2 - 1);

            if (close == NULL) {
                unknown->data = open;
                unknown->len = last - open;
                return NGX_DECLINED;
            }

            for (name = open + 2; name < close && *name == ' '; name++) {
                /* void */
            }

            for (end = close; end > name && end[-1] == ' '; end--) {
                /* void */
            }

            var = ngx_echelon_var_find(name, end);

            if (var == NULL) {
                unknown->data = name;
                unknown->len = end - name;
                return NGX_DECLINED;
            }

            if (vars) {
                value = (ngx_str_t *) ((u_char *) vars + var->offset);

                if (pass) {
                    dst = ngx_cpymem(dst, value->data, value->len);
                } else {
                    len += value->len;
                }
            }

            p = close + 2;
        }

        if (pool == NULL) {
            return NGX_OK;
        }

        if (pass == 0) {
            dst = ngx_pnalloc(pool, len + 1);
            if (dst == NULL) {
                return NGX_ERROR;
            }

            out->data = dst;
        }
    }

    *dst = '\0';
    out->len = dst - out->data;

    return NGX_OK;
}


static ngx_echelon_var_t *
ngx_echelon_var_find(u_char *start, u_char *end)
{
    ngx_echelon_var_t  *var;

    for (var = ngx_echelon_vars; var->name.len; var++) {
        if ((size_t) (end - start) == var->name.len
            && ngx_strncmp(start, var->name.data, var->name.len) == 0)
        {
            return var;
        }
    }

    return NULL;
}


/* 125000 usd -> "$1,250.00"; 5000 jpy -> "¥5,000"; 1500 kwd -> "1.500 KWD" */

ngx_int_t
ngx_echelon_format_money(ngx_pool_t *pool, int64_t minor,
    ngx_str_t *currency, ngx_str_t *out)
{
    u_char                  *p, digits[NGX_INT64_LEN + 4], code[4];
    size_t                   n, i, whole;
    uint64_t                 abs;
    ngx_uint_t               exponent;
    const char              *symbol;
    ngx_echelon_currency_t  *c;

    exponent = 2;
    symbol = NULL;

    n = ngx_min(currency->len, 3);
    ngx_strlow(code, currency->data, n);
    code[n] = '\0';

    for (c = ngx_echelon_currencies; c->code; c++) {
        if (ngx_strcmp(c->code, code) == 0) {
            exponent = c->exponent;
            symbol = c->symbol;
            break;
        }
    }

    abs = minor < 0 ? (uint64_t) 0 - (uint64_t) minor : (uint64_t) minor;

    /* at least exponent + 1 digits, so that 5 cents reads "0.05" */

    n = ngx_sprintf(digits, "%uL", abs) - digits;

    if (n < exponent + 1) {
        ngx_memmove(digits + exponent + 1 - n, digits, n);
        ngx_memset(digits, '0', exponent + 1 - n);
        n = exponent + 1;
    }

    whole = n - exponent;

    p = ngx_pnalloc(pool, 2 * n + 16);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->data = p;

    if (minor < 0) {
        *p++ = '-';
    }

    if (symbol) {
        p = ngx_cpymem(p, symbol, ngx_strlen(symbol));
    }

    for (i = 0; i < whole; i++) {
        if (i > 0 && (whole - i) % 3 == 0) {
            *p++ = ',';
        }

        *p++ = digits[i];
    }

    if (exponent) {
        *p++ = '.';
        p = ngx_cpymem(p, digits + whole, exponent);
    }

    if (symbol == NULL) {
        *p++ = ' ';

        for (i = 0; code[i]; i++) {
            *p++ = ngx_toupper(code[i]);
        }
    }

    out->len = p - out->data;

    return NGX_OK;
}
