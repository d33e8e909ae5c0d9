#!/usr/bin/env bash
# Entrypoint of the igwn-robot-get image.
#
# Turns the troubleshooting list of the container docs into checks that run before the
# tool and name the fix, then execs the tool (PID 1, so it gets docker stop's SIGTERM):
#   uid mapping   (exit 20)  no --user: the token would not belong to the tokens' owner
#   keytab        (exit 3)   KRB5_KTNAME/-k unset, missing, a directory, unreadable, unsafe
#   token dir     (exit 8)   the bearer token file's directory missing or not writable
#   network       (exit 5)   Vault's name does not resolve or its port does not answer;
#                            only probed when the token is not fresh (no network otherwise)
#   --condor      (exit 12)  no HTCondor in the image
#
#   entrypoint.sh [igwn-robot-get options]         checks, then exec igwn-robot-get
#   entrypoint.sh check [igwn-robot-get options]   all checks, one line each, no fetch
#                                                  (the Kubernetes initContainer)
# --show, --help and --version skip the checks (they neither fetch nor write).
#
# When neither BEARER_TOKEN_FILE nor -o is given, the token goes to /tokens/bt_u<uid>.
# Tests source this file (nothing runs then) and call one check at a time; these
# environment variables override the image's paths:
#   IGWN_ROBOT_GET_TOOL         the tool command (default /usr/local/bin/igwn-robot-get)
#   IGWN_ROBOT_GET_TOKEN_DIR    default token directory (default /tokens)
#   IGWN_ROBOT_GET_DEFAULT_UID  the image's default user (default 10001)
#   IGWN_ROBOT_GET_NET_TIMEOUT  network probe budget in seconds (default 3)
#   IGWN_ROBOT_GET_ROOT_DIR     the container's own file system (default /): a token
#                               directory on it is not a volume, and the token would be lost
#   IGWN_ROBOT_GET_ALLOW_ROOT=1 run as root on purpose
set -Eeuo pipefail

read -r -a TOOL <<<"${IGWN_ROBOT_GET_TOOL:-/usr/local/bin/igwn-robot-get}"
TOKEN_DIR=${IGWN_ROBOT_GET_TOKEN_DIR:-/tokens}
DEFAULT_UID=${IGWN_ROBOT_GET_DEFAULT_UID:-10001}
NET_TIMEOUT=${IGWN_ROBOT_GET_NET_TIMEOUT:-3}
ROOT_DIR=${IGWN_ROBOT_GET_ROOT_DIR:-/}
DEFAULT_VAULTSERVER=vault.ligo.org
PROG=igwn-robot-get
# Who we are, numerically (no passwd or group entry needed).
MY_UID=$EUID
MY_GID=$(id -g)
MY_GROUPS=$(id -G)

# Filled by parse_args from the tool's options.
ARG_KEYTAB=
ARG_OUTFILE=
ARG_VAULT=
ARG_MINSECS=
ARG_CONDOR=0
ARG_PASSTHROUGH=0
ARG_LOG_JSON=0
# Set by each check: what it found (ok) or what is wrong and the fix (failure).
CHECK_MSG=

# Long options of the tool that take a value (argparse accepts unique prefixes too).
LONG_WITH_VALUE=(keytab kerberos-keytab ccache kerberos-ccache kdc-timeout vaultserver issuer
    credkey role minsecs outfile bearertokenfile audience scopes vaulttokenfile vaulttokenttl
    vaulttokenminttl cafile capath timeout jitter oidc-timeout web-open-command log-format
    status-file metrics-file on-change)
LONG_FLAGS=(condor verbose quiet version nooidc no-browser show json help)

# long_option NAME: print the tool's long option NAME abbreviates (argparse rules)
long_option() {
    local name=$1 opt match='' count=0
    for opt in "${LONG_WITH_VALUE[@]}" "${LONG_FLAGS[@]}"; do
        [[ "$opt" == "$name" ]] && { echo "$opt"; return 0; }
        [[ "$opt" == "$name"* ]] && { match=$opt; count=$((count + 1)); }
    done
    ((count == 1)) && echo "$match"
    return 0
}

# takes_value OPT: true when the long option OPT takes a value
takes_value() {
    local opt
    for opt in "${LONG_WITH_VALUE[@]}"; do [[ "$opt" == "$1" ]] && return 0; done
    return 1
}

