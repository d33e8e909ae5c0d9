"""End to end: the real igwn_robot_get.py process against a real KDC and the Vault emulator.

Issue 2 item 8: first fetch, a fresh rerun costing nothing, the cached vault
token path costing one request, --audience/--scopes through sts, and each
failure class with its exit code, its one-line message and the old token kept.
Every run is also checked for leaked tokens and tracebacks on its output. The last
section checks that the emulator itself speaks the protocol (real GSS-API acceptor).
"""

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest
import requests

from testbed import jwt_claims

PREFIX = "igwn-robot-get: error: "
WARNING = "igwn-robot-get: warning: "
VAULT_CALLS = ("kerberos_login", "token_create", "lookup_self", "creds_read", "sts_read",
               "creds_write", "auth_url", "poll")


# ---------------------------------------------------------------- helpers

def run(tool, *args, **kw):
    """Run the tool; assert its output has no traceback and no token."""
    result = tool.run(*args, **kw)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert not tool.leaks(output), "token leaked in output:\n" + output
    return result


def assert_failure(result, code, *words):
    """Exit code, one error line last on stderr, and the words it must contain.

    Retry warnings ("igwn-robot-get: warning: ...") may come before the error line.
    """
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, (result.returncode, result.stderr)
    assert lines and lines[-1].startswith(PREFIX), result.stderr
    others = [line for line in lines[:-1] if not line.startswith(WARNING)]
    assert not others, "expected one error line on stderr, got:\n" + result.stderr
    for word in words:
        assert word.lower() in lines[-1].lower(), (word, lines[-1])


def calls(testbed):
    """Vault requests by endpoint, only those made."""
    return {k: v for k, v in testbed.emu.counters().items() if v}


def diff(after, before):
    return {k: after.get(k, 0) - before.get(k, 0)
            for k in set(after) | set(before) if after.get(k, 0) != before.get(k, 0)}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def stale(tool, jwt):
    """A token that is still valid but has less than --minsecs left."""
    return tool.seed(jwt.expiring(120))


@pytest.fixture
def cached(tool, testbed, jwt):
    """A first fetch (which caches a vault token), then a stale token on disk."""
    assert run(tool).returncode == 0
    return tool.seed(jwt.expiring(120))


def kept(tool, token):
    """The old token is still there, unchanged and private."""
    return tool.read() == token and tool.mode() == 0o600


# ---------------------------------------------------------------- success paths

def test_first_fetch(tool, testbed):
    kdc = testbed.kdc_requests()
    result = run(tool)
    assert result.returncode == 0, result.stderr
    assert tool.mode() == 0o600
    claims = jwt_claims(tool.read())
    assert claims["sub"] == "robot/ci.ligo.org" and claims["exp"] > time.time() + 3600
    assert calls(testbed) == {"kerberos_login": 1, "token_create": 1, "creds_read": 1}
    assert testbed.emu.state()["connections"] == 1, "one HTTPS connection per run"
    assert tool.mode(tool.vt) == 0o600
    assert tool.read(tool.vt) in testbed.emu.secrets()
    assert testbed.kdc_requests()["AS"] > kdc["AS"]
    assert not os.path.exists(testbed.default_ccache), "Kerberos ticket left on disk"


def test_rerun_with_fresh_token_makes_no_requests(tool, testbed):
    assert run(tool).returncode == 0
    token, mtime = tool.read(), os.stat(tool.out).st_mtime_ns
    testbed.emu.reset()
    kdc = testbed.kdc_requests()
    result = run(tool, "-v")
    assert result.returncode == 0, result.stderr
    assert testbed.emu.total() == 0
    assert testbed.kdc_requests() == kdc
    assert tool.read() == token and os.stat(tool.out).st_mtime_ns == mtime


def test_cached_vault_token_costs_one_request(tool, testbed, cached):
    before, kdc = testbed.emu.counters(), testbed.kdc_requests()
    result = run(tool)
    assert result.returncode == 0, result.stderr
    assert diff(testbed.emu.counters(), before) == {"creds_read": 1}
    assert testbed.kdc_requests() == kdc
    assert tool.read() != cached and jwt_claims(tool.read())["exp"] > time.time() + 3600


def test_short_lived_vault_token_is_not_reused_past_its_life(tool, testbed, jwt):
    """Vault grants a 1-hour login token (no exchange needed): the next run must not
    count on it for the usual 7 days, and logs in again instead of a refused read."""
    testbed.emu.config(vault_token_ttl=3600)
    assert run(tool).returncode == 0
    assert calls(testbed) == {"kerberos_login": 1, "creds_read": 1}
    assert tool.read(tool.vt) in testbed.emu.secrets()
    tool.seed(jwt.expiring())
    before = testbed.emu.counters()
    result = run(tool, "-v")
    assert result.returncode == 0, result.stderr
    made = diff(testbed.emu.counters(), before)
    assert made == {"kerberos_login": 1, "creds_read": 1}, made
    assert "under --vaulttokenminttl" in result.stderr


