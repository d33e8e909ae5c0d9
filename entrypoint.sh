#!/usr/bin/env bash
# Entrypoint of the igwn-robot-get image: a thin wrapper. It checks only what the container
# adds around the tool, each failure one line naming the fix, then execs the tool (PID 1:
# the tool handles docker stop's SIGTERM, exit 143). The tool's options and rules are the
# tool's: nothing here parses them.
#   uid_mapping   (exit 20)  root without IGWN_ROBOT_GET_ALLOW_ROOT=1; the image's default
#                            user on a token directory that belongs to someone else
#   keytab_mount  (exit 3)   KRB5_KTNAME names nothing, or docker's empty directory
#   token_volume  (exit 8)   the token directory missing, not a volume, or not writable
# Usage: entrypoint.sh [tool options]        the checks, then exec igwn-robot-get
#        entrypoint.sh check [tool options]  every check, one line each, then the tool's
#                                            own --check (the Kubernetes initContainer)
#        entrypoint.sh -h|--help|-V|--version  the tool at once, no checks
# The token goes where the tool puts it: $BEARER_TOKEN_FILE, else $XDG_RUNTIME_DIR/bt_u<uid>
# (the image sets XDG_RUNTIME_DIR=/tokens). Tests source this file (nothing runs) and call
# one check at a time, overriding: IGWN_ROBOT_GET_TOOL (the tool command, split on spaces),
# IGWN_ROBOT_GET_TOKEN_DIR (/tokens), IGWN_ROBOT_GET_DEFAULT_UID (10001),
# IGWN_ROBOT_GET_ROOT_DIR (the container's own file system, /).
set -Eeuo pipefail

read -r -a TOOL <<<"${IGWN_ROBOT_GET_TOOL:-igwn-robot-get}"
TOKEN_DIR=${IGWN_ROBOT_GET_TOKEN_DIR:-/tokens}
DEFAULT_UID=${IGWN_ROBOT_GET_DEFAULT_UID:-10001}
ROOT_DIR=${IGWN_ROBOT_GET_ROOT_DIR:-/}
CHECKS=(uid_mapping keytab_mount token_volume)
# What the last check found (ok) or what is wrong and the fix (failure).
CHECK_MSG=

# ids: our UID:GID and other groups, numerically (no passwd or group entry needed)
ids() {
    local groups
    groups=$(id -G)
    [[ "$groups" == *" "* ]] && groups=" (groups ${groups// /,})" || groups=
    echo "$EUID:$(id -g)$groups"
}

# in_our_groups GID: true when GID is one of our groups
in_our_groups() {
    [[ " $(id -G) " == *" $1 "* ]]
}

