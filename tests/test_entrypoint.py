"""entrypoint.sh, one check at a time: the script is sourced by bash (nothing runs then),
its paths overridden through the environment, and each check function called on its own.
Runs as root; other UIDs with setpriv (no passwd entry needed: 43210 has none).
The whole main() is exercised with a stub tool that records how it was called.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

import testbed as tb

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ENTRYPOINT = os.path.join(REPO, "entrypoint.sh")
NOBODY = 43210          # a UID/GID with no passwd or group entry
FSGROUP = 43211         # a supplementary group, as Kubernetes' fsGroup gives

STUB = """#!/bin/bash
# A stand-in for igwn-robot-get: records its arguments, answers --show as told.
for a in "$@"; do printf '%s\\n' "$a"; done >"$STUB_LOG.$$"
printf 'BEARER_TOKEN_FILE=%s\\n' "${BEARER_TOKEN_FILE-<unset>}" >>"$STUB_LOG.$$"
for a in "$@"; do
    if [ "$a" = --show ]; then
        mv "$STUB_LOG.$$" "$STUB_LOG.show"
        sleep "${STUB_SHOW_SLEEP:-0}"
        exit "${STUB_SHOW_RC:-11}"
    fi
done
mv "$STUB_LOG.$$" "$STUB_LOG"
exit "${STUB_RC:-0}"
"""


@pytest.fixture
def area():
    """A directory every test UID can traverse (pytest's tmp_path is root-only)."""
    path = tempfile.mkdtemp(prefix="igwn-entrypoint-")
    os.chmod(path, 0o755)  # noqa: S103 -- test files only, no secrets
    yield path
    shutil.rmtree(path, ignore_errors=True)


def base_env(area, **extra):
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": "/tmp",
        "IGWN_ROBOT_GET_TOKEN_DIR": os.path.join(area, "tokens"),
        "IGWN_ROBOT_GET_TOOL": os.path.join(area, "stub-tool"),
        "STUB_LOG": os.path.join(area, "stub.log"),
        "IGWN_ROBOT_GET_DEFAULT_UID": "10001",
        # the test directories share the host's root file system: compare with /proc
        "IGWN_ROBOT_GET_ROOT_DIR": "/proc",
    }
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def as_user(cmd, uid=None, gid=None, groups=()):
    if uid is None:
        return cmd
    prefix = ["setpriv", "--reuid", str(uid), "--regid", str(gid if gid is not None else uid)]
    prefix += ["--groups", ",".join(str(g) for g in groups)] if groups else ["--clear-groups"]
    return prefix + cmd


def call(area, function, args=(), uid=None, gid=None, groups=(), timeout=20, **env):
    """Source the entrypoint, parse ARGS like main does, call one function.

    Returns (exit status of the function, CHECK_MSG, stdout+stderr).
    """
    script = ('source "$ENTRYPOINT_UNDER_TEST"; parse_args "$@"; default_token_file; rc=0; '
              + function + ' || rc=$?; printf "MSG=%s\\n" "$CHECK_MSG"; exit "$rc"')
    environment = base_env(area, ENTRYPOINT_UNDER_TEST=ENTRYPOINT, **env)
    proc = subprocess.run(as_user(["bash", "-c", script, "entrypoint-test"] + list(args),
                                  uid, gid, groups),
                          env=environment, capture_output=True, text=True, timeout=timeout,
                          check=False)
    msg = ""
    for line in proc.stdout.splitlines():
        if line.startswith("MSG="):
            msg = line[4:]
    return proc.returncode, msg, proc.stdout + proc.stderr


def write_stub(area):
    """The stub tool, runnable and able to write its log as any UID."""
    stub = os.path.join(area, "stub-tool")
    with open(stub, "w") as handle:
        handle.write(STUB)
    os.chmod(stub, 0o755)  # noqa: S103 -- a test script
    os.chmod(area, 0o777)  # noqa: S103 -- the stub writes its log here as any UID


def run_main(area, args=(), uid=None, gid=None, groups=(), timeout=20, **env):
    """Run the entrypoint as a program with the stub tool."""
    write_stub(area)
    return subprocess.run(as_user([ENTRYPOINT] + list(args), uid, gid, groups),
                          env=base_env(area, **env), capture_output=True, text=True,
                          timeout=timeout, check=False)


