"""The transport with real parts, end to end (issue 11, item 8).

The real tool runs as a process against the real MIT KDC, the Vault emulator
(whose Kerberos acceptor keeps a real replay cache), its standby listener and a
real CONNECT proxy: renewals through HTTPS_PROXY to a name only the proxy can
resolve, and NO_PROXY; lost replies (the request was processed, the answer
never came) recovered in the same run without a replayed authenticator; 307s
from a standby followed (a login re-authenticates for the new host), http://
and loops refused; Retry-After as an HTTP date; oversized and dripped bodies;
an endless 503; a silent KDC; and no credential cache written to disk.
"""

import base64
import os
import stat

import pytest

import testbed as tb

pytestmark = pytest.mark.timeout(120)

LOGIN = "/v1/auth/kerberos-igwn_robot/login"
KRB5_MECH = "1.2.840.113554.1.2.2"


# ------------------------------------------------------------------ helpers

def run(tool, *args, env=None, vault=None, verbose=True, timeout=90, extra_secrets=()):
    """Run the tool with this test's files (-o, --vaulttokenfile) at -vvv; the output
    is checked for secrets and tracebacks."""
    return tb.run_scanned(tool.bed, tool.args() + [str(a) for a in args],
                          env=tool.env() if env is None else env, timeout=timeout,
                          verbose=verbose, vault=vault, extra_secrets=extra_secrets)


def stderr_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.strip()]


def assert_one_line(proc, code):
    """Exit `code` with exactly one line on stderr, an error (run without -v)."""
    lines = stderr_lines(proc)
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("igwn-robot-get: error:"), lines[0]
    return lines[0]


def counters_delta(before, after):
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def renewed(tool, old=None):
    """The bearer token file holds a token the emulator issued (not ``old``)."""
    token = tool.read()
    assert token != old
    assert token in tool.bed.emu.secrets()
    assert isinstance(tb.jwt_claims(token).get("exp"), int)
    return token


def cold_vault_token(tool):
    """A normal cold run (real KDC, direct): leaves a cached vault token; the bearer
    file is then removed so the next run must ask Vault with that vault token."""
    proc = run(tool, verbose=False)
    assert proc.returncode == 0, proc.stderr
    assert os.path.isfile(tool.vt)
    os.unlink(tool.out)
    return proc


# ------------------------------------------------------------------ replay cache

def test_emulator_refuses_a_replayed_negotiate_token(testbed, monkeypatch):
    """The acceptor's replay cache is real: the same authenticator twice is refused."""
    import gssapi
    import requests
    monkeypatch.setenv("KRB5_CONFIG", testbed.krb5_conf)
    name = gssapi.Name(testbed.robot_principal, gssapi.NameType.kerberos_principal)
    creds = gssapi.Credentials(name=name, usage="initiate", store={
        "client_keytab": testbed.robot_keytab, "ccache": "MEMORY:transport-replay"})
    target = gssapi.Name("host@localhost", gssapi.NameType.hostbased_service)
    context = gssapi.SecurityContext(name=target, creds=creds, usage="initiate",
                                     mech=gssapi.OID.from_int_seq(KRB5_MECH))
    headers = {"Authorization": "Negotiate " + base64.b64encode(context.step()).decode(),
               "Content-Type": "application/x-www-form-urlencoded"}
    first = requests.post(testbed.vault_url + LOGIN, headers=headers,
                          verify=testbed.ca_file, timeout=10)
    second = requests.post(testbed.vault_url + LOGIN, headers=headers,
                           verify=testbed.ca_file, timeout=10)
    assert first.status_code == 200, first.text
    assert second.status_code == 401, second.status_code
    assert "Request is a replay" in " ".join(second.json().get("warnings") or []), second.text
    assert len(testbed.emu.kerberos_accepted()) == 1
    assert len(testbed.emu.replays()) == 1


# ------------------------------------------------------------------ proxy

