# shellcheck shell=bash
# Sourced by the scripts in tools/: the one home of Echelon's development
# defaults. Every value can be overridden from the environment (or on the
# make command line: `make run ECHELON_PORT=9090`).

ECHELON_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

: "${ECHELON_RUN_DIR:=$ECHELON_ROOT/run}"
: "${ECHELON_PORT:=8080}"
: "${ECHELON_PG_PORT:=5433}"
: "${ECHELON_SMTP_PORT:=2525}"
: "${ECHELON_ADMIN_TOKEN:=dev-admin-token}"
: "${ECHELON_MODULE:=$ECHELON_ROOT/build/ngx_http_echelon_module.so}"
: "${NGINX_BIN:=/usr/sbin/nginx}"
: "${SYSTEM_PYTHON:=/usr/bin/python3}"

# A relative run folder is taken from the repository's root, where make runs.
case $ECHELON_RUN_DIR in
    /*) ;;
    *) ECHELON_RUN_DIR=$ECHELON_ROOT/${ECHELON_RUN_DIR#./} ;;
esac

export ECHELON_ROOT ECHELON_RUN_DIR ECHELON_PORT ECHELON_PG_PORT \
       ECHELON_SMTP_PORT ECHELON_ADMIN_TOKEN ECHELON_MODULE

# PostgreSQL's server binaries (Debian installs them outside PATH).
pg_bindir() {
    local dir
    if [ -n "${PG_BIN:-}" ]; then
        echo "$PG_BIN"
        return
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return
        fi
    done
    echo "/usr/lib/postgresql/15/bin"
}

# True when something already accepts connections on 127.0.0.1:$1.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

die() {
    echo "$(basename "$0"): $*" >&2
    exit 1
}
