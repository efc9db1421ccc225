
/*
 * Copyright (C) Echelon
 *
 * Messages from templates: {{contact.name}} and friends, and money written
 * the way each currency is written.
 */


#include "ngx_echelon.h"


/* a variable is a field of ngx_echelon_vars_t, or a part in the tone */

#define NGX_ECHELON_PART_GREETING   ((size_t) -1)
#define NGX_ECHELON_PART_MESSAGE    ((size_t) -2)
#define NGX_ECHELON_PART_CLOSING    ((size_t) -3)


typedef struct {
    ngx_str_t                   name;
    size_t                      offset;
} ngx_echelon_var_t;


/* what the employee writes for an event, in each tone */

typedef struct {
    const char                 *event;
    const char                 *subject[4];
    const char                 *message[4];
} ngx_echelon_words_t;


typedef struct {
    const char                 *code;
    const char                 *symbol;
    ngx_uint_t                  exponent;
} ngx_echelon_currency_t;


static ngx_int_t ngx_echelon_expand(ngx_str_t *tmpl,
    ngx_echelon_vars_t *vars, u_char **dst, size_t *len, ngx_uint_t depth,
    ngx_str_t *unknown);
static ngx_echelon_var_t *ngx_echelon_var_find(u_char *start, u_char *end);
static u_char *ngx_echelon_section_end(u_char *p, u_char *last, u_char *name,
    u_char *end);
static ngx_int_t ngx_echelon_part(ngx_echelon_vars_t *vars, size_t part,
    ngx_str_t *text);
static ngx_uint_t ngx_echelon_tone_index(ngx_str_t *tone);
static ngx_echelon_words_t *ngx_echelon_words_find(ngx_str_t *event);


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
    { ngx_string("greeting"), NGX_ECHELON_PART_GREETING },
    { ngx_string("message"), NGX_ECHELON_PART_MESSAGE },
    { ngx_string("closing"), NGX_ECHELON_PART_CLOSING },
    { ngx_null_string, 0 }
};


/* friendly, professional, formal, firm */

static const char  *ngx_echelon_greetings[] = {
    "Hi {{contact.name}},",
    "Hello {{contact.name}},",
    "Dear {{contact.name}},",
    "{{contact.name}},"
};

static const char  *ngx_echelon_closings[] = {
    "Thanks so much!\n{{employee.name}}, {{account.name}}",
    "Best regards,\n{{employee.name}}, {{account.name}}",
    "Yours sincerely,\n{{employee.name}}\n{{account.name}}",
    "Regards,\n{{employee.name}}, {{account.name}}"
};

