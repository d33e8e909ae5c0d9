"""A hostile local user against a robot's default paths (issue 12 items 1, 3 and 7).

The real tool runs as a process against the test bed's KDC and Vault emulator, as
root and, where the owner matters, as a robot uid with no passwd entry (setpriv).
Another local user (nobody) plants things where the robot looks: a long-lived fake
token at the token path; a symlink, a FIFO, /dev/zero, a character device or a
directory at the token path, the vault token cache, the status and metrics files;
modules in the working directory and in PYTHONPATH; hostile option values; tokens
whose only "exp" is nested, or not a finite number; Vault error text with terminal
control characters; a device-flow URL that is not https; a credkey directory that is
not ours.  Nothing planted is trusted, nothing hangs (every run has a 20 s limit),
no planted code runs, and a refusal comes before any keytab, KDC or Vault work.

A run as another uid uses a copy of igwn_robot_get.py in a directory that uid can
read and an interpreter it can run (``python_for``), as a copy-in host would: the
checkout may live in a 0700 directory such as /root (tests/userlib.py).
"""

import json
import os
import shlex
import stat
import time

import pytest

import testbed as tb
from userlib import (PLANTER, PREFIX, ROBOT_UID, User, assert_failure, assert_one_line, diff,
                     make_kind, mode_of, raw_jwt, read, same_kind, seed, traffic)

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(os.geteuid() != 0,
                                 reason="plants files as other uids: needs root")]

@pytest.fixture
def users(testbed):
    """users("root") or users("uid"): a User, made once per test and removed after it."""
    made = {}

    def get(who="root"):
        if who not in made:
            made[who] = User(testbed, 0 if who == "root" else ROBOT_UID)
        return made[who]

    yield get
    for user in made.values():
        user.close()


# ---------------------------------------------------------------- a planted long-lived token

@pytest.mark.parametrize("how", ["-o", "XDG_RUNTIME_DIR", "BEARER_TOKEN_FILE"])
@pytest.mark.parametrize("who", ["root", "uid"])
def test_planted_long_lived_token_is_not_trusted(testbed, users, who, how):
    """Another user creates bt_u<uid> first in a shared directory, with a token good for
    30 days: the fast path must not call it fresh, the full run refuses it (exit 8,
    naming the file) before any Kerberos or Vault work and leaves no lock file, and
    --show (the image's HEALTHCHECK) does not report healthy."""
    user = users(who)
    shared = user.sticky_dir()
    target = os.path.join(shared, "bt_u{}".format(user.uid))
    fake = seed(target, tb.make_jwt({"sub": "planted"}, lifetime=30 * 86400), mode=0o644,
                owner=PLANTER)
    if how == "-o":
        where, env = ["-o", target], user.env()
    elif how == "XDG_RUNTIME_DIR":
        where, env = [], user.env(XDG_RUNTIME_DIR=shared)
    else:
        where, env = [], user.env(BEARER_TOKEN_FILE=target)
    before = traffic(testbed)
    result = user.run(["-v", "--vaulttokenfile", user.vt] + where, env=env,
                      extra_secrets=[fake])
    assert "is fresh" not in result.stderr, "the planted token was trusted:\n" + result.stderr
    assert_failure(result, 8, target)
    assert traffic(testbed) == before, "refused only after Kerberos or Vault work"
    assert sorted(os.listdir(shared)) == [os.path.basename(target)], "lock file left behind"
    assert read(target) == fake and os.stat(target).st_uid == PLANTER
    show = user.run(["--show"] + where, env=env, extra_secrets=[fake])
    assert show.returncode != 0, "--show reports a planted token healthy:\n" + show.stdout
    assert traffic(testbed) == before


GROUP = 4310            # a group the robot shares a token directory with
MEMBER = 4311           # another member of that group