def stub_calls(area):
    """The arguments (and BEARER_TOKEN_FILE) of the stub's normal and --show calls."""
    out = {}
    for name, path in (("run", "stub.log"), ("show", "stub.log.show")):
        path = os.path.join(area, path)
        if os.path.exists(path):
            with open(path) as handle:
                out[name] = handle.read().splitlines()
    return out


def make_tokens(area, uid=0, gid=0, mode=0o755):
    path = os.path.join(area, "tokens")
    os.makedirs(path, exist_ok=True)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def make_keytab(area, uid=0, gid=0, mode=0o600, name="robot.keytab"):
    path = os.path.join(area, name)
    with open(path, "wb") as handle:
        handle.write(b"\x05\x02not-a-real-keytab")
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def listening_socket():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


closed_port = tb.closed_port


# -- the script itself ------------------------------------------------------------------

def test_sourcing_runs_nothing(area):
    proc = subprocess.run(["bash", "-c", 'source "$1"; echo sourced', "t", ENTRYPOINT],
                          env=base_env(area), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "sourced\n"
    assert not os.path.exists(os.path.join(area, "stub.log"))


def test_script_shape():
    with open(ENTRYPOINT) as handle:
        text = handle.read()
    assert "set -Eeuo pipefail" in text
    assert 'if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then' in text
    assert 'exec "${TOOL[@]}" "$@"' in text
    assert os.access(ENTRYPOINT, os.X_OK)
    # one function per check, each with its one-line comment
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("check_") and line.endswith("() {"):
            assert lines[i - 1].startswith("# " + line.split("(")[0]), line


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck not installed")
def test_shellcheck_clean():
    proc = subprocess.run(["shellcheck", ENTRYPOINT], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout


# -- option parsing ---------------------------------------------------------------------

@pytest.mark.parametrize("args, keytab, outfile, vault", [
    (["-k", "/a", "-o", "/t/x", "-a", "v.example:1"], "/a", "/t/x", "v.example:1"),
    (["-k/a", "-o/t/x", "-av.example"], "/a", "/t/x", "v.example"),
    (["--keytab=/a", "--outfile=/t/x", "--vaultserver=https://v:9"], "/a", "/t/x", "https://v:9"),
    (["--kerberos-keytab", "/a", "--bearertokenfile", "/t/x"], "/a", "/t/x", ""),
    (["--kerberos-k", "/a", "--bearer", "/t/x", "--vaults", "h"], "/a", "/t/x", "h"),  # prefixes
    (["--kerb", "/a", "--vault", "h"], "", "", ""),  # ambiguous prefixes: left to the tool
    (["-vqk", "/a", "robot/ci.ligo.org", "-m", "3600"], "/a", "", ""),
    (["--audience", "-k", "--scopes", "-o"], "", "", ""),  # values, not options
    (["--", "-k", "/a"], "", "", ""),
    (["--vaulttoken", "/x"], "", "", ""),  # ambiguous prefix: left to the tool
])
def test_parse_args(area, args, keytab, outfile, vault):
    code, _, out = call(area, 'echo "K=$ARG_KEYTAB O=$ARG_OUTFILE A=$ARG_VAULT"', args)
    assert code == 0, out
    assert "K={} O={} A={}".format(keytab, outfile, vault) in out


@pytest.mark.parametrize("args, condor, passthrough", [
    (["--condor"], 1, 0), (["--con"], 1, 0), (["--show"], 0, 1), (["--sh", "--json"], 0, 1),
    (["-V"], 0, 1), (["--version"], 0, 1), (["-h"], 0, 1), (["--help"], 0, 1),
    (["-vV"], 0, 1), (["-m", "--show"], 0, 0), (["robot"], 0, 0),
])
def test_parse_flags(area, args, condor, passthrough):
    code, _, out = call(area, 'echo "C=$ARG_CONDOR P=$ARG_PASSTHROUGH"', args)
    assert code == 0, out
    assert "C={} P={}".format(condor, passthrough) in out


def test_option_lists_match_the_tool(area):
    """The entrypoint's option lists (for argparse-style prefixes) follow the tool's."""
    import importlib
    import sys
    sys.path.insert(0, REPO)
    try:
        tool = importlib.import_module("igwn_robot_get")
    finally:
        sys.path.remove(REPO)
    if not hasattr(tool, "create_parser"):
        pytest.skip("igwn_robot_get has no create_parser()")
    with_value, flags = set(), set()
    for action in tool.create_parser()._actions:
        for option in action.option_strings:
            if option.startswith("--"):
                (flags if action.nargs == 0 else with_value).add(option[2:])
    code, _, out = call(area, 'echo "V=${LONG_WITH_VALUE[*]}"; echo "F=${LONG_FLAGS[*]}"')
    assert code == 0, out
    lines = dict(line.split("=", 1) for line in out.splitlines() if line[:2] in ("V=", "F="))
    assert set(lines["V"].split()) == with_value
    assert set(lines["F"].split()) == flags


@pytest.mark.parametrize("server, host, port", [
    ("vault.ligo.org", "vault.ligo.org", 8200),
    ("vault.ligo.org:443", "vault.ligo.org", 443),
    ("https://vault.ligo.org", "vault.ligo.org", 8200),
    ("https://localhost:41234/", "localhost", 41234),
    ("https://h.example:8200/v1/x", "h.example", 8200),
    ("[::1]:8201", "::1", 8201),
    ("https://[::1]", "::1", 8200),
])
def test_vault_host_port(area, server, host, port):
    code, _, out = call(area, 'vault_host_port "$1"', [server])
    assert code == 0, out
    assert out.splitlines()[0] == "{} {}".format(host, port)


# -- UID mapping (exit 20) --------------------------------------------------------------

def test_uid_root_refused_with_exact_fix(area):
    make_tokens(area)
    code, msg, _ = call(area, "check_uid_mapping")
    assert code == 20
    assert "root" in msg
    assert "--user $(id -u):$(id -g)" in msg
    assert "IGWN_ROBOT_GET_ALLOW_ROOT=1" in msg


def test_uid_root_allowed_on_purpose(area):
    make_tokens(area)
    code, msg, _ = call(area, "check_uid_mapping", IGWN_ROBOT_GET_ALLOW_ROOT=1)
    assert code == 0, msg


def test_uid_default_user_on_foreign_directory(area):
    make_tokens(area, 1000, 1000)
    code, msg, _ = call(area, "check_uid_mapping", uid=NOBODY,
                        IGWN_ROBOT_GET_DEFAULT_UID=NOBODY)
    assert code == 20
    assert "default user {}".format(NOBODY) in msg
    assert "belongs to 1000:1000" in msg
    assert "--user $(id -u):$(id -g)" in msg


def test_uid_default_user_on_its_own_directory(area):
    make_tokens(area, NOBODY, NOBODY)
    code, msg, _ = call(area, "check_uid_mapping", uid=NOBODY,
                        IGWN_ROBOT_GET_DEFAULT_UID=NOBODY)
    assert code == 0, msg


def test_uid_default_user_on_shared_group_directory(area):
    # Kubernetes: volume root:fsGroup, group-writable (setgid), fsGroup among our groups
    make_tokens(area, 0, FSGROUP, 0o2775)
    code, msg, _ = call(area, "check_uid_mapping", uid=NOBODY, groups=[NOBODY, FSGROUP],
                        IGWN_ROBOT_GET_DEFAULT_UID=NOBODY)
    assert code == 0, msg


def test_uid_explicit_user_without_passwd_entry(area):
    make_tokens(area, 1000, 1000, 0o777)
    code, msg, _ = call(area, "check_uid_mapping", uid=NOBODY)
    assert code == 0, msg
    assert "{0}:{0}".format(NOBODY) in msg


def test_uid_default_user_writing_to_stdout(area):
    code, msg, _ = call(area, "check_uid_mapping", ["-o", "/dev/stdout"], uid=NOBODY,
                        IGWN_ROBOT_GET_DEFAULT_UID=NOBODY)
    assert code == 0, msg


# -- keytab (exit 3) ---------------------------------------------------------------------

def test_keytab_unset(area):
    code, msg, _ = call(area, "check_keytab", KRB5_KTNAME=None)
    assert code == 3
    assert "KRB5_KTNAME is not set" in msg and "-e KRB5_KTNAME=/keytab" in msg


def test_keytab_missing(area):
    code, msg, _ = call(area, "check_keytab", KRB5_KTNAME=os.path.join(area, "nope"))
    assert code == 3
    assert "not found" in msg and "-v /path/to/robot.keytab:" in msg


def test_keytab_dangling_symlink(area):
    link = os.path.join(area, "link")
    os.symlink(os.path.join(area, "nope"), link)
    code, msg, _ = call(area, "check_keytab", KRB5_KTNAME=link)
    assert code == 3
    assert "dangling" in msg


def test_keytab_is_a_directory(area):
    path = os.path.join(area, "keytab")
    os.mkdir(path)
    code, msg, _ = call(area, "check_keytab", KRB5_KTNAME=path)
    assert code == 3
    assert "is a directory" in msg
    assert "docker created an empty directory" in msg
    assert "did not exist" in msg


def test_keytab_not_a_regular_file(area):
    path = os.path.join(area, "fifo")
    os.mkfifo(path)
    code, msg, _ = call(area, "check_keytab", KRB5_KTNAME=path)
    assert code == 3
    assert "not a regular file" in msg


def test_keytab_unreadable_shows_owner_mode_and_ids(area):
    path = make_keytab(area, 0, 0, 0o600)
    code, msg, _ = call(area, "check_keytab", uid=NOBODY, KRB5_KTNAME=path)
    assert code == 3
    assert "not readable" in msg
    assert "mode 0600" in msg and "owner 0:0" in msg
    assert "we are {0}:{0}".format(NOBODY) in msg


@pytest.mark.parametrize("mode, words", [
    (0o644, "readable or writable by others"),
    (0o602, "readable or writable by others"),
    (0o620, "writable by its group"),
    (0o640, "readable by its group"),   # group-read of our own file
])
def test_keytab_unsafe_permissions(area, mode, words):
    path = make_keytab(area, NOBODY, NOBODY, mode)
    code, msg, _ = call(area, "check_keytab", uid=NOBODY, KRB5_KTNAME=path)
    assert code == 3
    assert words in msg
    assert "chmod 600" in msg


def test_keytab_kubernetes_secret_with_fsgroup_accepted(area):
    # defaultMode 0400 + fsGroup -> 0440 root:fsGroup (kubernetes/kubernetes#57923)
    path = make_keytab(area, 0, FSGROUP, 0o440)
    code, msg, _ = call(area, "check_keytab", uid=NOBODY, groups=[NOBODY, FSGROUP],
                        KRB5_KTNAME=path)
    assert code == 0, msg
    assert "fsGroup" in msg


def test_keytab_group_read_of_a_group_not_ours_refused(area):
    path = make_keytab(area, 0, FSGROUP, 0o440)
    code, msg, _ = call(area, "check_keytab", uid=NOBODY, KRB5_KTNAME=path)
    assert code == 3


def test_keytab_ok(area):
    path = make_keytab(area, NOBODY, NOBODY, 0o600)
    code, msg, _ = call(area, "check_keytab", uid=NOBODY, KRB5_KTNAME="FILE:" + path)
    assert code == 0, msg
    assert "mode 0600" in msg


def test_keytab_option_wins_over_environment(area):
    path = make_keytab(area, NOBODY, NOBODY, 0o600)
    code, msg, _ = call(area, "check_keytab", ["-k", path], uid=NOBODY,
                        KRB5_KTNAME=os.path.join(area, "nope"))
    assert code == 0, msg


# -- token directory (exit 8) --------------------------------------------------------------

def test_token_dir_missing(area):
    code, msg, _ = call(area, "check_token_dir", uid=NOBODY)
    assert code == 8
    assert "does not exist" in msg and "-v /path/to/tokens:" in msg


def test_token_dir_not_a_directory(area):
    with open(os.path.join(area, "tokens"), "w"):
        pass
    code, msg, _ = call(area, "check_token_dir", uid=NOBODY)
    assert code == 8
    assert "not a directory" in msg


def test_token_dir_not_writable_shows_owner_mode_and_fix(area):
    make_tokens(area, 1000, 1000, 0o755)
    code, msg, _ = call(area, "check_token_dir", uid=NOBODY)
    assert code == 8
    assert "owner 1000:1000, mode 0755" in msg
    assert "we are {0}:{0}".format(NOBODY) in msg
    assert "chown {0}:{0} /path/to/tokens".format(NOBODY) in msg
    assert "--user 1000:1000" in msg


def test_token_dir_writable_leaves_nothing(area):
    tokens = make_tokens(area, NOBODY, NOBODY, 0o755)
    code, msg, _ = call(area, "check_token_dir", uid=NOBODY)
    assert code == 0, msg
    assert os.listdir(tokens) == []
    assert "bt_u{}".format(NOBODY) in msg


def test_token_dir_sticky_world_writable(area):
    tokens = make_tokens(area, 10001, 10001, 0o1777)  # the image's /tokens
    code, msg, _ = call(area, "check_token_dir", uid=NOBODY)
    assert code == 0, msg
    assert os.listdir(tokens) == []


def test_token_dir_not_a_volume(area):
    # the directory is on the container's own file system: the token would be lost
    make_tokens(area, NOBODY, NOBODY, 0o1777)
    code, msg, _ = call(area, "check_token_dir", uid=NOBODY, IGWN_ROBOT_GET_ROOT_DIR=area)
    assert code == 8
    assert "not a mounted volume" in msg and "lost" in msg and "-v /path/to/tokens:" in msg


def test_token_dir_from_bearer_token_file_and_outfile(area):
    other = os.path.join(area, "other")
    os.mkdir(other)
    code, msg, _ = call(area, "check_token_dir", uid=NOBODY,
                        BEARER_TOKEN_FILE=os.path.join(other, "scitoken.use"))
    assert code == 8 and other in msg
    code, msg, _ = call(area, "check_token_dir", ["-o", "/dev/stdout"], uid=NOBODY)
    assert code == 0, msg


def test_token_dir_read_only(area):
    tokens = make_tokens(area, NOBODY, NOBODY, 0o755)
    script = ('mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && '
              'exec setpriv --reuid {0} --regid {0} --clear-groups bash -c '
              '\'source "$ENTRYPOINT_UNDER_TEST"; check_token_dir || rc=$?; '
              'echo "$CHECK_MSG"; exit "${{rc:-0}}"\''.format(NOBODY))
    proc = subprocess.run(["unshare", "--mount", "bash", "-c", script, "t", tokens],
                          env=base_env(area, ENTRYPOINT_UNDER_TEST=ENTRYPOINT),
                          capture_output=True, text=True, check=False)
    if "mount" in proc.stderr and proc.returncode not in (0, 8):
        pytest.skip("cannot make a read-only bind mount here: " + proc.stderr.strip())
    assert proc.returncode == 8, proc.stdout + proc.stderr
    assert "read-only" in proc.stdout and "no :ro" in proc.stdout


# -- network (exit 5) ----------------------------------------------------------------------

def test_network_ok():
    sock = listening_socket()
    try:
        with tempfile.TemporaryDirectory() as area:
            code, msg, _ = call(area, "check_network",
                                ["-a", "https://127.0.0.1:{}".format(sock.getsockname()[1])])
    finally:
        sock.close()
    assert code == 0, msg


def test_network_refused_is_quick(area):
    port = closed_port()
    started = time.monotonic()
    code, msg, _ = call(area, "check_network", ["-a", "https://localhost:{}".format(port)])
    assert code == 5
    assert time.monotonic() - started < 3.5
    assert "cannot reach Vault at localhost:{}".format(port) in msg
    assert "outbound HTTPS" in msg and "network" in msg


def test_network_dns_failure(area):
    code, msg, _ = call(area, "check_network", ["--vaultserver", "vault.invalid"])
    assert code == 5
    assert "does not resolve" in msg and "DNS" in msg


def test_network_budget_bounded(area):
    # a name lookup that hangs: the probe gives up within its budget
    fake = os.path.join(area, "bin")
    os.mkdir(fake)
    with open(os.path.join(fake, "getent"), "w") as handle:
        handle.write("#!/bin/sh\nexec sleep 30\n")
    os.chmod(os.path.join(fake, "getent"), 0o755)  # noqa: S103 -- a test script
    started = time.monotonic()
    code, msg, _ = call(area, "check_network", ["-a", "vault.example:8200"],
                        IGWN_ROBOT_GET_NET_TIMEOUT=1,
                        PATH=fake + ":/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    assert code == 5, msg
    assert time.monotonic() - started < 2.5


# -- --condor (exit 12) --------------------------------------------------------------------

def test_condor_refused(area):
    code, msg, _ = call(area, "check_condor", ["--condor"])
    assert code == 12
    assert "install igwn-robot-get on the host" in msg


# -- main: the whole entrypoint with a stub tool ----------------------------------------

def ready(area, uid=NOBODY):
    """A token directory and a keytab that pass the checks as UID."""
    make_tokens(area, uid, uid, 0o755)
    return make_keytab(area, uid, uid, 0o600)


def test_main_execs_tool_with_all_arguments(area):
    keytab = ready(area)
    sock = listening_socket()
    args = ["-a", "https://127.0.0.1:{}".format(sock.getsockname()[1]), "--audience",
            "https://my-service.example.org", "--scopes", "read:/data", "a b", ""]
    try:
        proc = run_main(area, args, uid=NOBODY, KRB5_KTNAME=keytab)
    finally:
        sock.close()
    assert proc.returncode == 0, proc.stderr
    calls = stub_calls(area)
    assert calls["run"][:-1] == args
    token = os.path.join(area, "tokens", "bt_u{}".format(NOBODY))
    assert calls["run"][-1] == "BEARER_TOKEN_FILE=" + token
    assert calls["show"][:-1] == ["--show", "-q"]


def test_main_freshness_probe_has_no_side_effects(area):
    # --status-file, --metrics-file and --on-change must not fire for the --show probe;
    # -o and -m decide freshness and are passed on
    keytab = ready(area)
    tokens = os.path.join(area, "tokens")
    args = ["--status-file", "/s.json", "--metrics-file=/m.prom", "--on-change", "touch /x",
            "-o", tokens + "/t", "--minsecs", "7200", "--jitter", "30"]
    proc = run_main(area, args, uid=NOBODY, KRB5_KTNAME=keytab, STUB_SHOW_RC=0)
    assert proc.returncode == 0, proc.stderr
    calls = stub_calls(area)
    assert calls["show"] == ["--show", "-q", "-o", tokens + "/t", "-m", "7200",
                             "BEARER_TOKEN_FILE=<unset>"]
    assert calls["run"][:-1] == args


def test_main_keeps_bearer_token_file_and_outfile(area):
    keytab = ready(area)
    tokens = os.path.join(area, "tokens")
    env = dict(KRB5_KTNAME=keytab, STUB_SHOW_RC=0)
    run_main(area, [], uid=NOBODY, BEARER_TOKEN_FILE=tokens + "/scitoken.use", **env)
    assert stub_calls(area)["run"] == ["BEARER_TOKEN_FILE={}/scitoken.use".format(tokens)]
    run_main(area, ["-o", tokens + "/x"], uid=NOBODY, **env)
    assert stub_calls(area)["run"] == ["-o", tokens + "/x", "BEARER_TOKEN_FILE=<unset>"]


def test_main_fresh_token_skips_network_probe(area):
    keytab = ready(area)
    proc = run_main(area, ["-a", "https://127.0.0.1:{}".format(closed_port())], uid=NOBODY,
                    KRB5_KTNAME=keytab, STUB_SHOW_RC=0)
    assert proc.returncode == 0, proc.stderr
    assert "run" in stub_calls(area)


def test_main_stale_token_probes_network(area):
    keytab = ready(area)
    started = time.monotonic()
    proc = run_main(area, ["-a", "https://127.0.0.1:{}".format(closed_port())], uid=NOBODY,
                    KRB5_KTNAME=keytab, STUB_SHOW_RC=11)
    assert proc.returncode == 5
    assert time.monotonic() - started < 4
    assert proc.stderr.startswith("igwn-robot-get: error: cannot reach Vault")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "run" not in stub_calls(area)


def test_main_usage_error_left_to_the_tool(area):
    keytab = ready(area)
    proc = run_main(area, ["-a", "https://127.0.0.1:{}".format(closed_port()), "--bogus"],
                    uid=NOBODY, KRB5_KTNAME=keytab, STUB_SHOW_RC=2, STUB_RC=2)
    assert proc.returncode == 2
    assert "run" in stub_calls(area)


@pytest.mark.parametrize("args, code, words", [
    ([], 20, "--user $(id -u):$(id -g)"),
    (["--condor"], 12, "install igwn-robot-get on the host"),
    (["--show", "--condor"], 12, "no HTCondor"),
])
def test_main_refusals_as_root(area, args, code, words):
    ready(area, 0)
    proc = run_main(area, args, KRB5_KTNAME=os.path.join(area, "robot.keytab"))
    assert proc.returncode == code
    assert words in proc.stderr
    assert "run" not in stub_calls(area)


def test_main_first_failure_wins_and_is_one_line(area):
    make_tokens(area, 1000, 1000, 0o755)
    proc = run_main(area, [], uid=NOBODY, KRB5_KTNAME=os.path.join(area, "nope"))
    assert proc.returncode == 3
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "run" not in stub_calls(area)


@pytest.mark.parametrize("args", [["--show"], ["--show", "--json"], ["-V"], ["--help"]])
def test_main_passthrough_skips_checks(area, args):
    # no keytab, no token directory, root: --show/--version/--help need none of them
    proc = run_main(area, args, STUB_SHOW_RC=0, KRB5_KTNAME=None)
    assert proc.returncode == 0, proc.stderr
    calls = stub_calls(area)
    got = calls.get("run") or calls.get("show")
    assert got[:-1] == args
    assert got[-1].startswith("BEARER_TOKEN_FILE=" + os.path.join(area, "tokens", "bt_u0"))


def test_main_json_log_format(area):
    make_tokens(area, NOBODY, NOBODY)
    proc = run_main(area, ["--log-format", "json"], uid=NOBODY, KRB5_KTNAME=None)
    assert proc.returncode == 3
    doc = json.loads(proc.stderr)
    assert doc["exit_code"] == 3 and doc["error_class"] == "keytab"
    assert doc["level"] == "error" and "KRB5_KTNAME" in doc["message"]
    assert set(doc) == {"time", "level", "event", "message", "error_class", "exit_code"}


def test_check_mode_all_ok_without_fetch(area):
    keytab = ready(area)
    sock = listening_socket()
    try:
        proc = run_main(area, ["check", "-a", "127.0.0.1:{}".format(sock.getsockname()[1])],
                        uid=NOBODY, KRB5_KTNAME=keytab)
    finally:
        sock.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["ok", "condor"], ["ok", "uid_mapping"], ["ok", "keytab"], ["ok", "token_dir"],
        ["ok", "network"]]
    assert stub_calls(area) == {}


def test_check_mode_reports_every_failure_exits_with_first(area):
    make_tokens(area, 1000, 1000, 0o755)
    keytab = make_keytab(area, NOBODY, NOBODY, 0o644)
    proc = run_main(area, ["check", "-a", "127.0.0.1:{}".format(closed_port())], uid=NOBODY,
                    KRB5_KTNAME=keytab)
    assert proc.returncode == 3
    status = {line.split()[1]: line.split()[0] for line in proc.stdout.splitlines()}
    assert status == {"condor": "ok", "uid_mapping": "ok", "keytab": "FAIL",
                      "token_dir": "FAIL", "network": "FAIL"}
    assert stub_calls(area) == {}


def test_sigterm_during_checks(area):
    # bash as PID 1 ignores SIGTERM without a trap, and a trap waits for a foreground
    # child: the entrypoint waits for its probes in the background and traps SIGTERM.
    keytab = ready(area)
    write_stub(area)
    env = base_env(area, KRB5_KTNAME=keytab, STUB_SHOW_SLEEP=30)
    proc = subprocess.Popen(as_user([ENTRYPOINT], NOBODY), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not os.path.exists(os.path.join(area, "stub.log.show")):
        assert time.monotonic() < deadline, "the --show probe never started"
        time.sleep(0.05)
    time.sleep(0.2)
    started = time.monotonic()
    proc.terminate()
    try:
        proc.wait(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 143
    assert time.monotonic() - started < 1.0
