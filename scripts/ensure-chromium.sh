#!/usr/bin/env bash
# Make sure Debian's Chromium is installed, for the dashboard's browser tests (Playwright drives it).
#
# Contract:
#   - already installed (/usr/bin/chromium, or SYNCD_CHROMIUM naming an executable): print nothing, exit 0;
#   - missing and running as root: install Debian's `chromium` package with apt-get, exit 0;
#   - missing and not root: print one line saying why, exit 1.
# Playwright's own browser download (`playwright install`) is never used: the tests launch this binary.
set -euo pipefail

chromium_path() {
    echo "${SYNCD_CHROMIUM:-/usr/bin/chromium}"
}

main() {
    local path
    path="$(chromium_path)"
    if [[ -x "$path" ]]; then
        return 0
    fi
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "ensure-chromium: $path not found; as root, run this script (or apt-get install chromium) to install it" >&2
        return 1
    fi
    echo "ensure-chromium: installing Debian's chromium package (the browser tests' browser)" >&2
    # `make test` runs both ensure scripts back to back on a clean CI box: one update serves both (~10 s each).
    if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -60 -print -quit 2>/dev/null)" ]]; then
        apt-get update -qq
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
    if [[ ! -x "$path" ]]; then
        echo "ensure-chromium: installed the chromium package but $path is still missing" >&2
        return 1
    fi
}

main "$@"