def test_show_does_not_vouch_for_a_token_the_run_refuses(testbed, users):
    """A token directory shared with a group (2775 root:group, as an fsGroup volume,
    no sticky bit): another member replaces the robot's token with a long-lived fake of
    its own.  The robot's runs refuse it (exit 8); its health check (--show, the image's
    HEALTHCHECK, run as the robot) must not report healthy either."""
    robot = User(testbed, ROBOT_UID, ROBOT_UID, [GROUP])
    try:
        tokens = robot.mkdir("tokens", 0o2775, owner=0, group=GROUP)
        target = os.path.join(tokens, "bt")
        first = robot.run(["-o", target, "--vaulttokenfile", robot.vt, "--mode", "0640"])
        assert first.returncode == 0, first.stderr
        fake = tb.make_jwt({"sub": "planted"}, lifetime=30 * 86400)
        planted = os.path.join(tokens, ".planted")
        seed(planted, fake, mode=0o640)
        os.chown(planted, MEMBER, GROUP)
        os.rename(planted, target)          # what MEMBER may do in a 2775 directory
        before = traffic(testbed)
        result = robot.run(["-o", target, "--vaulttokenfile", robot.vt, "--mode", "0640"],
                           extra_secrets=[fake])
        assert_failure(result, 8, target)
        show = robot.run(["--show", "-o", target], extra_secrets=[fake])
        assert show.returncode != 0, (
            "--show run as the robot reports healthy a token its own runs refuse:\n"
            + show.stdout)
        assert traffic(testbed) == before
    finally:
        robot.close()


# ---------------------------------------------------------------- non-regular things at the target

KINDS = ["symlink", "fifo", "devzero", "chardev", "directory"]


@pytest.mark.parametrize("where", ["shared", "private", "shared-as-uid"])
@pytest.mark.parametrize("kind", KINDS)
def test_non_regular_target_refused_before_any_work(testbed, users, jwt, kind, where):
    """A symlink (even to a good token of ours), a FIFO, /dev/zero, a character device or
    a directory at the token path: exit 8 naming it, at once (a FIFO must not block
    the run), with no KDC or Vault traffic and no lock file; it is left as it was."""
    user = users("uid" if where.endswith("as-uid") else "root")
    good = seed(os.path.join(user.private, "good"), jwt.good())
    user.own(os.path.join(user.private, "good"))
    directory = user.sticky_dir() if where.startswith("shared") else user.mkdir("own", 0o700)
    target = make_kind(kind, os.path.join(directory, "bt_u{}".format(user.uid)),
                       os.path.join(user.private, "good"))
    os.lchown(target, *((PLANTER, PLANTER) if where.startswith("shared")
                        else (user.uid, user.gid)))
    before = traffic(testbed)
    result = user.run(["-v", "-o", target, "--vaulttokenfile", user.vt], extra_secrets=[good])
    assert "is fresh" not in result.stderr, result.stderr
    assert_failure(result, 8, target)
    assert traffic(testbed) == before, "refused only after Kerberos or Vault work"
    assert os.listdir(directory) == [os.path.basename(target)], os.listdir(directory)
    assert same_kind(kind, target), "the planted {} was replaced".format(kind)
    assert read(os.path.join(user.private, "good")) == good
    show = user.run(["--show", "-o", target], extra_secrets=[good])
    assert show.returncode != 0, show.stdout + show.stderr


# ---------------------------------------------------------------- the vault token cache

@pytest.mark.parametrize("kind", ["fifo-planted", "fifo-own", "foreign-owner", "mode-0644"])
@pytest.mark.parametrize("who", ["root", "uid"])
def test_untrusted_vault_token_cache_is_ignored(testbed, users, jwt, who, kind):
    """A FIFO (planted in a shared directory, or our own), a cache file owned by another
    uid, or one readable by others: a warning naming it, then a Kerberos login; the run
    neither blocks nor uses the file's token."""
    user = users(who)
    first = user.run(user.args())
    assert first.returncode == 0, first.stderr
    vault_token = read(user.vt)
    if kind == "fifo-planted":
        path = os.path.join(user.sticky_dir(), "vt_u{}".format(user.uid))
        os.mkfifo(path, 0o600)
        os.lchown(path, PLANTER, PLANTER)
    elif kind == "fifo-own":
        path = os.path.join(user.private, "vt-fifo")
        os.mkfifo(path, 0o600)
        user.own(path)
    elif kind == "foreign-owner":
        path = os.path.join(user.private, "vt-foreign")
        seed(path, vault_token, owner=PLANTER)
    else:
        path = os.path.join(user.private, "vt-0644")
        seed(path, vault_token, mode=0o644)
        user.own(path)
    seed(user.out, jwt.expired())
    user.own(user.out)
    before, kdc = traffic(testbed)
    result = user.run(["-o", user.out, "--vaulttokenfile", path])
    assert result.returncode == 0, result.stderr
    made = diff(testbed.emu.counters(), before)
    assert made.get("kerberos_login") == 1, "the untrusted cache was used: {}".format(made)
    assert testbed.kdc_requests()["AS"] > kdc["AS"]
    assert result.warnings(path), "no warning about " + path + ":\n" + result.stderr
    assert tb.jwt_claims(read(user.out))["exp"] > time.time() + 3600


