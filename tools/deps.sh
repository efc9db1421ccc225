#!/usr/bin/env bash
# Installs the Debian packages Echelon needs, only those that are missing.
#
#   tools/deps.sh [run|test|valgrind|--list SET]
#
# run       build the module and run it (make run, make demo)
# test      the above plus the test runner's Perl (make test)
# valgrind  the above plus valgrind (make test-valgrind)
#
# This is the one list of packages; make run, make test and CI all use it.
# Quick when everything is present: one dpkg-query call, no apt.
set -euo pipefail

BUILD_PKGS=(gcc make dpkg-dev nginx-dev libpq-dev libjansson-dev libssl-dev)
RUN_PKGS=(nginx postgresql python3-aiosmtpd curl jq openssl)
TEST_PKGS=(perl libtest-base-perl)
VALGRIND_PKGS=(valgrind)

packages_for() {
    case $1 in
        run)      echo "${BUILD_PKGS[*]} ${RUN_PKGS[*]}" ;;
        test)     echo "${BUILD_PKGS[*]} ${RUN_PKGS[*]} ${TEST_PKGS[*]}" ;;
        valgrind) echo "${BUILD_PKGS[*]} ${RUN_PKGS[*]} ${TEST_PKGS[*]}" \
                       "${VALGRIND_PKGS[*]}" ;;
        *)        echo "tools/deps.sh: unknown set '$1'" >&2; return 1 ;;
    esac
}

missing_among() {
    # One dpkg-query for all: unknown packages print nothing, so anything
    # not reported as installed is missing.
    local installed pkg
    installed=$(dpkg-query -W -f='${Package} ${Status}\n' "$@" 2>/dev/null \
                | awk '$2 == "install" && $4 == "installed" { print $1 }' \
                || true)
    for pkg in "$@"; do
        if ! grep -qx -- "$pkg" <<<"$installed"; then
            echo "$pkg"
        fi
    done
}

main() {
    local set=${1:-run} wanted missing

    if [ "$set" = "--list" ]; then
        packages_for "${2:-run}" | tr ' ' '\n' | grep -v '^$'
        return
    fi

    wanted=$(packages_for "$set")
    # shellcheck disable=SC2086
    missing=$(missing_among $wanted)
    if [ -z "$missing" ]; then
        return
    fi

    echo "deps: installing missing packages:" $missing
    if [ "$(id -u)" != 0 ]; then
        echo "deps: must run as root to install them (apt-get)" >&2
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
}

main "$@"
