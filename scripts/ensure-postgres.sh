#!/usr/bin/env bash
# Make sure PostgreSQL's server binaries (initdb, pg_ctl) are installed, for tests/pgserver.py.
#
# Contract:
#   - already installed (Debian's /usr/lib/postgresql/*/bin/initdb, or initdb on PATH): print nothing, exit 0;
#   - missing and running as root: install Debian's `postgresql` package with apt-get, exit 0;
#   - missing and not root: print one line saying why, exit 1.
# The tests run their own throwaway server, so the cluster the package creates is never started here.
set -euo pipefail

have_initdb() {
    local candidate
    for candidate in /usr/lib/postgresql/*/bin/initdb; do
        # An unmatched glob stays literal, so -x also filters that case out.
        if [[ -x "$candidate" ]]; then
            return 0
        fi
    done
    command -v initdb >/dev/null 2>&1
}

# The package's postinst starts the service through invoke-rc.d / deb-systemd-invoke, which both ask
# policy-rc.d first; exit code 101 means "action forbidden". An existing policy (as in most container
# images) is left alone.
forbid_service_starts() {
    local policy=/usr/sbin/policy-rc.d
    if [[ -e "$policy" ]]; then
        return 0
    fi
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    trap 'rm -f "'"$policy"'"' EXIT
}

install_postgres() {
    forbid_service_starts
    echo "ensure-postgres: installing Debian's postgresql package (server binaries for the tests)" >&2
    # `make test` runs both ensure scripts back to back on a clean CI box: one update serves both (~10 s each).
    if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -60 -print -quit 2>/dev/null)" ]]; then
        apt-get update -qq
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

main() {
    if have_initdb; then
        return 0
    fi
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "ensure-postgres: PostgreSQL server binaries (initdb) not found; as root, run this script (or apt-get install postgresql) to install them" >&2
        return 1
    fi
    install_postgres
    if ! have_initdb; then
        echo "ensure-postgres: installed the postgresql package but still found no initdb under /usr/lib/postgresql/*/bin or on PATH" >&2
        return 1
    fi
}

main "$@"
