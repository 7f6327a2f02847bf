#!/usr/bin/env bash
# Check README's two commands on a fresh machine: a minimal Debian root made with debootstrap, holding
# only python3 and make (no python3-venv, no PostgreSQL), and this checkout's committed tree.
#
# Run by hand, as root, with network access to a Debian mirror and to PyPI; not part of the suite.
#   scripts/check-fresh-debian.sh [SUITE] [MIRROR]     (default: bookworm, http://deb.debian.org/debian)
#   DEMO_ONLY=1 scripts/check-fresh-debian.sh          (steps 1 and 2 only: the whole suite takes long)
#   HOST_CA=/etc/ssl/certs/ca-certificates.crt …       (behind a TLS-intercepting proxy: pip in the root
#                                                       trusts that bundle; nothing else of the host goes in)
# Checks, in order:
#   1. as an unprivileged user, `make demo` stops with one line naming the package to install;
#   2. as root, `make demo` installs python3-venv itself and the demo exits 0;
#   3. as root, `CI=true make test` (which installs Debian's postgresql) passes.
# The root is left in a temporary directory for inspection when a step fails; removed when all pass.
set -euo pipefail

suite=${1:-bookworm}
mirror=${2:-http://deb.debian.org/debian}
repo=$(cd "$(dirname "$0")/.." && pwd)

if [[ $(id -u) -ne 0 ]]; then
    echo "check-fresh-debian.sh: run as root (debootstrap and chroot need it)" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
fi

root=$(mktemp -d /tmp/syncd-fresh-debian.XXXXXX)
chmod 755 "$root"  # mktemp's 0700 would be the chroot's /, which the unprivileged user of step 1 cannot enter
mounted=()
cleanup() {
    local m
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount -l "${mounted[$i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT

echo "== debootstrap $suite (minbase + python3, make) into $root"
debootstrap --variant=minbase --include=python3,make,ca-certificates "$suite" "$root" "$mirror" >/dev/null
for fs in proc sys dev dev/pts dev/shm; do
    mkdir -p "$root/$fs"
    mount --bind "/$fs" "$root/$fs"
    mounted+=("$root/$fs")
done
cp /etc/resolv.conf "$root/etc/resolv.conf"

echo "== the committed tree of $repo into /src"
mkdir -p "$root/src"
git -C "$repo" archive HEAD | tar -x -C "$root/src"
chroot "$root" useradd --create-home --shell /bin/bash checker
chroot "$root" chown -R checker /src

pip_env=()
if [[ -n ${HOST_CA:-} ]]; then
    cp "$HOST_CA" "$root/etc/ssl/host-ca.pem"
    pip_env=(PIP_CERT=/etc/ssl/host-ca.pem)
fi
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "${pip_env[@]}" "$@"; }

echo "== 1. make demo as a user, without python3-venv: one line naming the package"
set +e
out=$(in_root su checker -c 'cd /src && make demo' 2>&1)
code=$?
set -e
if [[ $code -eq 0 ]] || ! grep -q "apt-get install python3.*-venv" <<<"$out"; then
    echo "FAILED: expected a failure naming python3-venv, got exit $code:" >&2
    echo "$out" | tail -20 >&2
    exit 1
fi
grep "apt-get install" <<<"$out"
chroot "$root" rm -rf /src/.venv

echo "== 2. make demo as root: installs python3-venv, then the demo"
in_root bash -c 'cd /src && make demo' | tail -5

if [[ ${DEMO_ONLY:-0} == 1 ]]; then
    echo "== 3. skipped (DEMO_ONLY=1)"
else
    echo "== 3. CI=true make test as root: installs postgresql, runs the whole suite"
    in_root bash -c 'cd /src && CI=true make test' | tail -5
fi

cleanup
mounted=()
rm -rf "$root"
if [[ ${DEMO_ONLY:-0} == 1 ]]; then
    echo "fresh Debian ($suite): make demo works (make test not run)"
else
    echo "fresh Debian ($suite): both commands work"
fi