@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy"])
def test_renewal_through_proxy_cold_then_cached(tool, testbed, variable):
    env = tool.env(**{variable: testbed.proxy_url})
    cold = run(tool, env=env, vault=testbed.proxied_vault_url)
    assert cold.returncode == 0, cold.stderr
    renewed(tool)
    target = tb.PROXIED_HOST + ":" + str(testbed.vault_port)
    connects = testbed.proxy_connects()
    assert connects and all(c["target"] == target and c["status"] == 200 for c in connects), \
        connects
    accepted = testbed.emu.kerberos_accepted()
    assert [a["target"] for a in accepted] == ["host/vault.proxied.test@" + tb.REALM]
    assert "via proxy " + testbed.proxy_url in cold.stderr, cold.stderr[-3000:]

    os.unlink(tool.out)
    testbed.proxy_reset()
    before = testbed.emu.counters()
    cached = run(tool, env=env, vault=testbed.proxied_vault_url)
    assert cached.returncode == 0, cached.stderr
    renewed(tool)
    delta = counters_delta(before, testbed.emu.counters())
    assert "kerberos_login" not in delta and delta.get("creds_read") == 1, delta
    assert testbed.proxy_connects(), "the cached-token run went through the proxy too"


def test_proxied_name_without_proxy_is_unreachable(tool, testbed):
    env = tool.env(HTTPS_PROXY=None, https_proxy=None)
    proc = run(tool, env=env, vault=testbed.proxied_vault_url, verbose=False)
    line = assert_one_line(proc, 5)
    assert tb.PROXIED_HOST in line, line
    assert testbed.emu.total() == 0
    assert testbed.proxy_connects() == []


def test_no_proxy_sends_localhost_direct(tool, testbed):
    env = tool.env(HTTPS_PROXY=testbed.proxy_url, NO_PROXY="example.org,localhost")
    proc = run(tool, env=env)
    assert proc.returncode == 0, proc.stderr
    renewed(tool)
    assert testbed.proxy_connects() == []
    assert "via proxy" not in proc.stderr


def test_verbose_names_the_proxy_never_its_password(tool, testbed):
    testbed.proxy_reset(require_auth=True)
    password = testbed.proxy.password
    env = tool.env(HTTPS_PROXY=testbed.proxy_url_with_credentials)
    proc = run(tool, env=env, vault=testbed.proxied_vault_url, extra_secrets=[password])
    assert proc.returncode == 0, proc.stderr
    renewed(tool)
    connects = testbed.proxy_connects()
    assert connects and all(c["auth_ok"] and c["status"] == 200 for c in connects), connects
    output = proc.stdout + proc.stderr
    assert "via proxy " + testbed.proxy_url in output, output[-3000:]
    assert password not in output
    assert testbed.proxy.username + ":" not in output
    assert "@127.0.0.1:{}".format(testbed.proxy.port) not in output


# ------------------------------------------------------------------ lost replies

@pytest.mark.parametrize("endpoint", ["kerberos_login", "token_create", "creds_read",
                                      "sts_read"])
def test_lost_reply_is_recovered_in_the_same_run(tool, testbed, endpoint):
    """The request was processed (login accepted and in the replay cache, token
    minted, bearer token read) and the reply never came: the same run recovers,
    with a new authenticator for a new login."""
    testbed.emu.fault(endpoint, drop_reply=True)
    args = ["--scopes", "read:/frames"] if endpoint == "sts_read" else []
    proc = run(tool, *args)
    assert proc.returncode == 0, proc.stderr
    renewed(tool)
    dropped = testbed.emu.dropped_replies()
    assert [(d["endpoint"], d["status"]) for d in dropped] == [(endpoint, 200)], dropped
    assert testbed.emu.replays() == [], "a login was re-sent with a used authenticator"
    assert testbed.emu.kerberos_refused() == []
    counters = testbed.emu.counters()
    assert counters[endpoint] >= 2, counters
    if endpoint == "kerberos_login":
        assert len(testbed.emu.kerberos_accepted()) == 2
        assert len(testbed.emu.state()["logins"]) == 2


@pytest.mark.parametrize("status", [500, 503])
def test_login_retried_after_a_processed_failure_uses_a_new_authenticator(tool, testbed, status):
    """Vault checked the ticket (the authenticator is in its replay cache), then
    failed (e.g. its LDAP lookup): the retried login must carry a new one."""
    testbed.emu.fault("kerberos_login", status=status, processed=True)
    proc = run(tool)
    assert proc.returncode == 0, proc.stderr
    renewed(tool)
    assert testbed.emu.replays() == [], "the retried login re-sent a used authenticator"
    assert len(testbed.emu.kerberos_accepted()) == 2


# ------------------------------------------------------------------ standby (307)