static ngx_echelon_words_t  ngx_echelon_words[] = {

    { "invoice.issued",
      { "Your invoice {{invoice.number}} from {{account.name}}",
        "Invoice {{invoice.number}} from {{account.name}}",
        "Invoice {{invoice.number}} issued by {{account.name}}",
        "Invoice {{invoice.number}}: payment due {{invoice.due_date}}" },
      { "Here's your invoice {{invoice.number}} for {{invoice.amount}}, "
        "due {{invoice.due_date}}.{{#invoice.url}} You can see it and pay "
        "it here: {{invoice.url}}{{/invoice.url}}\n\nAny questions? Just "
        "reply, happy to help.",
        "Please find invoice {{invoice.number}} for {{invoice.amount}}, "
        "due {{invoice.due_date}}.{{#invoice.url}} You can view and pay it "
        "here: {{invoice.url}}{{/invoice.url}}",
        "We enclose invoice {{invoice.number}} in the amount of "
        "{{invoice.amount}}, payable by {{invoice.due_date}}."
        "{{#invoice.url}} It may be viewed and settled at {{invoice.url}}"
        "{{/invoice.url}}",
        "Invoice {{invoice.number}} for {{invoice.amount}} is due "
        "{{invoice.due_date}}.{{#invoice.url}} Pay it by then: "
        "{{invoice.url}}{{/invoice.url}}" } },

    { "invoice.overdue",
      { "A friendly reminder about invoice {{invoice.number}}",
        "Invoice {{invoice.number}} is past due",
        "Notice of overdue invoice {{invoice.number}}",
        "Overdue: invoice {{invoice.number}} is unpaid" },
      { "Just a quick note: invoice {{invoice.number}} for "
        "{{invoice.amount}} was due {{invoice.due_date}} and we haven't "
        "seen the payment yet.{{#invoice.url}} If it slipped through, you "
        "can pay here: {{invoice.url}}{{/invoice.url}}",
        "Our records show invoice {{invoice.number}} for "
        "{{invoice.amount}}, due {{invoice.due_date}}, is still unpaid. "
        "Please arrange payment{{#invoice.url}} at {{invoice.url}}"
        "{{/invoice.url}}.",
        "We note that invoice {{invoice.number}} in the amount of "
        "{{invoice.amount}}, due on {{invoice.due_date}}, remains "
        "outstanding. We would be grateful for your prompt settlement"
        "{{#invoice.url}} at {{invoice.url}}{{/invoice.url}}.",
        "Invoice {{invoice.number}} for {{invoice.amount}} was due "
        "{{invoice.due_date}} and is unpaid.{{#invoice.url}} Pay it now: "
        "{{invoice.url}}{{/invoice.url}}" } },

    { "invoice.unpaid_repeated",
      { "Still open: invoice {{invoice.number}}",
        "Second reminder: invoice {{invoice.number}}",
        "Further notice regarding invoice {{invoice.number}}",
        "Final reminder: invoice {{invoice.number}} is overdue" },
      { "We're following up on invoice {{invoice.number}} for "
        "{{invoice.amount}}, due {{invoice.due_date}}: it's still open. "
        "If something is holding it up, reply and let us know."
        "{{#invoice.url}} Pay here: {{invoice.url}}{{/invoice.url}}",
        "Invoice {{invoice.number}} for {{invoice.amount}}, due "
        "{{invoice.due_date}}, remains unpaid despite our earlier "
        "reminder. Please pay{{#invoice.url}} at {{invoice.url}}"
        "{{/invoice.url}} or contact us.",
        "Further to our previous correspondence, invoice "
        "{{invoice.number}} in the amount of {{invoice.amount}}, due on "
        "{{invoice.due_date}}, remains unsettled. Kindly remit payment"
        "{{#invoice.url}} at {{invoice.url}}{{/invoice.url}}.",
        "Invoice {{invoice.number}} for {{invoice.amount}} is still unpaid "
        "after several reminders.{{#invoice.url}} Pay it immediately: "
        "{{invoice.url}}{{/invoice.url}}" } },

    { "payment.received",
      { "Thank you for your payment",
        "Payment received for invoice {{invoice.number}}",
        "Acknowledgement of payment: invoice {{invoice.number}}",
        "Payment received: invoice {{invoice.number}}" },
      { "Thank you! We've received your payment for invoice "
        "{{invoice.number}}. We really appreciate it.",
        "Thank you for your payment for invoice {{invoice.number}}. It "
        "has been received.",
        "We acknowledge with thanks receipt of your payment for invoice "
        "{{invoice.number}}.",
        "Your payment for invoice {{invoice.number}} has been received." } },

    { "billing_details.updated",
      { "Your billing details were updated",
        "Your billing details have been updated",
        "Confirmation of updated billing details",
        "Billing details changed" },
      { "Just letting you know your billing details with "
        "{{account.name}} were updated. If that wasn't you, reply and "
        "we'll sort it out.",
        "Your billing details with {{account.name}} have been updated. If "
        "you did not make this change, please contact us.",
        "We write to confirm that your billing details with "
        "{{account.name}} have been amended. Should you not have "
        "requested this change, kindly inform us at once.",
        "Your billing details with {{account.name}} changed. If you did "
        "not make this change, contact us now." } },

    { NULL, { NULL }, { NULL } }
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
    size_t  len;

    len = 0;

    return ngx_echelon_expand(tmpl, NULL, NULL, &len, 0, unknown);
}


/*
 * The text of a template with every variable in place: measured first,
 * then written.  A part in the tone ({{greeting}}, {{message}},
 * {{closing}}) is itself a template of the other variables.
 */

