#!/usr/bin/env bash
# Turns an nginx configuration template into a configuration.
#
#   tools/genconf.sh [--without-module] TEMPLATE OUTPUT
#
# Replaces each @NAME@ with the value of the environment variable NAME, after
# tools/env.sh has set Echelon's defaults. A placeholder left without a value
# is an error. --without-module comments out load_module and every echelon_*
# directive, so that `nginx -t` can check the rest of the configuration
# before the module exists.
set -euo pipefail

# shellcheck source=tools/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

# A value goes inside "..." in nginx's syntax: escape \ and ", refuse
# control characters.
nginx_quote() {
    local v=$1
    if [[ $v == *[[:cntrl:]]* ]]; then
        return 1
    fi
    v=${v//\\/\\\\}
    v=${v//\"/\\\"}
    printf '%s' "$v"
}

substitute() {
    local text=$1 name value names
    names=$(grep -oE '@[A-Z][A-Z0-9_]*@' <<<"$text" | tr -d @ | sort -u || true)
    for name in $names; do
        [ -n "${!name+set}" ] || die "no value for @$name@ in the template"
        value=$(nginx_quote "${!name}") \
            || die "$name contains control characters"
        text=${text//"@$name@"/"$value"}
    done
    printf '%s\n' "$text"
}

without_module() {
    sed -E 's/^([[:space:]]*)((load_module|echelon_)[^[:space:];]*)/\1# \2/'
}

main() {
    local strip=no template output text
    if [ "${1:-}" = "--without-module" ]; then
        strip=yes
        shift
    fi
    [ $# -eq 2 ] || die "usage: genconf.sh [--without-module] TEMPLATE OUTPUT"
    template=$1
    output=$2

    text=$(< "$template")
    text=$(substitute "$text")
    if [ "$strip" = yes ]; then
        text=$(without_module <<<"$text")
    fi
    mkdir -p "$(dirname "$output")"
    printf '%s\n' "$text" > "$output.tmp"
    mv "$output.tmp" "$output"
}

main "$@"