@pytest.mark.parametrize("status", [307, 308])
def test_standby_redirects_every_call_cold(tool, testbed, status):
    testbed.emu.standby(status=status)
    proc = run(tool, vault=testbed.standby_localhost_url)
    assert proc.returncode == 0, proc.stderr
    renewed(tool)
    paths = [r["path"].split("?")[0] for r in testbed.emu.standby_requests()]
    assert LOGIN in paths and any("/creds/" in p for p in paths), paths
    assert testbed.emu.replays() == []


def test_standby_redirects_with_cached_vault_token(tool, testbed):
    cold_vault_token(tool)
    before = testbed.emu.counters()
    proc = run(tool, vault=testbed.standby_localhost_url)
    assert proc.returncode == 0, proc.stderr
    renewed(tool)
    delta = counters_delta(before, testbed.emu.counters())
    assert delta == {"creds_read": 1}, "the vault token was not kept across the 307: %s" % delta
    reads = [r for r in testbed.emu.standby_requests() if "/creds/" in r["path"]]
    assert reads and all(r["vault_token"] for r in reads), reads


def test_login_through_standby_reauthenticates_for_the_active_host(tool, testbed):
    """Standby https://127.0.0.1:P2 -> active https://localhost:P1: the login sent to
    the active carries a ticket for host/localhost (the active refuses any other)."""
    testbed.emu.config(check_service_principal=True)
    proc = run(tool, vault=testbed.standby_url)
    assert proc.returncode == 0, proc.stderr
    renewed(tool)
    assert testbed.emu.kerberos_refused() == []
    accepted = testbed.emu.kerberos_accepted()
    assert [(a["host"], a["target"]) for a in accepted] == \
        [("localhost", "host/localhost@" + tb.REALM)], accepted
    logins = [r for r in testbed.emu.standby_requests() if r["path"] == LOGIN]
    assert logins and logins[0]["host"] == "127.0.0.1", logins


def test_redirect_to_http_is_refused(tool, testbed):
    testbed.emu.standby("http")
    proc = run(tool, vault=testbed.standby_localhost_url, verbose=False)
    assert_one_line(proc, 6)
    assert testbed.emu.total() == 0, "the tool followed a redirect to http://"
    assert testbed.emu.standby_requests()


def test_redirect_loop_is_refused(tool, testbed):
    testbed.emu.standby("loop")
    proc = run(tool, vault=testbed.standby_localhost_url, verbose=False)
    assert_one_line(proc, 6)
    assert 4 <= len(testbed.emu.standby_requests()) < 20, testbed.emu.standby_requests()
    assert testbed.emu.total() == 0


# ------------------------------------------------------------------ Retry-After date

def test_retry_after_as_http_date_is_honoured(tool, testbed):
    testbed.emu.fault("creds_read", status=503, retry_after_date=4)
    proc = run(tool)
    assert proc.returncode == 0, proc.stderr
    renewed(tool)
    assert testbed.emu.counters()["creds_read"] == 2
    assert 3 <= proc.elapsed < 20, proc.elapsed


# ------------------------------------------------------------------ bad bodies

@pytest.mark.parametrize("kind,size", [("length", None), ("chunked", 4 << 20),
                                       ("close", 4 << 20)])
def test_oversized_reply_is_refused_old_token_kept(tool, testbed, jwt, kind, size):
    """A reply over 1 MiB (Content-Length of 50 MB, or more bytes chunked or until the
    connection closes; valid JSON padded with whitespace): exit 5, one line."""
    old = tool.seed(jwt.expiring(60))
    testbed.emu.fault("creds_read", oversized=kind, size=size, count=5)
    proc = run(tool, "--timeout", "10", verbose=False, extra_secrets=[old], timeout=40)
    assert_one_line(proc, 5)
    assert tool.read() == old
    assert proc.elapsed < 30, proc.elapsed


@pytest.mark.parametrize("headers_too", [False, True])
def test_slow_drip_is_cut_at_timeout(tool, testbed, jwt, headers_too):
    """A 200 whose body (or status line, headers and body) comes one byte every 0.5 s,
    far longer than --timeout: cut at the deadline, exit 5."""
    old = tool.seed(jwt.expiring(60))
    testbed.emu.fault("creds_read", drip=0.5, drip_headers=headers_too, count=10)
    proc = run(tool, "--timeout", "5", verbose=False, extra_secrets=[old], timeout=40)
    assert_one_line(proc, 5)
    assert tool.read() == old
    assert 3 <= proc.elapsed < 15, proc.elapsed


