"""entrypoint.sh, one check at a time, then as a whole with a stub tool.

The script is copied into a directory every test UID can read (the checkout may sit in a
0700 directory such as /root), sourced by bash (nothing runs then), its paths overridden
through the environment, and each check function called on its own. Runs as root; other
UIDs with setpriv (no passwd entry needed: 43210 has none).

main() runs with a stub tool that records how it was called: its arguments, its PID
(exec: the same process as the entrypoint) and the environment it got.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ENTRYPOINT = os.path.join(REPO, "entrypoint.sh")
NOBODY = 43210          # a UID/GID with no passwd or group entry
FSGROUP = 43211         # a supplementary group, as Kubernetes' fsGroup gives
SECRET_STAMP = "..2026_01_01_00_00_00.000000000"

STUB = r"""#!/bin/bash
# A stand-in for igwn-robot-get: one line per call (its PID and arguments) in $STUB_LOG,
# its environment in $STUB_LOG.env; --check prints a line and exits $STUB_CHECK_RC.
{ printf '%s' "$$"; printf ' [%s]' "$@"; printf '\n'; } >>"$STUB_LOG"
printf 'BEARER_TOKEN_FILE=%s\nXDG_RUNTIME_DIR=%s\n' "${BEARER_TOKEN_FILE-<unset>}" \
    "${XDG_RUNTIME_DIR-<unset>}" >"$STUB_LOG.env"
if [ "${1:-}" = --check ]; then
    if [ -n "${STUB_SLEEP:-}" ]; then
        trap 'kill "$!" 2>/dev/null; echo "stub: SIGTERM"; exit 143' TERM
        sleep "$STUB_SLEEP" &
        wait
    fi
    echo "ok    keytab  stub"
    exit "${STUB_CHECK_RC:-0}"
