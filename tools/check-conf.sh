#!/usr/bin/env bash
# Checks Echelon's nginx configuration files with `nginx -t`, in a scratch
# folder: the development server's template (conf/nginx.conf.in) and the
# snippet for users (conf/echelon.conf, inside a minimal nginx.conf).
#
#   tools/check-conf.sh [--without-module]
#
# With the module built, the echelon_* directives are checked too. Without it
# (or with --without-module), load_module and the echelon_* lines are
# commented out and the rest is checked.
set -euo pipefail

# shellcheck source=tools/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

SCRATCH=
GENCONF_OPTS=()

# A minimal main configuration around the user snippet.
write_snippet_host() {
    cat > "$SCRATCH/snippet-host.conf.in" <<'CONF'
pid         "@ECHELON_RUN_DIR@/nginx.pid";
error_log   "@ECHELON_RUN_DIR@/logs/error.log";
load_module "@ECHELON_MODULE@";
env         ECHELON_ADMIN_TOKEN;
events {
}
http {
    client_body_temp_path "@ECHELON_RUN_DIR@/tmp/client_body";
    proxy_temp_path       "@ECHELON_RUN_DIR@/tmp/proxy";
    fastcgi_temp_path     "@ECHELON_RUN_DIR@/tmp/fastcgi";
    uwsgi_temp_path       "@ECHELON_RUN_DIR@/tmp/uwsgi";
    scgi_temp_path        "@ECHELON_RUN_DIR@/tmp/scgi";
    include               "@ECHELON_RUN_DIR@/echelon.conf";
}
CONF
}

check() {
    local label=$1 template=$2 output=$3
    echo "check-conf: $label"
    ECHELON_RUN_DIR=$SCRATCH "$ECHELON_ROOT/tools/genconf.sh" \
        "${GENCONF_OPTS[@]}" "$template" "$output"
    "$NGINX_BIN" -t -q -p "$SCRATCH" -c "$output"
}

main() {
    if [ "${1:-}" = "--without-module" ] || [ ! -f "$ECHELON_MODULE" ]; then
        GENCONF_OPTS=(--without-module)
        echo "check-conf: without the module (echelon_* lines commented out)"
    else
        echo "check-conf: with $ECHELON_MODULE"
    fi

    SCRATCH=$(mktemp -d /tmp/echelon-conf.XXXXXX)
    trap 'rm -rf "$SCRATCH"' EXIT
    mkdir -p "$SCRATCH/logs" "$SCRATCH/tmp"

    check "conf/nginx.conf.in (make run's configuration)" \
        "$ECHELON_ROOT/conf/nginx.conf.in" "$SCRATCH/nginx.conf"

    write_snippet_host
    ECHELON_RUN_DIR=$SCRATCH "$ECHELON_ROOT/tools/genconf.sh" \
        "${GENCONF_OPTS[@]}" "$ECHELON_ROOT/conf/echelon.conf" \
        "$SCRATCH/echelon.conf"
    check "conf/echelon.conf (the snippet for users)" \
        "$SCRATCH/snippet-host.conf.in" "$SCRATCH/snippet-host.conf"

    echo "check-conf: ok"
}

main "$@"