def test_endless_503_is_always_exit_6(tool, testbed, jwt):
    old = tool.seed(jwt.expiring(60))
    testbed.emu.fault("creds_read", status=503, count=1000)
    codes = []
    for _ in range(3):
        proc = run(tool, "--timeout", "5", verbose=False, extra_secrets=[old])
        assert_one_line(proc, 6)
        assert proc.elapsed < 15, proc.elapsed
        codes.append(proc.returncode)
    assert codes == [6, 6, 6]
    assert tool.read() == old


# ------------------------------------------------------------------ silent KDC

def test_silent_kdc_is_bounded_by_kdc_timeout(tool, testbed, jwt):
    old = tool.seed(jwt.expiring(60))
    env = testbed.silent_kdc_env(HOME=tool.home)
    testbed.silent_kdc_contacts()  # drain what earlier tests left
    proc = run(tool, "--kdc-timeout", "3", env=env, verbose=False, extra_secrets=[old])
    line = assert_one_line(proc, 4)
    assert "127.0.0.1:{}".format(testbed.silent_kdc_port) in line and "KDC" in line, line
    assert proc.elapsed < 12, proc.elapsed
    contacts = testbed.silent_kdc_contacts()
    assert contacts["udp"] + contacts["tcp"] >= 1, contacts
    assert tool.read() == old


def test_silent_kdc_not_contacted_with_cached_vault_token(tool, testbed):
    cold_vault_token(tool)
    env = testbed.silent_kdc_env(HOME=tool.home)
    testbed.silent_kdc_contacts()
    before = testbed.emu.counters()
    proc = run(tool, "--kdc-timeout", "3", env=env)
    assert proc.returncode == 0, proc.stderr
    renewed(tool)
    assert testbed.silent_kdc_contacts() == {"udp": 0, "tcp": 0}
    assert counters_delta(before, testbed.emu.counters()) == {"creds_read": 1}


# ------------------------------------------------------------------ no ccache on disk

def _files(roots, top_level_only=()):
    """{path: (mtime_ns, size)} of the regular files under roots (recursively) and
    directly in top_level_only."""
    found = {}

    def add(path):
        try:
            info = os.lstat(path)
        except OSError:
            return
        if stat.S_ISREG(info.st_mode):
            found[path] = (info.st_mtime_ns, info.st_size)

    for root in roots:
        for directory, _, names in os.walk(root):
            for name in names:
                add(os.path.join(directory, name))
    for directory in top_level_only:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            add(os.path.join(directory, name))
    return found


def _looks_like_ccache(path):
    if os.path.basename(path).startswith(("krb5cc", "tkt")):
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(2) in (b"\x05\x03", b"\x05\x04")  # FILE ccache v3, v4
    except OSError:
        return False


def test_no_credential_cache_written_anywhere(tool, testbed):
    tmpdir = os.path.join(tool.dir, "tmp")
    os.makedirs(tmpdir)
    roots = [tool.dir, testbed.workdir]
    before = _files(roots, ["/tmp"])
    env = tool.env(KRB5CCNAME=None, TMPDIR=tmpdir)
    proc = run(tool, env=env)
    assert proc.returncode == 0, proc.stderr
    renewed(tool)
    assert testbed.kdc_requests()["AS"] >= 1
    after = _files(roots, ["/tmp"])
    changed = [p for p, sig in after.items() if before.get(p) != sig]
    ccaches = [p for p in changed if _looks_like_ccache(p)]
    assert ccaches == [], ccaches
    assert not any(p.startswith(tmpdir + os.sep) for p in after), "files left in TMPDIR"


# ------------------------------------------------------------------ redaction

@pytest.mark.parametrize("log_format", ["text", "json"])
def test_negotiate_token_echoed_bare_by_the_server_is_redacted(tool, testbed, log_format):
    # run_scanned fails on any secret the emulator saw, the echoed token included
    testbed.emu.fault("kerberos_login", echo_authorization=True, count=20)
    proc = run(tool, "--log-format", log_format, "--timeout", "5")
    assert proc.returncode == 6, proc.stderr
    echoed = [s for s in testbed.emu.secrets() if s.startswith("YII")]
    assert echoed, "the emulator echoed no Negotiate token"
    assert "<redacted>" in proc.stderr
