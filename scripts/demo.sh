#!/usr/bin/env bash
# make demo: start a local MIT KDC and the Vault emulator on 127.0.0.1, fetch a
# real token with the tool from a robot keytab, then show what it holds.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
dir=$PWD/.demo
rm -rf "$dir"
mkdir -p "$dir"

"$py" tests/testbed.py up "$dir/bed" >"$dir/testbed.log" 2>&1 &
bed=$!
trap 'kill "$bed" 2>/dev/null; wait "$bed" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    [ -f "$dir/bed/env.sh" ] && break
    kill -0 "$bed" 2>/dev/null || { cat "$dir/testbed.log" >&2; exit 1; }
    sleep 0.2
done
# shellcheck disable=SC1091
source "$dir/bed/env.sh"

run() {
    printf '\n$ %s\n' "$*"
    "$@"
}
tool=("$py" igwn_robot_get.py -a "$VAULT_URL" --cafile "$CA_FILE")
echo "Local KDC (realm LIGO.ORG) and Vault emulator at $VAULT_URL are up."
echo "Robot keytab: $KRB5_KTNAME"
export BEARER_TOKEN_FILE=$dir/scitoken.use
run "${tool[@]}" --vaulttokenfile "$dir/vt" -v
echo
echo "Run it again: the token is fresh, so no Kerberos and no Vault request:"
run "${tool[@]}" --vaulttokenfile "$dir/vt" -v
echo
echo "What the token holds, and how long it has left:"
run "${tool[@]}" --show
ls -l "$BEARER_TOKEN_FILE"