# ---------------------------------------------------------------- status and metrics files

@pytest.mark.parametrize("outcome", ["fresh", "keytab"])
@pytest.mark.parametrize("kind", ["fifo", "devzero", "foreign"])
@pytest.mark.parametrize("option", ["--status-file", "--metrics-file"])
def test_untrusted_status_and_metrics_files_left_alone(testbed, users, jwt, option, kind,
                                                        outcome):
    """A FIFO, a link to /dev/zero, or another user's file planted at --status-file or
    --metrics-file: no hang, no MemoryError, no traceback; the run's own exit code; the
    planted thing left alone, with a warning naming it."""
    user = users("root")
    shared = user.sticky_dir()
    path = os.path.join(shared, "igwn_robot_get.prom" if "metrics" in option else "status")
    if kind == "foreign":
        seed(path, "{}", mode=0o644, owner=PLANTER)
    else:
        make_kind(kind, path)
        os.lchown(path, PLANTER, PLANTER)
    if outcome == "fresh":
        token, env, code = seed(user.out, jwt.good()), user.env(), 0
    else:
        token = seed(user.out, jwt.expired())
        env, code = user.env(KRB5_KTNAME=os.path.join(user.private, "absent.keytab")), 3
    result = user.run(user.args(option, path), env=env, extra_secrets=[token])
    assert result.returncode == code, result.stderr
    assert same_kind("regular" if kind == "foreign" else kind, path)
    if kind == "foreign":
        assert read(path) == "{}" and os.stat(path).st_uid == PLANTER
    assert result.warnings(path), "no warning about " + path + ":\n" + result.stderr


# ---------------------------------------------------------------- our own file, bad mode

@pytest.mark.parametrize("mode_option", [None, "0640"])
def test_group_writable_token_of_ours_is_renewed_and_replaced(testbed, users, jwt,
                                                              mode_option):
    """kubelet's fsGroup chown made our 3-hour token 0660: anyone in the group could have
    written it, so it is not trusted; it is renewed and replaced with the requested mode
    (0600 by default), exit 0, with a warning."""
    user = users("root")
    old = seed(user.out, jwt.good(), mode=0o660)
    extra = ["--mode", mode_option] if mode_option else []
    before = testbed.emu.counters()
    result = user.run(["-v"] + user.args(*extra), extra_secrets=[old])
    assert result.returncode == 0, result.stderr
    assert "is fresh" not in result.stderr, result.stderr
    assert diff(testbed.emu.counters(), before).get("creds_read") == 1
    new = read(user.out)
    assert new != old and tb.jwt_claims(new)["exp"] > time.time() + 3600
    assert mode_of(user.out) == (0o640 if mode_option else 0o600)
    assert result.warnings(user.out), result.stderr


# ---------------------------------------------------------------- what exp is, which option wins

def test_nested_exp_only_is_renewed_not_kept(testbed, users):
    """A payload whose only exp is nested ({"act": {"exp": ...}}) has no exp: --show says
    so (exit 11) and a run renews it."""
    user = users("root")
    far = int(time.time()) + 30 * 86400
    old = seed(user.out, raw_jwt(json.dumps({"sub": "robot", "act": {"sub": "x", "exp": far}})))
    show = user.run(["--show", "-o", user.out], extra_secrets=[old])
    assert show.returncode == 11, show.stdout + show.stderr
    result = user.run(["-v"] + user.args(), extra_secrets=[old])
    assert result.returncode == 0, result.stderr
    assert "is fresh" not in result.stderr, result.stderr
    new = read(user.out)
    assert new != old and "exp" in tb.jwt_claims(new)