def test_no_vault_token_file_means_no_exchange(tool, testbed):
    result = run(tool, "--vaulttokenfile", "none")
    assert result.returncode == 0, result.stderr
    assert calls(testbed) == {"kerberos_login": 1, "creds_read": 1}
    assert not os.path.exists(tool.vt)


def test_cached_vault_token_refused_falls_back_to_kerberos(tool, testbed, cached):
    old_vt = tool.read(tool.vt)
    testbed.emu.fault("creds_read", status=403, body={"errors": ["permission denied"]})
    before = testbed.emu.counters()
    result = run(tool)
    assert result.returncode == 0, result.stderr
    made = diff(testbed.emu.counters(), before)
    assert made.get("kerberos_login") == 1 and made.get("creds_read") == 2, made
    assert tool.read() != cached
    assert tool.read(tool.vt) != old_vt


def test_silent_kdc_with_cached_vault_token_succeeds(tool, testbed, cached):
    started = time.monotonic()
    result = run(tool, env=testbed.silent_kdc_env(HOME=tool.home))
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 5
    assert tool.read() != cached


def test_audience_and_scopes_use_sts(tool, testbed):
    result = run(tool, "--audience", "https://a.example.org", "--audience",
                 "https://b.example.org", "--scopes", "read:/frames,gwdatafind.read")
    assert result.returncode == 0, result.stderr
    made = calls(testbed)
    assert made.get("sts_read") == 1 and "creds_read" not in made, made
    claims = jwt_claims(tool.read())
    assert sorted(claims["aud"]) == ["https://a.example.org", "https://b.example.org"]
    assert claims["scope"].split() == ["read:/frames", "gwdatafind.read"]


def test_single_audience(tool, testbed):
    result = run(tool, "--audience", "https://datafind.example.org")
    assert result.returncode == 0, result.stderr
    aud = jwt_claims(tool.read())["aud"]
    assert aud in ("https://datafind.example.org", ["https://datafind.example.org"])


def test_principal_without_realm_gets_default_realm(tool, testbed):
    result = run(tool, "robot/ci.ligo.org")
    assert result.returncode == 0, result.stderr
    logins = testbed.emu.state()["logins"]
    assert logins == [{"method": "kerberos", "user": "robot/ci.ligo.org", "role": "robot"}]


def test_cafile_wins_over_requests_environment(tool, testbed):
    env = tool.env(REQUESTS_CA_BUNDLE="/etc/ssl/certs/ca-certificates.crt",
                   CURL_CA_BUNDLE="/etc/ssl/certs/ca-certificates.crt")
    result = run(tool, env=env)
    assert result.returncode == 0, result.stderr


def test_most_verbose_output_has_no_tokens(tool, testbed, jwt):
    assert run(tool, "-vvv").returncode == 0
    tool.seed(jwt.expiring(120))
    result = run(tool, "-vvv")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip(), "-vvv printed nothing"


# ---------------------------------------------------------------- keytab problems (3)

@pytest.fixture
def keytab_copy(testbed, tmp_path):
    path = tmp_path / "copy.keytab"
    shutil.copy(testbed.robot_keytab, path)
    os.chmod(path, 0o600)
    return str(path)


def test_missing_keytab(tool, testbed, stale):
    result = run(tool, env=tool.env(KRB5_KTNAME=os.path.join(tool.dir, "absent.keytab")))
    assert_failure(result, 3, "absent.keytab")
    assert kept(tool, stale) and testbed.emu.total() == 0


def test_keytab_is_a_directory(tool, testbed, stale, tmp_path):
    result = run(tool, "-k", str(tmp_path))
    assert_failure(result, 3, "directory")
    assert kept(tool, stale) and testbed.emu.total() == 0


def test_keytab_readable_by_others(tool, testbed, stale, keytab_copy):
    os.chmod(keytab_copy, 0o644)
    result = run(tool, "-k", keytab_copy)
    assert_failure(result, 3, keytab_copy)
    assert kept(tool, stale) and testbed.emu.total() == 0


# ---------------------------------------------------------------- Kerberos failure (4)

def test_silent_kdc_fails_in_bounded_time(tool, testbed, stale):
    env = testbed.silent_kdc_env(HOME=tool.home)
    started = time.monotonic()
    result = run(tool, env=env, timeout=90)
    elapsed = time.monotonic() - started
    assert_failure(result, 4, f"127.0.0.1:{testbed.silent_kdc_port}")
    assert elapsed < 20, f"silent KDC took {elapsed:.1f} s"
    assert kept(tool, stale) and testbed.emu.total() == 0


