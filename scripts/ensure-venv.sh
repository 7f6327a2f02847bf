#!/usr/bin/env bash
# Create .venv with pip in it for the Makefile (a fresh Debian or Ubuntu has python3 but not its venv
# module's pip: the python3-venv package, which brings ensurepip).
#
# Usage: scripts/ensure-venv.sh PYTHON VENV
# Contract:
#   - PYTHON missing or older than 3.11: one line saying what syncd needs, exit 1;
#   - VENV already has pip: print nothing, exit 0;
#   - venv and ensurepip work: VENV is created (with pip), print nothing, exit 0;
#   - they do not, and running as root with apt-get: install Debian's python3.X-venv (or python3-venv), create
#     VENV, exit 0;
#   - they do not, and not root (or no apt-get): one line naming the package to install, exit 1.
# A VENV left without pip by an earlier failed attempt is removed, so that the next `venv` starts clean.
set -euo pipefail

python=${1:-python3}
venv=${2:-.venv}

if ! command -v "$python" >/dev/null 2>&1; then
    echo "syncd needs Python 3.11 or newer: '$python' was not found (install python3, or run make PYTHON=python3.12)" >&2
    exit 1
fi
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "syncd needs Python 3.11 or newer; $python is $version (run make PYTHON=python3.11, or newer)" >&2
    exit 1
fi

if [[ -x "$venv/bin/pip" ]]; then
    exit 0
fi

# Debian's python3 keeps `venv` but strips ensurepip's bundled pip unless python3-venv is installed: the
# only reliable test is to make a venv with pip in it. The real one is made, not a throwaway one first and
# then the real one (which took as long again: 4-14 s of a clean CI run's set-up).
make_venv() {
    if "$python" -m venv "$venv" >/dev/null 2>&1 && [[ -x "$venv/bin/pip" ]]; then
        return 0
    fi
    rm -rf "$venv"  # no pip in it: the next attempt starts clean
    return 1
}

if [[ -d "$venv" ]]; then
    rm -rf "$venv"  # no pip in it: a leftover of a failed attempt
fi
if make_venv; then
    exit 0
fi

# The package for this exact interpreter when Debian has one (python3.11-venv), else the default's.
package=python3-venv
if command -v apt-cache >/dev/null 2>&1 && apt-cache show "python${version}-venv" >/dev/null 2>&1; then
    package="python${version}-venv"
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$package" >/dev/null
    if make_venv; then
        exit 0
    fi
    echo "installed $package, but '$python -m venv' still cannot install pip" >&2
    exit 1
fi
if command -v apt-get >/dev/null 2>&1; then
    echo "'$python -m venv' cannot install pip: run 'sudo apt-get install $package', then make again" >&2
else
    echo "'$python -m venv' cannot install pip: install your system's venv/ensurepip package for Python $version, then make again" >&2
fi
exit 1