def test_repeated_outfile_last_wins(testbed, users, jwt):
    """-o A --outfile B: argparse's last one wins, so B (expired) is renewed and the fresh
    A is not even looked at as the answer."""
    user = users("root")
    first, second = os.path.join(user.private, "a"), os.path.join(user.private, "b")
    fresh, expired = seed(first, jwt.good()), seed(second, jwt.expired())
    result = user.run(["-v", "-o", first, "--outfile", second, "--vaulttokenfile", user.vt],
                      extra_secrets=[fresh, expired])
    assert result.returncode == 0, result.stderr
    assert read(first) == fresh
    assert read(second) != expired and tb.jwt_claims(read(second))["exp"] > time.time() + 3600


def test_repeated_minsecs_last_wins(testbed, users, jwt):
    """-m 60 --minsecs 99999 asks for 99999 s (a 2-hour token is renewed);
    --minsecs 99999 -m 60 asks for 60 s (it is fresh: nothing happens)."""
    user = users("root")
    testbed.emu.config(token_lifetime=200000)
    old = seed(user.out, jwt.good(7200))
    result = user.run(["-v"] + user.args("-m", "60", "--minsecs", "99999"), extra_secrets=[old])
    assert result.returncode == 0, result.stderr
    assert read(user.out) != old
    assert tb.jwt_claims(read(user.out))["exp"] > time.time() + 99999
    old = seed(user.out, jwt.good(7200))
    before = traffic(testbed)
    result = user.run(["-v"] + user.args("--minsecs", "99999", "-m", "60"), extra_secrets=[old])
    assert result.returncode == 0, result.stderr
    assert read(user.out) == old and traffic(testbed) == before


@pytest.mark.parametrize("args", [["--timeout", "banana"], ["--timeout=banana"],
                                  ["--kdc-timeout", "soon"], ["--jitter", "x"]],
                         ids=["timeout", "timeout=", "kdc-timeout", "jitter"])
def test_bad_option_value_is_usage_error_even_when_fresh(testbed, users, jwt, args):
    user = users("root")
    token = seed(user.out, jwt.good())
    before = traffic(testbed)
    result = user.run(user.args(*args), extra_secrets=[token])
    assert_one_line(result, 2)
    assert traffic(testbed) == before and read(user.out) == token


# ---------------------------------------------------------------- planted modules

PLANTED_MODULES = ("json", "requests", "gssapi", "base64", "binascii", "sitecustomize")
MARKER_MODULE = """import os
open(os.path.join({markers!r}, "ran-" + __name__), "w").close()
"""


@pytest.mark.parametrize("where", ["cwd", "PYTHONPATH"])
@pytest.mark.parametrize("who", ["root", "uid"])
def test_planted_modules_never_run(testbed, users, jwt, who, where):
    """json.py, requests.py, gssapi.py, base64.py ... planted by another user in a shared
    working directory, or in a PYTHONPATH directory while the tool itself is started
    isolated (python -I, as a careful cron line does): a cold renewal imports none of
    them (the Kerberos step starts no interpreter that reads either)."""
    user = users(who)
    if where == "PYTHONPATH" and user.extra_env.get("PYTHONPATH"):
        pytest.skip("this uid's interpreter needs PYTHONPATH for the tool's packages")
    planted = user.sticky_dir("planted")
    markers = user.sticky_dir("markers")
    for name in PLANTED_MODULES:
        path = os.path.join(planted, name + ".py")
        with open(path, "w") as handle:
            handle.write(MARKER_MODULE.format(markers=markers))
        os.chmod(path, 0o644)
        os.chown(path, PLANTER, PLANTER)
    seed(user.out, jwt.expired())
    user.own(user.out)
    if where == "cwd":
        result = user.run(user.args(), cwd=planted)
    else:
        result = user.run(user.args(), env=user.env(PYTHONPATH=planted), isolated=True)
    assert sorted(os.listdir(markers)) == [], "planted modules ran as the robot"
    assert result.returncode == 0, result.stderr
    assert tb.jwt_claims(read(user.out))["exp"] > time.time() + 3600


# ---------------------------------------------------------------- hostile option values