fi
exit "${STUB_RC:-0}"
"""


@pytest.fixture
def area():
    """A directory every test UID can traverse, with a copy of the entrypoint and the stub."""
    path = tempfile.mkdtemp(prefix="igwn-entrypoint-")
    os.chmod(path, 0o777)  # noqa: S103 -- test files only; the stub logs here as any UID
    shutil.copy(ENTRYPOINT, os.path.join(path, "entrypoint.sh"))
    with open(os.path.join(path, "stub-tool"), "w") as handle:
        handle.write(STUB)
    for name in ("entrypoint.sh", "stub-tool"):
        os.chmod(os.path.join(path, name), 0o755)  # noqa: S103 -- test scripts
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


def call(area, function, uid=None, gid=None, groups=(), **env):
    """Source the entrypoint and call one function: (its exit status, CHECK_MSG, output)."""
    script = ('source "$1"; rc=0; ' + function
              + ' || rc=$?; printf "MSG=%s\\n" "$CHECK_MSG"; exit "$rc"')
    proc = subprocess.run(as_user(["bash", "-c", script, "entrypoint-test",
                                   os.path.join(area, "entrypoint.sh")], uid, gid, groups),
                          env=base_env(area, **env), capture_output=True, text=True,
                          timeout=20, check=False)
    msg = [line[4:] for line in proc.stdout.splitlines() if line.startswith("MSG=")]
    return proc.returncode, (msg or [""])[-1], proc.stdout + proc.stderr


def run_main(area, args=(), uid=None, gid=None, groups=(), **env):
    """Run the entrypoint as a program (with the stub tool): (CompletedProcess, its PID)."""
    proc = subprocess.Popen(as_user([os.path.join(area, "entrypoint.sh")] + list(args),
                                    uid, gid, groups),
                            env=base_env(area, **env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=20)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), proc.pid


def stub_calls(area):
    """[(pid, [args...]), ...]: one entry per call of the stub tool."""
    path = os.path.join(area, "stub.log")
    if not os.path.exists(path):
        return []
    calls = []
    with open(path) as handle:
        for line in handle:
            pid, _, rest = line.rstrip("\n").partition(" ")
            args = rest[1:-1].split("] [") if rest else []
            calls.append((int(pid), args))
    return calls


def stub_env(area):
    with open(os.path.join(area, "stub.log.env")) as handle:
        return dict(line.rstrip("\n").split("=", 1) for line in handle)


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


def make_secret_volume(area, gid=FSGROUP):
    """A directory as kubelet mounts a Secret: timestamped dir, ..data, per-key symlink."""
    root = os.path.join(area, "secret")
    os.makedirs(os.path.join(root, SECRET_STAMP))
    make_keytab(os.path.join(root, SECRET_STAMP), 0, gid, 0o440)
    os.symlink(SECRET_STAMP, os.path.join(root, "..data"))
    os.symlink("..data/robot.keytab", os.path.join(root, "robot.keytab"))
    return root


def ready(area, uid=NOBODY):
    """A token directory and a keytab that pass the checks as UID."""
    make_tokens(area, uid, uid, 0o755)
    return make_keytab(area, uid, uid, 0o600)


# -- the script itself ------------------------------------------------------------------

def test_sourcing_runs_nothing(area):
    proc = subprocess.run(["bash", "-c", 'source "$1"; echo sourced', "t",
                           os.path.join(area, "entrypoint.sh")],
                          env=base_env(area), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "sourced\n"
    assert stub_calls(area) == []


def test_script_shape():
    with open(ENTRYPOINT) as handle:
        text = handle.read()
    lines = text.splitlines()
    assert "set -Eeuo pipefail" in lines
    assert lines[-3:] == ['if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then', '    main "$@"', "fi"]
    # main ends in the exec of the tool, with the arguments unchanged
    main = lines[lines.index("main() {"):]
    assert main[main.index("}") - 1] == '    exec "${TOOL[@]}" "$@"'
    assert os.access(ENTRYPOINT, os.X_OK)
    # every function has its one-line comment, naming it
    for i, line in enumerate(lines):
        if line.endswith("() {"):
            assert lines[i - 1].startswith("# " + line.split("(")[0]), line
    # thin: well under the 400 lines the option-parsing version had
    assert len(lines) < 200


def test_script_leaves_the_tools_options_and_rules_to_the_tool():
    """No argparse clone, no keytab mode rules, no host:port parsing, no --show probe,
    no network probe: the tool's options appear nowhere in the script."""
    with open(ENTRYPOINT) as handle:
        code = "\n".join(line for line in handle if not line.lstrip().startswith("#"))
    for word in ("--keytab", "--outfile", "--vaultserver", "--minsecs", "--show", "k | keytab",
                 '"-k"', "getopts", "/dev/tcp", "getent", "timeout ", "chmod 600", "8#006"):
        assert word not in code, word
    # the token file is the tool's: the entrypoint never sets BEARER_TOKEN_FILE
    assert not re.search(r"^\s*(export\s+)?BEARER_TOKEN_FILE=", code, re.M)


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck not installed")
def test_shellcheck_clean():
    proc = subprocess.run(["shellcheck", ENTRYPOINT], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout


# -- uid mapping (exit 20) --------------------------------------------------------------

def test_uid_root_refused_with_exact_fix(area):
    make_tokens(area)
    code, msg, _ = call(area, "check_uid_mapping")
    assert code == 20
    assert "running as root" in msg
    assert "--user $(id -u):$(id -g)" in msg
    assert "IGWN_ROBOT_GET_ALLOW_ROOT=1" in msg


def test_uid_root_allowed_on_purpose(area):
    make_tokens(area)
    code, msg, _ = call(area, "check_uid_mapping", IGWN_ROBOT_GET_ALLOW_ROOT=1)
    assert code == 0, msg
    assert "IGWN_ROBOT_GET_ALLOW_ROOT=1" in msg


def test_uid_default_user_on_foreign_directory(area):
    make_tokens(area, 1000, 1000)
    code, msg, _ = call(area, "check_uid_mapping", uid=NOBODY, IGWN_ROBOT_GET_DEFAULT_UID=NOBODY)
    assert code == 20
    assert "default user {}".format(NOBODY) in msg
    assert "belongs to 1000:1000" in msg
    assert "--user $(id -u):$(id -g)" in msg


def test_uid_default_user_on_foreign_directory_named_by_bearer_token_file(area):
    tokens = make_tokens(area, 1000, 1000)
    code, msg, _ = call(area, "check_uid_mapping", uid=NOBODY, IGWN_ROBOT_GET_DEFAULT_UID=NOBODY,
                        BEARER_TOKEN_FILE=os.path.join(tokens, "scitoken.use"))
    assert code == 20, msg


def test_uid_default_user_on_its_own_directory(area):
    make_tokens(area, NOBODY, NOBODY)
    code, msg, _ = call(area, "check_uid_mapping", uid=NOBODY, IGWN_ROBOT_GET_DEFAULT_UID=NOBODY)
    assert code == 0, msg


@pytest.mark.parametrize("mode, groups, expected", [
    (0o2775, [NOBODY, FSGROUP], 0),     # Kubernetes: root:fsGroup, group-writable, setgid
    (0o2755, [NOBODY, FSGROUP], 20),    # our group, but not writable by it
    (0o2775, [NOBODY], 20),             # group-writable, but not by one of our groups
])
def test_uid_default_user_on_shared_group_directory(area, mode, groups, expected):
    make_tokens(area, 0, FSGROUP, mode)
    code, msg, _ = call(area, "check_uid_mapping", uid=NOBODY, groups=groups,
                        IGWN_ROBOT_GET_DEFAULT_UID=NOBODY)
    assert code == expected, msg


def test_uid_explicit_user_without_passwd_entry(area):
    make_tokens(area, 1000, 1000, 0o777)
    code, msg, _ = call(area, "check_uid_mapping", uid=NOBODY, groups=[NOBODY, FSGROUP])
    assert code == 0, msg
    assert "running as {0}:{0} (groups {0},{1})".format(NOBODY, FSGROUP) in msg


@pytest.mark.parametrize("token_file", ["/dev/stdout", "/elsewhere/scitoken.use"])
def test_uid_default_user_writing_outside_the_token_volume(area, token_file):
    make_tokens(area, 1000, 1000)
    code, msg, _ = call(area, "check_uid_mapping", uid=NOBODY, IGWN_ROBOT_GET_DEFAULT_UID=NOBODY,
                        BEARER_TOKEN_FILE=token_file)
    assert code == 0, msg


def test_uid_default_user_without_token_directory(area):
    # nothing to compare with: the token_volume check reports the missing directory
    code, msg, _ = call(area, "check_uid_mapping", uid=NOBODY, IGWN_ROBOT_GET_DEFAULT_UID=NOBODY)
    assert code == 0, msg


# -- keytab mount (exit 3) -----------------------------------------------------------------

def test_keytab_unset_is_left_to_the_tool(area):
    code, msg, _ = call(area, "check_keytab_mount", KRB5_KTNAME=None)
    assert code == 0, msg
    assert "KRB5_KTNAME not set" in msg


@pytest.mark.parametrize("prefix", ["", "FILE:", "WRFILE:"])
def test_keytab_missing(area, prefix):
    path = os.path.join(area, "keytab")
    code, msg, _ = call(area, "check_keytab_mount", KRB5_KTNAME=prefix + path)
    assert code == 3
    assert msg.startswith("keytab {} (KRB5_KTNAME) not found".format(path)), msg
    assert "-v /path/to/robot.keytab:{}:ro".format(path) in msg


def test_keytab_dangling_symlink_is_missing(area):
    link = os.path.join(area, "link")
    os.symlink(os.path.join(area, "nope"), link)
    code, msg, _ = call(area, "check_keytab_mount", KRB5_KTNAME=link)
    assert code == 3
    assert "not found" in msg


def test_keytab_empty_directory_is_dockers_trap(area):
    path = os.path.join(area, "keytab")
    os.mkdir(path)
    code, msg, _ = call(area, "check_keytab_mount", KRB5_KTNAME=path)
    assert code == 3
    assert "empty directory" in msg
    assert "the host path given to -v did not exist, so docker created an empty directory" in msg
    assert "pass the keytab file: -v /path/to/robot.keytab:{}:ro".format(path) in msg


@pytest.mark.parametrize("uid, mode", [(None, 0o600), (None, 0o644), (NOBODY, 0o600),
                                       (NOBODY, 0o000)])
def test_keytab_file_is_left_to_the_tool(area, uid, mode):
    """Any file passes, whatever its mode or owner: those are the tool's rules."""
    path = make_keytab(area, 0, 0, mode)
    code, msg, _ = call(area, "check_keytab_mount", uid=uid, KRB5_KTNAME="FILE:" + path)
    assert code == 0, msg
    assert "tool" in msg


def test_keytab_secret_volume_directory_is_left_to_the_tool(area):
    path = make_secret_volume(area)
    code, msg, _ = call(area, "check_keytab_mount", uid=NOBODY, groups=[NOBODY, FSGROUP],
                        KRB5_KTNAME=path)
    assert code == 0, msg
    assert "directory" in msg


def test_keytab_directory_with_two_files_is_left_to_the_tool(area):
    path = os.path.join(area, "keytabs")
    os.mkdir(path)
    make_keytab(path, name="a.keytab")
    make_keytab(path, name="b.keytab")
    code, msg, _ = call(area, "check_keytab_mount", KRB5_KTNAME=path)
    assert code == 0, msg


def test_keytab_unreadable_directory_is_left_to_the_tool(area):
    path = os.path.join(area, "keytab")
    os.mkdir(path, 0o700)
    code, msg, _ = call(area, "check_keytab_mount", uid=NOBODY, KRB5_KTNAME=path)
    assert code == 0, msg


# -- token volume (exit 8) ---------------------------------------------------------------

def test_token_volume_missing(area):
    code, msg, _ = call(area, "check_token_volume", uid=NOBODY)
    assert code == 8
    assert "does not exist" in msg and "-v /path/to/tokens:" in msg
    assert "BEARER_TOKEN_FILE" in msg


def test_token_volume_not_a_directory(area):
    with open(os.path.join(area, "tokens"), "w"):
        pass
    code, msg, _ = call(area, "check_token_volume", uid=NOBODY)
    assert code == 8
    assert "not a directory" in msg


def test_token_volume_not_writable_shows_owner_mode_and_fix(area):
    make_tokens(area, 1000, 1000, 0o755)
    code, msg, _ = call(area, "check_token_volume", uid=NOBODY)
    assert code == 8
    assert "cannot create files" in msg and "Permission denied" in msg
    assert "owner 1000:1000, mode 0755" in msg
    assert "we are {0}:{0}".format(NOBODY) in msg
    assert "chown {0}:{0} /path/to/tokens".format(NOBODY) in msg
    assert "--user 1000:1000" in msg


def test_token_volume_writable_leaves_nothing(area):
    tokens = make_tokens(area, NOBODY, NOBODY, 0o755)
    code, msg, _ = call(area, "check_token_volume", uid=NOBODY)
    assert code == 0, msg
    assert os.listdir(tokens) == []
    assert "owner {0}:{0}, mode 0755".format(NOBODY) in msg


def test_token_volume_sticky_world_writable(area):
    tokens = make_tokens(area, 10001, 10001, 0o1777)  # the image's /tokens
    code, msg, _ = call(area, "check_token_volume", uid=NOBODY)
    assert code == 0, msg
    assert os.listdir(tokens) == []


def test_token_volume_kubernetes_fsgroup(area):
    tokens = make_tokens(area, 0, FSGROUP, 0o2775)
    code, msg, _ = call(area, "check_token_volume", uid=NOBODY, groups=[NOBODY, FSGROUP])
    assert code == 0, msg
    assert os.listdir(tokens) == []


def test_token_volume_not_a_volume(area):
    # the directory is on the container's own file system: the token would be lost
    make_tokens(area, NOBODY, NOBODY, 0o1777)
    code, msg, _ = call(area, "check_token_volume", uid=NOBODY, IGWN_ROBOT_GET_ROOT_DIR=area)
    assert code == 8
    assert "not a mounted volume" in msg and "lost" in msg and "-v /path/to/tokens:" in msg


def test_token_volume_follows_bearer_token_file_inside_it(area):
    tokens = make_tokens(area, 1000, 1000, 0o755)
    code, msg, _ = call(area, "check_token_volume", uid=NOBODY,
                        BEARER_TOKEN_FILE=os.path.join(tokens, "scitoken.use"))
    assert code == 8, msg


@pytest.mark.parametrize("token_file", ["/dev/stdout", "/data/scitoken.use"])
def test_token_volume_not_checked_for_a_file_elsewhere(area, token_file):
    # the token does not go to the volume: its directory is the tool's to check
    code, msg, _ = call(area, "check_token_volume", uid=NOBODY, BEARER_TOKEN_FILE=token_file)
    assert code == 0, msg
    assert "outside" in msg


def test_token_volume_read_only(area):
    tokens = make_tokens(area, NOBODY, NOBODY, 0o755)
    script = ('mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && '
              'exec setpriv --reuid {0} --regid {0} --clear-groups bash -c '
              '\'source "$2"; check_token_volume || rc=$?; '
              'echo "$CHECK_MSG"; exit "${{rc:-0}}"\' t "$1" "$2"'.format(NOBODY))
    proc = subprocess.run(["unshare", "--mount", "bash", "-c", script, "t", tokens,
                           os.path.join(area, "entrypoint.sh")],
                          env=base_env(area), capture_output=True, text=True, check=False)
    if "mount" in proc.stderr and proc.returncode not in (0, 8):
        pytest.skip("cannot make a read-only bind mount here: " + proc.stderr.strip())
    assert proc.returncode == 8, proc.stdout + proc.stderr
    assert "read-only" in proc.stdout and "no :ro" in proc.stdout


# -- main: run mode, with the stub tool --------------------------------------------------------

ODD_ARGS = ["--minsecs", "3600", "--audience", "https://my-service.example.org",
            "--scopes", "read:/data write:/x", "", "-k", "--", "check", "-h", "*", "$HOME"]


def test_main_execs_the_tool_with_the_arguments_unchanged(area):
    keytab = ready(area)
    proc, pid = run_main(area, ODD_ARGS, uid=NOBODY, KRB5_KTNAME=keytab, STUB_RC=0)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == proc.stderr == ""
    # exec: the tool is the entrypoint's own process (PID 1 in a container), called once
    assert stub_calls(area) == [(pid, ODD_ARGS)]


def test_main_leaves_the_token_file_to_the_tool(area):
    """The entrypoint sets no BEARER_TOKEN_FILE: the tool's WLCG default applies
    ($XDG_RUNTIME_DIR/bt_u<uid>, the image sets XDG_RUNTIME_DIR=/tokens)."""
    keytab = ready(area)
    proc, _ = run_main(area, [], uid=NOBODY, KRB5_KTNAME=keytab, XDG_RUNTIME_DIR="/tokens")
    assert proc.returncode == 0, proc.stderr
    assert stub_env(area) == {"BEARER_TOKEN_FILE": "<unset>", "XDG_RUNTIME_DIR": "/tokens"}
    token = os.path.join(area, "tokens", "scitoken.use")
    proc, _ = run_main(area, [], uid=NOBODY, KRB5_KTNAME=keytab, BEARER_TOKEN_FILE=token)
    assert proc.returncode == 0, proc.stderr
    assert stub_env(area)["BEARER_TOKEN_FILE"] == token


@pytest.mark.parametrize("rc", [0, 2, 5, 11])
def test_main_exit_code_is_the_tools(area, rc):
    keytab = ready(area)
    proc, _ = run_main(area, ["--bogus"], uid=NOBODY, KRB5_KTNAME=keytab, STUB_RC=rc)
    assert proc.returncode == rc
    assert len(stub_calls(area)) == 1


@pytest.mark.parametrize("case, code, words", [
    ("root", 20, "running as root"),
    ("no-keytab", 3, "not found"),
    ("no-tokens", 8, "does not exist"),
    ("default-user", 20, "default user"),
])
def test_main_refuses_with_one_line_and_its_code(area, case, code, words):
    env = {"KRB5_KTNAME": ready(area)}
    uid = NOBODY
    if case == "root":
        uid = None
    elif case == "no-keytab":
        env["KRB5_KTNAME"] = os.path.join(area, "nope")
    elif case == "no-tokens":
        os.rmdir(os.path.join(area, "tokens"))
    elif case == "default-user":
        make_tokens(area, 1000, 1000)
        env["IGWN_ROBOT_GET_DEFAULT_UID"] = NOBODY
    proc, _ = run_main(area, ["--minsecs", "60"], uid=uid, **env)
    assert proc.returncode == code
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("igwn-robot-get: error: ") and words in line, line
    assert stub_calls(area) == []


def test_main_first_failure_wins(area):
    # root, no keytab and no token directory: the uid mapping is reported
    proc, _ = run_main(area, [], KRB5_KTNAME=os.path.join(area, "nope"))
    assert proc.returncode == 20
    assert len(proc.stderr.splitlines()) == 1
    # not root: the keytab, before the token directory
    proc, _ = run_main(area, [], uid=NOBODY, KRB5_KTNAME=os.path.join(area, "nope"))
    assert proc.returncode == 3
    assert len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize("args", [["-h"], ["--help"], ["-V"], ["--version"],
                                  ["--version", "--bogus"]])
def test_main_help_and_version_skip_the_checks(area, args):
    # root, no keytab, no token directory: -h/--help/-V/--version need none of them
    proc, pid = run_main(area, args, KRB5_KTNAME=os.path.join(area, "nope"))
    assert proc.returncode == 0, proc.stderr
    assert stub_calls(area) == [(pid, args)]


def test_main_help_later_on_the_line_is_the_tools(area):
    # only $1 is looked at: a value such as "-h" after an option is the tool's business
    proc, _ = run_main(area, ["--audience", "-h"], KRB5_KTNAME=os.path.join(area, "nope"))
    assert proc.returncode == 20
    assert stub_calls(area) == []


# -- main: check mode ----------------------------------------------------------------------

def check_lines(proc):
    return [line.split()[:2] for line in proc.stdout.splitlines()]


def test_check_mode_all_ok_then_the_tools_check(area):
    keytab = ready(area)
    args = ["--minsecs", "3600", "--vaulttokenfile", "none", "a b"]
    proc, _ = run_main(area, ["check"] + args, uid=NOBODY, KRB5_KTNAME=keytab)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert check_lines(proc) == [["ok", "uid_mapping"], ["ok", "keytab_mount"],
                                 ["ok", "token_volume"], ["ok", "keytab"]]
    assert proc.stderr == ""
    # the tool's own --check, once, with the remaining options
    ((_, called),) = stub_calls(area)
    assert called == ["--check"] + args
    # the lines follow the tool's format: "ok    <name>  <message>"
    first = proc.stdout.splitlines()[0]
    assert first.startswith("ok    uid_mapping  running as {}".format(NOBODY)), first


def test_check_mode_reports_every_failure_and_exits_with_the_first(area):
    make_tokens(area, 1000, 1000, 0o755)
    proc, _ = run_main(area, ["check"], uid=NOBODY, KRB5_KTNAME=os.path.join(area, "nope"),
                       STUB_CHECK_RC=5)
    assert proc.returncode == 3
    assert check_lines(proc) == [["ok", "uid_mapping"], ["FAIL", "keytab_mount"],
                                 ["FAIL", "token_volume"], ["ok", "keytab"]]
    lines = proc.stdout.splitlines()
    assert lines[1].endswith("(exit 3)") and lines[2].endswith("(exit 8)")
    assert len(stub_calls(area)) == 1


def test_check_mode_the_tools_failure_is_the_exit_code(area):
    keytab = ready(area)
    proc, _ = run_main(area, ["check"], uid=NOBODY, KRB5_KTNAME=keytab, STUB_CHECK_RC=5)
    assert proc.returncode == 5
    assert [s for s, _ in check_lines(proc)] == ["ok"] * 4


def test_check_mode_as_root(area):
    make_tokens(area)
    proc, _ = run_main(area, ["check"], KRB5_KTNAME=None)
    assert proc.returncode == 20
    assert proc.stdout.splitlines()[0].startswith("FAIL  uid_mapping  running as root")
    allowed, _ = run_main(area, ["check"], KRB5_KTNAME=None, IGWN_ROBOT_GET_ALLOW_ROOT=1)
    assert allowed.returncode == 0, allowed.stdout


def test_check_mode_sigterm_reaches_the_tools_check(area):
    """docker stop / a pod deletion during the initContainer: bash (PID 1) passes SIGTERM
    on to the tool's --check and exits with its code at once."""
    keytab = ready(area)
    proc = subprocess.Popen(as_user([os.path.join(area, "entrypoint.sh"), "check"], NOBODY),
                            env=base_env(area, KRB5_KTNAME=keytab, STUB_SLEEP=30),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not stub_calls(area):
            assert time.monotonic() < deadline, "the tool's --check never started"
            time.sleep(0.05)
        time.sleep(0.2)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 143, out
    assert time.monotonic() - started < 1.0
    assert "stub: SIGTERM" in out