# set_option OPT VALUE: remember the options the checks need
set_option() {
    case $1 in
        k | keytab | kerberos-keytab) ARG_KEYTAB=$2 ;;
        o | outfile | bearertokenfile) ARG_OUTFILE=$2 ;;
        a | vaultserver) ARG_VAULT=$2 ;;
        m | minsecs) ARG_MINSECS=$2 ;;
        log-format) [[ "$2" == json ]] && ARG_LOG_JSON=1 || ARG_LOG_JSON=0 ;;
    esac
}

# set_flag OPT: remember the flags that change what the entrypoint does
set_flag() {
    case $1 in
        condor) ARG_CONDOR=1 ;;
        show | help | version | h | V) ARG_PASSTHROUGH=1 ;;
    esac
}

# parse_args ARGS...: read the tool's options the checks need (the tool parses for real)
parse_args() {
    local arg name value opt i c
    while (($#)); do
        arg=$1
        shift
        case $arg in
            --) break ;;
            --?*)
                name=${arg#--}
                value=
                if [[ "$name" == *=* ]]; then value=${name#*=}; name=${name%%=*}; fi
                opt=$(long_option "$name")
                [[ -n "$opt" ]] || continue
                if takes_value "$opt"; then
                    if [[ "$arg" != *=* ]]; then
                        (($#)) || break
                        value=$1
                        shift
                    fi
                    set_option "$opt" "$value"
                else
                    set_flag "$opt"
                fi
                ;;
            -[!-]*)
                # A cluster of short options: -vq, -k/keytab, -vk /keytab.
                for ((i = 1; i < ${#arg}; i++)); do
                    c=${arg:i:1}
                    case $c in
                        k | c | a | i | r | m | o)
                            value=${arg:i+1}
                            if [[ -z "$value" ]]; then
                                (($#)) || break 2
                                value=$1
                                shift
                            fi
                            set_option "$c" "$value"
                            break
                            ;;
                        *) set_flag "$c" ;;
                    esac
                done
                ;;
        esac
    done
}

# emit_error CODE KIND MESSAGE: one error line on stderr, as the tool prints them
emit_error() {
    local code=$1 kind=$2 message=$3
    if ((ARG_LOG_JSON)); then
        printf '{"error_class": "%s", "event": "error", "exit_code": %d, "level": "error", "message": "%s", "time": "%s"}\n' \
            "$kind" "$code" "$(json_escape "$message")" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >&2
    else
        printf '%s: error: %s\n' "$PROG" "$message" >&2
    fi
}

# json_escape TEXT: TEXT as the inside of a JSON string
json_escape() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\t'/\\t}
    s=${s//$'\n'/\\n}
    s=${s//$'\r'/\\r}
    printf '%s' "$s"
}

# fail MESSAGE: record what is wrong and the fix (the check then returns its exit code)
fail() {
    CHECK_MSG=$1
}

# file_info PATH: "owner UID:GID, mode NNNN" of PATH
file_info() {
    stat -L -c 'owner %u:%g, mode %04a' -- "$1" 2>/dev/null || echo "owner and mode unknown"
}

# our_ids: "UID:GID" and supplementary groups of this process
our_ids() {
    if [[ "$MY_GROUPS" == "$MY_GID" ]]; then
        echo "$MY_UID:$MY_GID"
    else
        echo "$MY_UID:$MY_GID (groups ${MY_GROUPS// /,})"
    fi
}

# in_our_groups GID: true when GID is our primary or a supplementary group
in_our_groups() {
    local g
    for g in $MY_GROUPS; do [[ "$g" == "$1" ]] && return 0; done
    return 1
}

# default_token_file: the token goes to $TOKEN_DIR/bt_u<uid> unless BEARER_TOKEN_FILE or -o
default_token_file() {
    if [[ -z "$ARG_OUTFILE" && -z "${BEARER_TOKEN_FILE:-}" ]]; then
        BEARER_TOKEN_FILE=$TOKEN_DIR/bt_u$MY_UID
        export BEARER_TOKEN_FILE
    fi
}

# token_file: the bearer token file the tool will write
token_file() {
    if [[ -n "$ARG_OUTFILE" ]]; then
        echo "$ARG_OUTFILE"
    elif [[ -n "${BEARER_TOKEN_FILE:-}" ]]; then
        echo "$BEARER_TOKEN_FILE"
    else
        echo "$TOKEN_DIR/bt_u$MY_UID"
    fi
}

# is_stream PATH: true for /dev/stdout and friends, written directly (no directory needed)
is_stream() {
    [[ "$1" == /dev/stdout || "$1" == /dev/stderr || "$1" == /dev/fd/* || "$1" == /proc/self/fd/* ]]
}

# check_uid_mapping: refuse root, and the default user on a token directory it does not own
check_uid_mapping() {
    local uid gid file dir owner group mode
    uid=$MY_UID
    gid=$MY_GID
    file=$(token_file)
    dir=$(dirname -- "$file")
    if ((uid == 0)); then
        if [[ "${IGWN_ROBOT_GET_ALLOW_ROOT:-}" == 1 ]]; then
            CHECK_MSG="running as root, allowed by IGWN_ROBOT_GET_ALLOW_ROOT=1"
            return 0
        fi
        # shellcheck disable=SC2016 # the fix is a command line to type on the host
        fail 'running as root (no --user?): the token would belong to root, not to you; add --user $(id -u):$(id -g) to docker run (or set -e IGWN_ROBOT_GET_ALLOW_ROOT=1 if root is meant)'
        return 20
    fi
    if ((uid == DEFAULT_UID)) && ! is_stream "$file" && [[ -d "$dir" ]]; then
        read -r owner group mode < <(stat -L -c '%u %g %a' -- "$dir")
        # A group-writable directory of one of our groups (Kubernetes fsGroup) is shared on purpose.
        if ((owner != uid)) && ! { in_our_groups "$group" && (((8#$mode) & 8#020)); }; then
            fail "running as the image's default user $uid:$gid (no --user?), but the token directory $dir belongs to $owner:$group, so the token would belong to $uid, not to the directory's owner; add --user \$(id -u):\$(id -g) to docker run, as the owner of the host directory"
            return 20
        fi
    fi
    CHECK_MSG="running as $uid:$gid (no passwd entry needed)"
}

# check_keytab: KRB5_KTNAME or -k set, a regular file, readable by us, safe by the tool's rule
check_keytab() {
    local name=${ARG_KEYTAB:-${KRB5_KTNAME:-}} path owner group mode ids info
    if [[ -z "$name" ]]; then
        fail "no keytab: KRB5_KTNAME is not set and -k/--keytab was not given; mount the keytab and set it: -v /path/to/robot.keytab:/keytab:ro -e KRB5_KTNAME=/keytab"
        return 3
    fi
    path=${name#FILE:}
    path=${path#WRFILE:}
    if [[ "$path" == *:* && "$path" != /* ]]; then
        CHECK_MSG="keytab $name is not a file keytab; not checked"
        return 0
    fi
    ids=$(our_ids)
    if [[ ! -e "$path" ]]; then
        if [[ -L "$path" ]]; then
            fail "keytab $path is a dangling symbolic link; mount the keytab file itself: -v /path/to/robot.keytab:$path:ro"
        elif [[ -e "$(dirname -- "$path")" && ! -x "$(dirname -- "$path")" ]]; then
            fail "keytab $path cannot be reached: its directory $(dirname -- "$path") ($(file_info "$(dirname -- "$path")")) is not searchable by us ($ids); mount the keytab file itself, or fix the directory's permissions"
        else
            fail "keytab $path not found: nothing is mounted there; mount the keytab and point KRB5_KTNAME at it: -v /path/to/robot.keytab:$path:ro -e KRB5_KTNAME=$path (check the host path and the spelling)"
        fi
        return 3
    fi
    if [[ -d "$path" ]]; then
        fail "keytab $path is a directory: the host path given to docker -v did not exist, so docker created an empty directory; pass the keytab file: -v /path/to/robot.keytab:$path:ro (check the host path, and remove the empty directory docker created there)"
        return 3
    fi
    if [[ ! -f "$path" ]]; then
        fail "keytab $path is not a regular file; mount the keytab file: -v /path/to/robot.keytab:$path:ro"
        return 3
    fi
    read -r owner group mode < <(stat -L -c '%u %g %a' -- "$path")
    info="mode $(printf '%04o' "$((8#$mode))"), owner $owner:$group, we are $ids"
    if [[ ! -r "$path" ]]; then
        fail "keytab $path is not readable by us ($info); run the container as its owner: --user $owner:$group, or on the host chown the keytab to the UID given to --user (keep it mode 0600)"
        return 3
    fi
    mode=$((8#$mode))
    if ((mode & 8#006)); then
        fail "keytab $path is readable or writable by others ($info); on the host: chmod 600 /path/to/robot.keytab"
        return 3
    fi
    if ((mode & 8#020)); then
        fail "keytab $path is writable by its group ($info); on the host: chmod 600 /path/to/robot.keytab"
        return 3
    fi
    if ((mode & 8#040)); then
        if ((owner == MY_UID)) || ! in_our_groups "$group"; then
            fail "keytab $path is readable by its group ($info); on the host: chmod 600 /path/to/robot.keytab (group-read is accepted only for a Kubernetes Secret with fsGroup: owned by root, group one of ours)"
            return 3
        fi
        CHECK_MSG="keytab $path readable ($info; group-read accepted: Kubernetes Secret with fsGroup)"
        return 0
    fi
    CHECK_MSG="keytab $path readable ($info)"
}

# check_token_dir: the token file's directory exists and a real file can be created in it
check_token_dir() {
    local file dir probe why
    file=$(token_file)
    if is_stream "$file"; then
        CHECK_MSG="token goes to $file"
        return 0
    fi
    dir=$(dirname -- "$file")
    if [[ ! -e "$dir" ]]; then
        fail "token directory $dir does not exist, so $file cannot be written; mount a host directory there: -v /path/to/tokens:$dir (or fix BEARER_TOKEN_FILE / -o)"
        return 8
    fi
    if [[ ! -d "$dir" ]]; then
        fail "token directory $dir is not a directory, so $file cannot be written; mount a host directory: -v /path/to/tokens:$dir (or fix BEARER_TOKEN_FILE / -o)"
        return 8
    fi
    if [[ "$(stat -L -c %d -- "$dir")" == "$(stat -L -c %d -- "$ROOT_DIR")" ]]; then
        fail "token directory $dir is not a mounted volume: the token would stay inside the container and be lost when it exits; mount a host directory there: -v /path/to/tokens:$dir"
        return 8
    fi
    if ! probe=$(mktemp -p "$dir" .igwn-robot-get-check.XXXXXX 2>&1); then
        why=${probe##*: }
        if [[ "$why" == *Read-only* ]]; then
            fail "token directory $dir is read-only ($why), so $file cannot be written; mount it read-write: -v /path/to/tokens:$dir (no :ro)"
        else
            # shellcheck disable=SC2016 # the fix is a command line to type on the host
            fail "cannot create files in the token directory $dir ($why; $(file_info "$dir"); we are $(our_ids)), so $file cannot be written; on the host: chown $MY_UID:$MY_GID /path/to/tokens, or run as the directory's owner: --user $(stat -L -c '%u:%g' -- "$dir") (usually --user \$(id -u):\$(id -g))"
        fi
        return 8
    fi
    rm -f -- "$probe"
    CHECK_MSG="token directory $dir writable ($(file_info "$dir")); token file $file"
}

# bounded SECONDS CMD...: run CMD for at most SECONDS; a waiting bash still takes SIGTERM
bounded() {
    local budget=$1
    shift
    timeout "$budget" "$@" &
    wait "$!"
}

# vault_host_port URL: print "HOST PORT" of a --vaultserver value (bare host: port 8200)
vault_host_port() {
    local url=$1 hostport host port
    hostport=${url#*://}
    hostport=${hostport%%/*}
    if [[ "$hostport" == \[* ]]; then
        host=${hostport#[}
        host=${host%%]*}
        port=${hostport##*]}
        port=${port#:}
    elif [[ "$hostport" == *:* ]]; then
        host=${hostport%:*}
        port=${hostport##*:}
    else
        host=$hostport
        port=
    fi
    [[ "$port" =~ ^[0-9]+$ ]] || port=8200
    echo "$host $port"
}

# check_network: Vault's host resolves and its port accepts a TCP connection, quickly
check_network() {
    local server=${ARG_VAULT:-$DEFAULT_VAULTSERVER} host port half why rc=0
    read -r host port < <(vault_host_port "$server")
    half=$(awk -v t="$NET_TIMEOUT" 'BEGIN { printf "%.2f", t / 2 }')
    if ! bounded "$half" getent ahosts "$host" >/dev/null 2>&1; then
        fail "cannot reach Vault at $host:$port: the name $host does not resolve (DNS) inside the container; check the container's network and DNS (docker run --network/--dns; in Kubernetes the pod's dnsPolicy and NetworkPolicy) and that outbound HTTPS to $host:$port is allowed"
        return 5
    fi
    # shellcheck disable=SC2016 # $1 and $2 expand in the child bash
    bounded "$half" bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null || rc=$?
    if ((rc)); then
        why="connection refused or unreachable"
        ((rc != 124)) || why="timed out after ${half}s"
        fail "cannot reach Vault at $host:$port: no TCP connection ($why); the container needs outbound HTTPS to $host:$port: check the container's network (docker run --network), firewall, proxy and Kubernetes NetworkPolicy"
        return 5
    fi
    CHECK_MSG="Vault $host:$port resolves and accepts connections"
}

# check_condor: --condor needs HTCondor, which the image does not have
check_condor() {
    if ((ARG_CONDOR)); then
        fail "--condor: the container image has no HTCondor (condor_vault_storer); install igwn-robot-get on the host and run it there with --condor"
        return 12
    fi
    CHECK_MSG="no --condor"
}

# token_is_fresh: the tool's own --show says the token has --minsecs left (no network);
# only -o and -m are passed, so --status-file, --metrics-file and --on-change do not fire
token_is_fresh() {
    local rc=0
    local -a probe=(--show -q)
    [[ -z "$ARG_OUTFILE" ]] || probe+=(-o "$ARG_OUTFILE")
    [[ -z "$ARG_MINSECS" ]] || probe+=(-m "$ARG_MINSECS")
    env -u BEARER_TOKEN "${TOOL[@]}" "${probe[@]}" >/dev/null 2>&1 &
    wait "$!" || rc=$?
    # A usage error (2) is the tool's to report: do not probe the network for it.
    ((rc == 0 || rc == 2))
}

# kind_of CODE: the error class name the tool uses for an exit code
kind_of() {
    case $1 in
        3) echo keytab ;; 5) echo vault_unreachable ;; 8) echo output ;;
        12) echo condor ;; 20) echo uid_mapping ;; *) echo entrypoint ;;
    esac
}

# run_checks MODE ARGS...: run the checks; in "check" mode all of them, one line each
run_checks() {
    local mode=$1 name rc first=0
    shift
    local -a checks=(condor uid_mapping keytab token_dir)
    if [[ "$mode" == check ]] || ! token_is_fresh; then
        checks+=(network)
    fi
    for name in "${checks[@]}"; do
        CHECK_MSG=
        rc=0
        "check_$name" || rc=$?
        if [[ "$mode" == check ]]; then
            if ((rc == 0)); then
                printf 'ok    %-12s %s\n' "$name" "$CHECK_MSG"
            else
                printf 'FAIL  %-12s %s (exit %d)\n' "$name" "$CHECK_MSG" "$rc"
                ((first)) || first=$rc
            fi
        elif ((rc != 0)); then
            emit_error "$rc" "$(kind_of "$rc")" "$CHECK_MSG"
            return "$rc"
        fi
    done
    return "$first"
}

# on_signal CODE: stop the probes running in the background and exit with CODE
on_signal() {
    local pids
    pids=$(jobs -p)
    # shellcheck disable=SC2086 # one PID per word
    [[ -z "$pids" ]] || kill $pids 2>/dev/null || true
    exit "$1"
}

# main [check] ARGS...: check, then exec the tool with all arguments
main() {
    trap 'on_signal 143' TERM
    trap 'on_signal 130' INT
    local mode=run
    if [[ "${1:-}" == check ]]; then
        mode=check
        shift
    fi
    parse_args "$@"
    default_token_file
    if [[ "$mode" == check ]]; then
        local rc=0
        run_checks check "$@" || rc=$?
        exit "$rc"
    fi
    if ((ARG_PASSTHROUGH == 0 || ARG_CONDOR)); then
        run_checks run "$@" || exit
    fi
    trap - TERM INT
    exec "${TOOL[@]}" "$@"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