HOSTILE_VALUES = [
    ("a-xff", ["-a", os.fsdecode(b"\xff")]),
    ("a-dotdot", ["-a", "a..b"]),
    ("a-bracket", ["-a", "[::1"]),
    ("minsecs-300-digits", ["--minsecs", "9" * 300]),
    ("minsecs-centuries", ["--minsecs", "36500d"]),
    ("timeout-1e400", ["--timeout", "1e400"]),
    ("timeout-400-digits", ["--timeout", "1" + "0" * 400]),
    ("kdc-timeout-300-digits", ["--kdc-timeout", "9" * 300]),
]


@pytest.mark.parametrize("token", ["absent", "fresh"])
@pytest.mark.parametrize("args", [v for _, v in HOSTILE_VALUES],
                         ids=[n for n, _ in HOSTILE_VALUES])
def test_hostile_option_values_are_one_line_usage_errors(testbed, users, jwt, args, token):
    user = users("root")
    secrets = [seed(user.out, jwt.good())] if token == "fresh" else []
    vault = [] if args[0] == "-a" else ["-a", testbed.vault_url]
    before = traffic(testbed)
    result = user.run(["--cafile", testbed.ca_file] + vault + user.args(*args), bare=True,
                      extra_secrets=secrets)
    assert_one_line(result, 2)
    assert traffic(testbed) == before


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_show_non_finite_exp_exits_11(testbed, users, literal, as_json):
    """Python's json reads NaN, Infinity and 1e400 (inf) as numbers: none is an expiry."""
    user = users("root")
    token = seed(user.out, raw_jwt('{"sub": "x", "exp": %s}' % literal))
    result = user.run(["--show", "-o", user.out] + (["--json"] if as_json else []),
                      extra_secrets=[token])
    assert result.returncode == 11, result.stdout + result.stderr
    assert result.lines and result.lines[-1].startswith(PREFIX), result.stderr
    if as_json:
        def refuse(name):
            raise ValueError("non-standard JSON constant " + name)
        try:
            doc, problem = json.loads(result.stdout, parse_constant=refuse), None
        except ValueError as exc:
            doc, problem = None, str(exc)
        assert problem is None, "--show --json printed what a JSON parser refuses ({}): {}" \
            .format(problem, result.stdout.strip())
        assert isinstance(doc, dict), result.stdout


# ---------------------------------------------------------------- Vault's text on our terminal

CONTROL = {"errors": ["\x1b[31mpermission\x1b[0m denied\r\x1b]0;pwned\x07 by \x08Vault"],
           "warnings": ["\x1b[2J\rscreen cleared\x00"]}


@pytest.mark.parametrize("verbose", [[], ["-vvv"]], ids=["default", "vvv"])
@pytest.mark.parametrize("endpoint", ["kerberos_login", "creds_read"])
def test_vault_error_text_loses_control_characters(testbed, users, jwt, endpoint, verbose):
    user = users("root")
    seed(user.out, jwt.expired())
    testbed.emu.fault(endpoint, status=400, body=CONTROL)
    result = user.run(verbose + user.args())
    assert result.returncode == 6, result.stderr
    for char in (b"\x1b", b"\r", b"\x07", b"\x08", b"\x00"):
        assert char not in result.raw_stderr, (char, result.raw_stderr[-2000:])
    assert "denied" in result.lines[-1], result.lines[-1]


# ---------------------------------------------------------------- the device flow

OPENER = """#!/bin/sh
printf '%s\\n' "$1" >> {marker}
"""


def opener(user):
    marker = os.path.join(user.private, "opened")
    script = os.path.join(user.private, "opener.sh")
    with open(script, "w") as handle:
        handle.write(OPENER.format(marker=shlex.quote(marker)))
    os.chmod(script, 0o700)
    return script, marker


def device_flow(user, args, env, timeout=60):
    """Run the tool on a pseudo-terminal to the end; (exit code, output)."""
    pexpect = pytest.importorskip("pexpect")
    cmd = user.command(args)
    child = pexpect.spawn(cmd[0], cmd[1:], env=env, encoding="utf-8", timeout=timeout,
                          dimensions=(40, 200))
    try:
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    code = child.exitstatus if child.exitstatus is not None else -child.signalstatus
    tb.scan_output(user.bed, child.before or "")
    return code, child.before or ""