# ---------------------------------------------------------------- Vault unreachable (5)

def test_vault_unreachable(tool, testbed, stale):
    started = time.monotonic()
    result = run(tool, "-a", f"https://localhost:{free_port()}", "--timeout", "5")
    assert_failure(result, 5)
    assert time.monotonic() - started < 20
    assert kept(tool, stale)


def test_vault_certificate_not_trusted(tool, testbed, stale, tmp_path):
    other_ca = tmp_path / "other-ca.pem"
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", other_ca)
    result = run(tool, "--cafile", str(other_ca), "--timeout", "5")
    assert_failure(result, 5)
    assert kept(tool, stale)


# ---------------------------------------------------------------- Vault refused (6)

def test_vault_refuses_login(tool, testbed, stale):
    testbed.emu.fault("kerberos_login", status=403, count=10,
                      body={"errors": ["permission denied"]})
    result = run(tool)
    assert_failure(result, 6)
    assert kept(tool, stale)
    assert not os.path.exists(tool.vt)


def test_vault_refuses_read(tool, testbed, stale):
    testbed.emu.fault("creds_read", status=403, count=10, body={"errors": ["permission denied"]})
    result = run(tool)
    assert_failure(result, 6)
    assert kept(tool, stale)
    assert not os.path.exists(tool.vt), "vault token saved although it produced no token"


# ---------------------------------------------------------------- first use needs a human (7)

def test_first_use_without_terminal(tool, testbed, jwt):
    token = tool.seed(jwt.expiring(120))
    result = run(tool, env=tool.env(KRB5_KTNAME=testbed.other_keytab))
    assert_failure(result, 7)
    assert "terminal" in result.stderr.lower() or "interactive" in result.stderr.lower()
    made = calls(testbed)
    assert "auth_url" not in made and "poll" not in made, made
    assert kept(tool, token)


def test_dead_refresh_token_without_terminal(tool, testbed, stale):
    testbed.emu.credentials("robot/ci.ligo.org:robot", "dead")
    result = run(tool)
    assert_failure(result, 7)
    assert "auth_url" not in calls(testbed)
    assert kept(tool, stale)


# ---------------------------------------------------------------- output not writable (8)

def test_output_directory_missing(tool, testbed):
    kdc = testbed.kdc_requests()
    missing = os.path.join(tool.dir, "no-such-dir", "bt")
    started = time.monotonic()
    result = run(tool, "-o", missing)
    assert_failure(result, 8, "no-such-dir")
    assert time.monotonic() - started < 5
    assert testbed.emu.total() == 0 and testbed.kdc_requests() == kdc


