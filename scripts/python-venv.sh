#!/usr/bin/env bash
# python-venv.sh DIR PYTHON PACKAGE...: a virtual environment for running the
# tool under another Python (the old-Python and newest-Python smoke tests).
set -Eeuo pipefail
dir=$1 python=$2
shift 2
if [ -z "$python" ] || [ ! -x "$python" ]; then
    echo "python-venv: no interpreter for $dir (looked for pyenv's 3.6 and newest Python); install one with pyenv" >&2
    exit 1
fi
stamp="$dir/.packages"
if [ -x "$dir/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$*" ]; then
    exit 0
fi
rm -rf "$dir"
"$python" -m venv "$dir"
# Python 3.6's own pip is too old to honour Requires-Python; pip 21 is its last.
if "$dir/bin/python" -c 'import sys; sys.exit(sys.version_info >= (3, 7))'; then
    "$dir/bin/python" -m pip install -q --disable-pip-version-check --upgrade "pip<22" 2>&1 |
        grep -v "is ignored: it is neither" || true
fi
"$dir/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "is ignored: it is neither" || true
"$dir/bin/python" -c 'import requests, gssapi, requests_gssapi' 
echo "$*" > "$stamp"
