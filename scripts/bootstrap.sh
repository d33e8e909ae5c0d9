#!/usr/bin/env bash
# Install what `make demo` and `make test` need on a fresh Debian machine (as root),
# then create the project's virtual environment in .venv. Safe to run again: it only
# installs what is missing.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(krb5-kdc krb5-admin-server krb5-user libkrb5-dev gcc make
              podman runc debootstrap shellcheck docker-compose time tmux uidmap
              ca-certificates)
PY=${PYTHON:-python3}

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        echo "bootstrap: missing Debian packages: ${missing[*]}; run as root or install them" >&2
        exit 1
    fi
    echo "bootstrap: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.requirements-stamp
if [ ! -f "$stamp" ] || ! cmp -s requirements-dev.txt "$stamp"; then
    # (the filter hides pip's notes about local package mirrors absent here)
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored: it is neither" || true
    .venv/bin/python -m pip install -q -r requirements-dev.txt 2>&1 | grep -v "is ignored: it is neither" || true
    .venv/bin/python -c "import gssapi, pytest, hypothesis, pexpect, cryptography, yaml"
    cp requirements-dev.txt "$stamp"
fi