@pytest.fixture
def nobody_area(testbed):
    """A directory owned by nobody, with a keytab copy nobody can read."""
    area = tempfile.mkdtemp(prefix="igwn-nobody-")
    try:
        os.chmod(area, 0o755)  # noqa: S103 -- nobody must traverse it
        keytab = os.path.join(area, "robot.keytab")
        shutil.copy(testbed.robot_keytab, keytab)
        for path in (area, keytab):
            os.chown(path, 65534, 65534)
        os.chmod(keytab, 0o600)
        yield area
    finally:
        shutil.rmtree(area, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the tool as nobody")
def test_output_directory_not_writable_for_user(tool, testbed, nobody_area):
    # The checkout may live where nobody cannot read it (a clone in /root, mode 0700):
    # run a copy of the tool, as a copy-in host would, with an interpreter nobody can
    # run that has the tool's packages (python_for skips, saying why, if there is none).
    from userlib import as_user, python_for, tool_copy
    python, extra_env = python_for(65534, 65534)
    copy = tool_copy(nobody_area)
    locked = os.path.join(nobody_area, "root-owned")
    os.mkdir(locked, 0o755)
    env = testbed.tool_env(HOME=nobody_area,
                           KRB5_KTNAME=os.path.join(nobody_area, "robot.keytab"), **extra_env)
    result = subprocess.run(
        as_user(65534, 65534) + [python, copy] + testbed.tool_args() + [
            "-o", os.path.join(locked, "bt"), "--vaulttokenfile",
            os.path.join(nobody_area, "vt")],
        env=env, cwd=nobody_area, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    assert_failure(result, 8, locked)
    assert testbed.emu.total() == 0


# ---------------------------------------------------------------- unusable token (9)

@pytest.mark.parametrize("kind", ["no_exp", "not_jwt", "expired", "not_json",
                                  "no_access_token"])
def test_unusable_token_from_vault(tool, testbed, stale, kind):
    testbed.emu.config(token_kind=kind)
    result = run(tool)
    assert_failure(result, 9)
    assert kept(tool, stale)
    assert not os.path.exists(tool.vt)


# ---------------------------------------------------------------- the test bed itself

def test_leak_scan_sees_issued_tokens(tool, testbed):
    assert run(tool).returncode == 0
    assert tool.leaks("log line with " + tool.read())
    assert tool.leaks("vault token " + tool.read(tool.vt))
    assert not tool.leaks("nothing secret here")


def test_kdc_log_counts_requests(testbed, tool):
    before = testbed.kdc_requests()
    assert run(tool).returncode == 0
    after = testbed.kdc_requests()
    assert after["AS"] > before["AS"] and after["TGS"] > before["TGS"]


def test_emulator_reset_between_tests_and_modes(tool, testbed):
    assert testbed.emu.total() == 0
    assert stat.S_IMODE(os.stat(testbed.robot_keytab).st_mode) == 0o600


# ---------------------------------------------------------------- the emulator speaks the protocol

INITIATOR = """
import base64, sys, gssapi
principal, keytab, mech = sys.argv[1:4]
creds = gssapi.Credentials(usage="initiate", store={"client_keytab": keytab, "ccache": "MEMORY:t"},
                           name=gssapi.Name(principal, gssapi.NameType.kerberos_principal))
target = gssapi.Name("host@localhost", gssapi.NameType.hostbased_service)
mech = gssapi.MechType.kerberos if mech == "krb5" else gssapi.OID.from_int_seq("1.3.6.1.5.5.2")
ctx = gssapi.SecurityContext(name=target, creds=creds, usage="initiate", mech=mech)
print(base64.b64encode(ctx.step()).decode())
"""


def negotiate_token(testbed, mech, principal=None, keytab=None):
    done = subprocess.run([sys.executable, "-c", INITIATOR, principal or testbed.robot_principal,
                           keytab or testbed.robot_keytab, mech],
                          env=testbed.tool_env(), capture_output=True, text=True, check=True)
    return done.stdout.strip()


def vault(testbed, method, path, token=None, **kw):
    session = requests.Session()
    session.trust_env = False
    headers = kw.pop("headers", {})
    if token:
        headers["X-Vault-Token"] = token
    return session.request(method, testbed.vault_url + path, headers=headers,
                           verify=testbed.ca_file, timeout=10, **kw)


def login(testbed, mech="krb5", role="robot", **kw):
    header = {"Authorization": "Negotiate " + negotiate_token(testbed, mech, **kw)}
    return vault(testbed, "POST", f"/v1/auth/kerberos-igwn_{role}/login", headers=header)


@pytest.mark.parametrize("mech", ["krb5", "spnego"])
def test_emulator_accepts_kerberos_tickets(testbed, mech):
    answer = login(testbed, mech)
    assert answer.status_code == 200, answer.text
    auth = answer.json()["auth"]
    assert auth["metadata"]["user"] == "robot/ci.ligo.org"
    assert auth["policies"] == ["kerberos-igwn_robot", "tokenops"]
    assert auth["renewable"] is False and auth["lease_duration"] > 0


@pytest.mark.parametrize("header", [None, "Negotiate", "Negotiate Z2FyYmFnZQ==", "Basic eDp5"])
def test_emulator_rejects_anything_else(testbed, header):
    headers = {"Authorization": header} if header else {}
    answer = vault(testbed, "POST", "/v1/auth/kerberos-igwn_robot/login", headers=headers)
    assert answer.status_code == 401 and answer.json()["errors"]


def test_emulator_creds_semantics(testbed):
    vt = login(testbed).json()["auth"]["client_token"]
    path = "/v1/secret/oauth/creds/igwn/robot/ci.ligo.org:robot"
    first = vault(testbed, "GET", path, vt, params={"minimum_seconds": 3600}).json()["data"]
    again = vault(testbed, "GET", path, vt, params={"minimum_seconds": 3600}).json()["data"]
    assert first["access_token"] == again["access_token"] and first["server"] == "igwn"
    too_long = vault(testbed, "GET", path, vt, params={"minimum_seconds": 10800})
    assert too_long.status_code == 400 and too_long.json()["errors"] == ["token expired"]
    foreign = vault(testbed, "GET", "/v1/secret/oauth/creds/igwn/other/ci.ligo.org:other", vt)
    assert foreign.status_code == 403
    assert vault(testbed, "GET", path, "hvs.invalid").status_code == 403
    testbed.emu.credentials("robot/ci.ligo.org:robot", "missing")
    missing = vault(testbed, "GET", path, vt)
    assert missing.status_code == 404 and missing.json() == {"errors": []}