# token_dir: the token volume, when the token goes there (BEARER_TOKEN_FILE unset or inside)
token_dir() {
    local file=${BEARER_TOKEN_FILE:-}
    [[ -z "$file" || "$file" == "$TOKEN_DIR"/* ]] && echo "$TOKEN_DIR"
    return 0
}

# check_uid_mapping: not root, and not the default user on someone else's token directory
check_uid_mapping() {
    local dir owner group mode
    if ((EUID == 0)); then
        CHECK_MSG="running as root, allowed by IGWN_ROBOT_GET_ALLOW_ROOT=1"
        [[ "${IGWN_ROBOT_GET_ALLOW_ROOT:-}" == 1 ]] && return 0
        # shellcheck disable=SC2016 # the fix is a command line to type on the host
        CHECK_MSG='running as root (no --user?): the token would belong to root, not to you; add --user $(id -u):$(id -g) to docker run (or -e IGWN_ROBOT_GET_ALLOW_ROOT=1 if root is meant)'
        return 20
    fi
    CHECK_MSG="running as $(ids)"
    dir=$(token_dir)
    if ((EUID != DEFAULT_UID)) || [[ -z "$dir" || ! -d "$dir" ]]; then
        return 0
    fi
    read -r owner group mode < <(stat -L -c '%u %g %a' -- "$dir")
    # A directory group-writable by one of our groups (Kubernetes fsGroup) is shared on purpose.
    if ((owner == EUID)) || { in_our_groups "$group" && (((8#$mode) & 8#020)); }; then
        return 0
    fi
    CHECK_MSG="running as the image's default user $EUID (no --user?), but the token directory $dir belongs to $owner:$group, so the token would belong to $EUID, not to the directory's owner; add --user \$(id -u):\$(id -g) to docker run, as the owner of the host directory"
    return 20
}

# check_keytab_mount: KRB5_KTNAME, when set, names something, and not docker's empty directory
check_keytab_mount() {
    local path=${KRB5_KTNAME:-}
    CHECK_MSG="KRB5_KTNAME not set; the keytab is the tool's to find (-k)"
    [[ -n "$path" ]] || return 0
    path=${path#FILE:}
    path=${path#WRFILE:}
    if [[ -f "$path" ]]; then
        CHECK_MSG="keytab $path is a file; its content and permissions are the tool's to check"
    else
        CHECK_MSG="keytab $path is not a file; the tool accepts a directory holding one keytab"
    fi
    if [[ ! -e "$path" ]]; then
        CHECK_MSG="keytab $path (KRB5_KTNAME) not found: nothing is mounted there; mount the keytab file: -v /path/to/robot.keytab:$path:ro -e KRB5_KTNAME=$path (check the host path and its spelling)"
        return 3
    fi
    # An empty directory is what docker creates for a host path that does not exist.
    if [[ -d "$path" && -r "$path" && -x "$path" && -z "$(ls -A -- "$path")" ]]; then
        CHECK_MSG="keytab $path is an empty directory: the host path given to -v did not exist, so docker created an empty directory; pass the keytab file: -v /path/to/robot.keytab:$path:ro (check the host path, and remove the empty directory docker left there)"
        return 3
    fi
}

# check_token_volume: the token directory exists, is a mounted volume, and takes a new file
check_token_volume() {
    local dir probe why
    dir=$(token_dir)
    CHECK_MSG="BEARER_TOKEN_FILE=${BEARER_TOKEN_FILE:-} is outside $TOKEN_DIR; its directory is the tool's to check"
    [[ -n "$dir" ]] || return 0
    if [[ ! -d "$dir" ]]; then
        CHECK_MSG="token directory $dir does not exist, or is not a directory; mount a host directory there: -v /path/to/tokens:$dir (or point -e BEARER_TOKEN_FILE elsewhere)"
        return 8
    fi
    if [[ "$(stat -L -c %d -- "$dir")" == "$(stat -L -c %d -- "$ROOT_DIR")" ]]; then
        CHECK_MSG="token directory $dir is not a mounted volume: the token would stay inside the container and be lost when it exits; mount a host directory there: -v /path/to/tokens:$dir"
        return 8
    fi
    if ! probe=$(mktemp -p "$dir" .igwn-robot-get-probe.XXXXXX 2>&1); then
        why=${probe##*: }
        if [[ "$why" == *Read-only* ]]; then
            CHECK_MSG="token directory $dir is mounted read-only; mount it read-write: -v /path/to/tokens:$dir (no :ro)"
        else
            CHECK_MSG="cannot create files in the token directory $dir ($why; owner $(stat -L -c '%u:%g, mode %04a' -- "$dir"); we are $(ids)); on the host: chown $EUID:$(id -g) /path/to/tokens, or run as the directory's owner: --user $(stat -L -c '%u:%g' -- "$dir")"
        fi
        return 8
    fi
    rm -f -- "$probe"
    CHECK_MSG="token directory $dir is a volume we can write ($(stat -L -c 'owner %u:%g, mode %04a' -- "$dir"))"
}

# run_checks: each check in turn; the first failure is one error line and its exit code
run_checks() {
    local name rc=0
    for name in "${CHECKS[@]}"; do
        "check_$name" || rc=$?
        if ((rc)); then
            printf 'igwn-robot-get: error: %s\n' "$CHECK_MSG" >&2
            return "$rc"
        fi
    done
}

# check_mode ARGS...: one line per check, then the tool's --check ARGS; the first failure's code
check_mode() {
    local name rc first=0 child
    for name in "${CHECKS[@]}"; do
        rc=0
        "check_$name" || rc=$?
        if ((rc)); then
            printf 'FAIL  %s  %s (exit %d)\n' "$name" "$CHECK_MSG" "$rc"
            ((first)) || first=$rc
        else
            printf 'ok    %s  %s\n' "$name" "$CHECK_MSG"
        fi
    done
    # The tool runs as a child (all lines print); bash as PID 1 passes on docker stop's SIGTERM.
    rc=0
    "${TOOL[@]}" --check "$@" &
    child=$!
    trap 'kill -TERM "$child" 2>/dev/null || true' TERM INT
    wait "$child" || rc=$?
    if ((rc > 128)) && kill -0 "$child" 2>/dev/null; then
        rc=0
        wait "$child" || rc=$?
    fi
    ((first)) || first=$rc
    return "$first"
}

# main [check] ARGS...: the checks, then exec the tool with ARGS unchanged
main() {
    case ${1:-} in
        -h | --help | -V | --version) ;;
        check)
            shift
            check_mode "$@" && exit 0 || exit
            ;;
        *) run_checks || exit ;;
    esac
    exec "${TOOL[@]}" "$@"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