def envelope(data):
    return {"request_id": "planted", "lease_id": "", "renewable": False, "lease_duration": 0,
            "data": data, "auth": None, "warnings": None, "wrap_info": None, "mount_type": ""}


def test_device_flow_https_url_is_opened(testbed, users):
    """The control for the test below: an https URL does reach --web-open-command."""
    user = users("root")
    script, marker = opener(user)
    testbed.emu.config(device={"approve_after_polls": 1, "poll_interval": "1"})
    code, out = device_flow(user, user.args("--web-open-command", script),
                            user.env(KRB5_KTNAME=testbed.other_keytab))
    assert code == 0, out
    deadline = time.monotonic() + 5
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert read(marker).startswith("https://cilogon.org/device/"), out


@pytest.mark.parametrize("url", ["http://cilogon.org/device/?user_code=ABCD-EFGH",
                                 "file:///etc/passwd",
                                 "javascript:alert(1)"])
def test_device_flow_url_not_https_is_not_opened(testbed, users, url):
    """Vault (or whoever answers for it) hands out a login URL that is not https: it is
    never given to the browser command."""
    user = users("root")
    script, marker = opener(user)
    testbed.emu.fault("auth_url", status=200, body=envelope(
        {"state": "st_planted", "auth_url": url, "user_code": "ABCD-EFGH",
         "poll_interval": "1"}))
    code, out = device_flow(user, user.args("--web-open-command", script, "--oidc-timeout",
                                            "5"),
                            user.env(KRB5_KTNAME=testbed.other_keytab))
    assert testbed.emu.counters()["auth_url"] == 1, "the planted answer was not asked for"
    time.sleep(1.0)
    assert not os.path.exists(marker), "a non-https URL was opened: " + read(marker)
    assert code != 0, out


# ---------------------------------------------------------------- the credkey directory

def credkey_dir(user, unsafe):
    config = os.path.join(user.home, ".config")
    os.mkdir(config, 0o700)
    path = os.path.join(config, "htgettoken")
    os.mkdir(path, 0o700)
    if unsafe == "foreign-dir":
        os.chown(path, PLANTER, PLANTER)
        os.chmod(path, 0o755)  # noqa: S103 -- another user's directory, readable by us
    elif unsafe == "world-writable-dir":
        os.chmod(path, 0o777)  # noqa: S103 -- the unsafe case under test
    return path


def snapshot(directory):
    out = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        info = os.lstat(path)
        out[name] = (info.st_uid, stat.S_IMODE(info.st_mode), read(path))
    return out


@pytest.mark.parametrize("unsafe", ["foreign-dir", "world-writable-dir"])
def test_unsafe_credkey_directory_not_written_after_oidc(testbed, users, unsafe):
    """After the first-use OIDC login the tool keeps htgettoken's credkey file in step,
    but not in a ~/.config/htgettoken that is another user's or writable by others."""
    user = users("root")
    directory = credkey_dir(user, unsafe)
    before = snapshot(directory)
    testbed.emu.config(device={"approve_after_polls": 1, "poll_interval": "1"})
    code, out = device_flow(user, user.args("--no-browser"),
                            user.env(KRB5_KTNAME=testbed.other_keytab))
    assert code == 0, out
    assert snapshot(directory) == before, "the credkey was written into " + directory


@pytest.mark.parametrize("unsafe", ["foreign-dir", "world-writable-dir", "foreign-file"])
def test_unsafe_credkey_file_not_read(testbed, users, jwt, unsafe):
    """A credkey file naming someone else, where we would not have put it: not used (the
    robot's own credkey is read from Vault, exit 0)."""
    user = users("root")
    directory = credkey_dir(user, "world-writable-dir" if unsafe == "world-writable-dir"
                            else "none")
    path = os.path.join(directory, "credkey-igwn-robot")
    seed(path, "someone/else", mode=0o644, owner=PLANTER if unsafe != "world-writable-dir"
         else None)
    if unsafe == "foreign-dir":
        os.chown(directory, PLANTER, PLANTER)
        os.chmod(directory, 0o755)  # noqa: S103 -- another user's directory
    seed(user.out, jwt.expired())
    result = user.run(user.args())
    assert result.returncode == 0, result.stderr
    assert tb.jwt_claims(read(user.out))["sub"] == tb.ROBOT