ngx_int_t
ngx_echelon_render(ngx_pool_t *pool, ngx_str_t *tmpl,
    ngx_echelon_vars_t *vars, ngx_str_t *out)
{
    u_char     *dst;
    size_t      len;
    ngx_str_t   unknown;

    len = 0;

    if (ngx_echelon_expand(tmpl, vars, NULL, &len, 0, &unknown) != NGX_OK) {
        return NGX_ERROR;
    }

    out->data = ngx_pnalloc(pool, len + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    dst = out->data;

    if (ngx_echelon_expand(tmpl, vars, &dst, &len, 0, &unknown) != NGX_OK) {
        return NGX_ERROR;
    }

    *dst = '\0';
    out->len = dst - out->data;

    return NGX_OK;
}


/* the standard subject of an event, in the employee's tone */

ngx_int_t
ngx_echelon_render_subject(ngx_pool_t *pool, ngx_echelon_vars_t *vars,
    ngx_str_t *out)
{
    ngx_str_t             tmpl;
    ngx_echelon_words_t  *w;

    w = ngx_echelon_words_find(&vars->event);
    if (w == NULL) {
        return NGX_ERROR;
    }

    tmpl.data = (u_char *) w->subject[ngx_echelon_tone_index(&vars->tone)];
    tmpl.len = ngx_strlen(tmpl.data);

    return ngx_echelon_render(pool, &tmpl, vars, out);
}


/*
 * Text outside {{ }} is copied as it is.  With dst NULL, only *len grows;
 * with vars NULL, only the names are checked.
 */

static ngx_int_t
ngx_echelon_expand(ngx_str_t *tmpl, ngx_echelon_vars_t *vars, u_char **dst,
    size_t *len, ngx_uint_t depth, ngx_str_t *unknown)
{
    u_char             *p, *last, *open, *close, *name, *end, *skip;
    ngx_str_t          *value, part;
    ngx_uint_t          section;
    ngx_echelon_var_t  *var;

    p = tmpl->data;
    last = tmpl->data + tmpl->len;

    while (p < last) {
        open = ngx_strlcasestrn(p, last, (u_char *) "{{", 2 - 1);

        if (open == NULL) {
            open = last;
        }

        if (dst) {
            *dst = ngx_cpymem(*dst, p, open - p);
        } else {
            *len += open - p;
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

        /* {{#name}}...{{/name}}: what is between only if name has a value */

        section = (name < end && (*name == '#' || *name == '/')) ? *name : 0;

        var = ngx_echelon_var_find(section ? name + 1 : name, end);

        if (section && var && var->offset >= NGX_ECHELON_PART_CLOSING) {
            var = NULL;
        }

        if (var == NULL || (depth && var->offset >= NGX_ECHELON_PART_CLOSING))
        {
            unknown->data = name;
            unknown->len = end - name;
            return NGX_DECLINED;
        }

        p = close + 2;

        if (section == '#') {
            skip = ngx_echelon_section_end(p, last, name + 1, end);

            if (skip == NULL) {
                unknown->data = open;
                unknown->len = close + 2 - open;
                return NGX_DECLINED;
            }

            value = vars ? (ngx_str_t *) ((u_char *) vars + var->offset)
                         : NULL;

            if (value && value->len == 0) {
                p = skip;
            }

            continue;
        }

        if (section || vars == NULL) {
            continue;
        }

        if (var->offset >= NGX_ECHELON_PART_CLOSING) {
            if (ngx_echelon_part(vars, var->offset, &part) != NGX_OK
                || ngx_echelon_expand(&part, vars, dst, len, depth + 1,
                                      unknown)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }

            continue;
        }

        value = (ngx_str_t *) ((u_char *) vars + var->offset);

        if (dst) {
            *dst = ngx_cpymem(*dst, value->data, value->len);
        } else {
            *len += value->len;
        }
    }

    return NGX_OK;
}


/* just after the {{/name}} that ends a section opened before p, or NULL */

static u_char *
ngx_echelon_section_end(u_char *p, u_char *last, u_char *name, u_char *end)
{
    u_char  *open, *close, *n, *e;

    while (p < last) {
        open = ngx_strlcasestrn(p, last, (u_char *) "{{", 2 - 1);
        if (open == NULL) {
            return NULL;
        }

        close = ngx_strlcasestrn(open + 2, last, (u_char *) "}}", 2 - 1);
        if (close == NULL) {
            return NULL;
        }

        for (n = open + 2; n < close && *n == ' '; n++) {
            /* void */
        }

        for (e = close; e > n && e[-1] == ' '; e--) {
            /* void */
        }

        if (e - n == end - name + 1 && *n == '/'
            && ngx_strncmp(n + 1, name, end - name) == 0)
        {
            return close + 2;
        }

        p = close + 2;
    }

    return NULL;
}


static ngx_int_t
ngx_echelon_part(ngx_echelon_vars_t *vars, size_t part, ngx_str_t *text)
{
    ngx_uint_t            tone;
    const char           *s;
    ngx_echelon_words_t  *w;

    tone = ngx_echelon_tone_index(&vars->tone);

    switch (part) {

    case NGX_ECHELON_PART_GREETING:
        s = ngx_echelon_greetings[tone];
        break;

    case NGX_ECHELON_PART_CLOSING:
        s = ngx_echelon_closings[tone];
        break;

    default:
        w = ngx_echelon_words_find(&vars->event);
        if (w == NULL) {
            return NGX_ERROR;
        }

        s = w->message[tone];
    }

    text->data = (u_char *) s;
    text->len = ngx_strlen(s);

    return NGX_OK;
}


static ngx_uint_t
ngx_echelon_tone_index(ngx_str_t *tone)
{
    static const char  *tones[] = { "friendly", "professional", "formal",
                                    "firm" };
    ngx_uint_t          i;

    for (i = 0; i < 4; i++) {
        if (tone->len == ngx_strlen(tones[i])
            && ngx_strncmp(tone->data, tones[i], tone->len) == 0)
        {
            return i;
        }
    }

    return 1;
}


static ngx_echelon_words_t *
ngx_echelon_words_find(ngx_str_t *event)
{
    ngx_echelon_words_t  *w;

    for (w = ngx_echelon_words; w->event; w++) {
        if (event->len == ngx_strlen(w->event)
            && ngx_strncmp(event->data, w->event, event->len) == 0)
        {
            return w;
        }
    }

    return NULL;
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
