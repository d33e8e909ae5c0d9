"""Reliability and security, end to end (issue #6).

The real tool runs as a process against the real MIT KDC and the Vault
emulator: readers never see a missing or partial token during renewals;
overlapping runs serialise on the lock and Vault sees one renewal; transient
faults are retried within the --timeout budget and "no" answers are not; a
silent KDC costs nothing when a cached vault token works and a bounded time
when it does not; unusable tokens are refused with the old token kept; files
are 0600 whatever the umask; symlinks at the token path and foreign files in
sticky shared directories are refused; and no run at -vvv prints a secret.
"""

import os
import re
import stat
import subprocess
import sys
import threading
import time

import pytest

import testbed as tb

pytestmark = pytest.mark.timeout(180)

FIGURES = {"leak_scans": 0, "fault_runs": 0, "faults_injected": 0, "faults_survived": 0}


# ------------------------------------------------------------------ helpers

def run_tool(bed, args, env=None, timeout=90, umask=None, verbose=True, vault=None,
             extra_secrets=()):
    """Run the tool as a process; check its output for secrets and tracebacks."""
    return tb.run_scanned(bed, args, env, timeout, umask, verbose, vault, extra_secrets,
                          FIGURES)


def scan_output(bed, text, extra_secrets=()):
    tb.scan_output(bed, text, extra_secrets, FIGURES)


def error_lines(text):
    return [line for line in text.splitlines() if line.startswith("igwn-robot-get: error:")]


def read_bytes(path):
    with open(path, "rb") as handle:
        return handle.read()


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def file_secrets(*paths):
    return [read_bytes(p).decode().strip() for p in paths if os.path.isfile(p)]


def valid_token_bytes(data):
    """True when data is a whole token file: a JWT with exp and a newline."""
    if not data.endswith(b"\n"):
        return False
    try:
        claims = tb.jwt_claims(data.decode())
    except Exception:  # any decode failure is a partial read
        return False
    return isinstance(claims, dict) and isinstance(claims.get("exp"), int)


class Reader(threading.Thread):
    """Reads a token file in a tight loop and counts what it sees."""

    def __init__(self, path):
        threading.Thread.__init__(self, daemon=True)
        self.path = path
        self.stop = threading.Event()
        self.stats = {"reads": 0, "missing": 0, "empty": 0, "partial": 0}
        self.seen = set()

    def run(self):
        while not self.stop.is_set():
            try:
                with open(self.path, "rb") as handle:
                    data = handle.read()
            except FileNotFoundError:
                self.stats["missing"] += 1
                continue
            self.stats["reads"] += 1
            if not data:
                self.stats["empty"] += 1
            elif not valid_token_bytes(data):
                self.stats["partial"] += 1
            else:
                self.seen.add(data)

    def finish(self):
        self.stop.set()
        self.join(10)
        return self.stats


def delta(before, after):
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)
            if after.get(k, 0) - before.get(k, 0)}


@pytest.fixture
def files(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    return {"bt": str(tmp_path / "bt"), "vt": str(tmp_path / "vt"), "home": str(home),
            "dir": str(tmp_path)}


def paths_args(files):
    return ["-o", files["bt"], "--vaulttokenfile", files["vt"]]


def env_for(bed, files, **extra):
    return bed.tool_env(HOME=files["home"], **extra)


def seed(path, token, mode_bits=0o600):
    with open(path, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, mode_bits)
    return token


closed_port = tb.closed_port


@pytest.fixture(scope="module", autouse=True)
def report_figures():
    yield
    print("\nreliability figures: %s" % FIGURES)


# ------------------------------------------------------------------ readers never miss

def test_reader_never_misses_during_renewals(testbed, files, record_property):
    env = env_for(testbed, files)
    first = run_tool(testbed, paths_args(files), env=env, verbose=False)
    assert first.returncode == 0, first.stderr
    reader = Reader(files["bt"])
    reader.start()
    renewals = runs = 0
    try:
        # Each run asks for more than the token on disk has left (so it renews) and
        # the emulator's new lifetime is one second more than that (so Vault can
        # serve it): a renewal per run, with no sleeping.
        for i in range(1, 23):
            lifetime = 10800 + i
            testbed.emu.config(token_lifetime=lifetime)
            before = read_bytes(files["bt"])
            proc = run_tool(testbed, paths_args(files) + ["-m", str(lifetime - 1)], env=env,
                            verbose=(i % 5 == 0))
            runs += 1
            assert proc.returncode == 0, proc.stderr
            if read_bytes(files["bt"]) != before:
                renewals += 1
    finally:
        stats = reader.finish()
    figures = dict(stats, renewals=renewals, runs=runs, distinct_tokens_seen=len(reader.seen))
    FIGURES["reader"] = figures
    print("\nreader test: %s" % figures)
    record_property("reader_figures", str(figures))
    assert renewals >= 20, figures
    assert stats["missing"] == 0 and stats["empty"] == 0 and stats["partial"] == 0, figures
    assert stats["reads"] >= 100, figures
    assert len(reader.seen) >= 2, figures
    counters = testbed.emu.counters()
    assert counters["creds_read"] == runs + 1, counters


# ------------------------------------------------------------------ overlapping runs

def test_ten_concurrent_runs_one_renewal(testbed, files, record_property):
    old = seed(files["bt"], tb.make_jwt(lifetime=60))
    env = env_for(testbed, files)
    reader = Reader(files["bt"])
    reader.start()
    cmd = [sys.executable, tb.TOOL] + testbed.tool_args() + ["-vv"] + paths_args(files)
    try:
        procs = [subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(10)]
        results = [(p.wait(90), p.communicate()) for p in procs]
    finally:
        stats = reader.finish()
    for code, (out, err) in results:
        assert code == 0, err
        scan_output(testbed, out + err, [old])
    counters = testbed.emu.counters()
    figures = dict(stats, runs=len(results), creds_read=counters["creds_read"],
                   kerberos_login=counters["kerberos_login"])
    FIGURES["concurrent"] = figures
    print("\nconcurrent runs: %s" % figures)
    record_property("concurrent_figures", str(figures))
    assert counters["creds_read"] == 1, counters
    assert counters["kerberos_login"] <= 1, counters
    assert stats["missing"] == 0 and stats["empty"] == 0 and stats["partial"] == 0, stats
    new = read_bytes(files["bt"])
    assert valid_token_bytes(new) and new.decode().strip() != old
    assert mode(files["bt"] + ".lock") == 0o600
    # one run renewed; the nine others found the token fresh (most of them after
    # waiting for the lock, any late starter before taking it)
    assert sum("stored a new token" in err for _, (_, err) in results) == 1
    assert sum("is fresh" in err for _, (_, err) in results) == 9
    FIGURES["concurrent"]["waited_then_fresh"] = sum(
        "another run renewed it" in err for _, (_, err) in results)


# ------------------------------------------------------------------ transient faults

def fault_run(bed, files, faults, args=(), **kw):
    """Run the tool with faults configured; count the faults the emulator served."""
    bed.emu.config(faults=faults)
    proc = run_tool(bed, paths_args(files) + list(args), env=env_for(bed, files), **kw)
    pending = sum(int(f.get("count", 1)) for f in bed.emu.state()["faults_pending"])
    FIGURES["faults_injected"] += sum(int(f.get("count", 1)) for f in faults) - pending
    FIGURES["fault_runs"] += 1
    return proc


def test_cold_start_503_on_first_request_still_gets_token(testbed, files):
    proc = fault_run(testbed, files, [{"endpoint": "kerberos_login", "status": 503, "count": 1}])
    assert proc.returncode == 0, proc.stderr
    FIGURES["faults_survived"] += 1
    assert valid_token_bytes(read_bytes(files["bt"]))
    assert testbed.emu.counters()["kerberos_login"] == 2


def test_429_retry_after_is_honoured(testbed, files):
    proc = fault_run(testbed, files, [{"endpoint": "creds_read", "status": 429, "count": 1,
                                       "retry_after": 2}])
    assert proc.returncode == 0, proc.stderr
    FIGURES["faults_survived"] += 1
    assert proc.elapsed >= 2.0, proc.elapsed
    assert testbed.emu.counters()["creds_read"] == 2
    assert "429" in proc.stderr


@pytest.mark.parametrize("status", [500, 502, 504])
def test_5xx_retried(testbed, files, status):
    proc = fault_run(testbed, files, [{"endpoint": "creds_read", "status": status, "count": 1}])
    assert proc.returncode == 0, proc.stderr
    FIGURES["faults_survived"] += 1
    assert testbed.emu.counters()["creds_read"] == 2
    assert valid_token_bytes(read_bytes(files["bt"]))


@pytest.mark.parametrize("endpoint", ["kerberos_login", "creds_read"])
def test_connection_close_retried(testbed, files, endpoint):
    proc = fault_run(testbed, files, [{"endpoint": endpoint, "close": True, "count": 1}])
    assert proc.returncode == 0, proc.stderr
    FIGURES["faults_survived"] += 1
    assert testbed.emu.counters()[endpoint] == 2
    assert valid_token_bytes(read_bytes(files["bt"]))


def test_several_faults_in_a_row(testbed, files):
    faults = [{"endpoint": "kerberos_login", "status": 503, "count": 1},
              {"endpoint": "kerberos_login", "close": True, "count": 1},
              {"endpoint": "token_create", "status": 502, "count": 1},
              {"endpoint": "creds_read", "status": 500, "count": 1}]
    proc = fault_run(testbed, files, faults, ["--timeout", "30"])
    assert proc.returncode == 0, proc.stderr
    FIGURES["faults_survived"] += 4
    counters = testbed.emu.counters()
    assert counters["kerberos_login"] == 3 and counters["token_create"] == 2
    assert counters["creds_read"] == 2


@pytest.mark.parametrize("endpoint,status,code", [
    ("kerberos_login", 403, 6),
    ("kerberos_login", 400, 6),
    ("token_create", 400, 6),
    ("creds_read", 400, 6),
])
def test_no_is_not_retried(testbed, files, endpoint, status, code):
    old = seed(files["bt"], tb.make_jwt(lifetime=60))
    before = read_bytes(files["bt"])
    body = {"errors": ["server \"igwn\" has configuration problems: no"]}
    proc = fault_run(testbed, files, [{"endpoint": endpoint, "status": status, "count": 1,
                                       "body": body}], extra_secrets=[old])
    assert proc.returncode == code, proc.stderr
    assert testbed.emu.counters()[endpoint] == 1
    assert read_bytes(files["bt"]) == before
    assert len(error_lines(proc.stderr)) == 1, proc.stderr
    assert not os.path.exists(files["vt"])


def test_endless_503_respects_timeout_budget(testbed, files):
    proc = fault_run(testbed, files, [{"endpoint": "kerberos_login", "status": 503,
                                       "count": 1000}], ["--timeout", "5"])
    assert proc.returncode in (5, 6), proc.stderr
    assert proc.elapsed < 8, proc.elapsed
    assert testbed.emu.counters()["kerberos_login"] >= 2
    assert len(error_lines(proc.stderr)) == 1


def test_connection_refused_is_unreachable(testbed, files):
    port = closed_port()
    proc = run_tool(testbed, paths_args(files) + ["--timeout", "3"], env=env_for(testbed, files),
                    vault="https://localhost:%d" % port)
    assert proc.returncode == 5, proc.stderr
    assert proc.elapsed < 6
    line = error_lines(proc.stderr)[-1]
    assert "TCP" in line or "refused" in line.lower(), line


def test_tls_with_wrong_ca_is_unreachable_not_retried(testbed, files, tmp_path):
    other_ca = tb.make_tls_files(str(tmp_path))["ca.pem"]
    cmd = paths_args(files) + ["--timeout", "10"]
    proc = subprocess.run([sys.executable, tb.TOOL, "-a", testbed.vault_url, "--cafile", other_ca]
                          + cmd, env=env_for(testbed, files), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 5, proc.stderr
    assert "TLS" in proc.stderr


# ------------------------------------------------------------------ silent KDC

def test_silent_kdc_with_cached_vault_token_is_fast(testbed, files):
    env = env_for(testbed, files)
    first = run_tool(testbed, paths_args(files), env=env, verbose=False)
    assert first.returncode == 0, first.stderr
    assert os.path.exists(files["vt"])
    seed(files["bt"], tb.make_jwt(lifetime=60))
    kdc_before = testbed.kdc_requests()
    counters_before = testbed.emu.counters()
    proc = run_tool(testbed, paths_args(files), env=testbed.silent_kdc_env(HOME=files["home"]))
    assert proc.returncode == 0, proc.stderr
    assert proc.elapsed < 5, proc.elapsed
    assert delta(counters_before, testbed.emu.counters()) == {"creds_read": 1}
    assert testbed.kdc_requests() == kdc_before
    assert valid_token_bytes(read_bytes(files["bt"]))


def test_silent_kdc_without_vault_token_is_bounded(testbed, files):
    old = seed(files["bt"], tb.make_jwt(lifetime=60))
    before = read_bytes(files["bt"])
    env = testbed.silent_kdc_env(HOME=files["home"])
    with open(env["KRB5_CONFIG"]) as handle:
        kdc = re.search(r"^\s*kdc\s*=\s*(\S+)", handle.read(), re.M).group(1)
    proc = run_tool(testbed, paths_args(files) + ["--kdc-timeout", "3"], env=env,
                    extra_secrets=[old])
    assert proc.returncode == 4, proc.stderr
    assert 2.5 <= proc.elapsed < 7, proc.elapsed
    line = error_lines(proc.stderr)[-1]
    assert kdc in line and "KDC" in line, line
    assert read_bytes(files["bt"]) == before
    assert testbed.emu.total() == 0


# ------------------------------------------------------------------ bad answers

@pytest.mark.parametrize("kind", ["no_exp", "not_jwt", "expired", "not_json", "no_access_token"])
def test_unusable_token_refused_old_kept(testbed, files, kind):
    old = seed(files["bt"], tb.make_jwt(lifetime=60))
    before = read_bytes(files["bt"])
    testbed.emu.config(token_kind=kind)
    proc = run_tool(testbed, paths_args(files), env=env_for(testbed, files), extra_secrets=[old])
    assert proc.returncode == 9, proc.stderr
    assert read_bytes(files["bt"]) == before
    assert len(error_lines(proc.stderr)) == 1, proc.stderr
    assert not os.path.exists(files["vt"]), "vault token saved although it gave no usable token"
    assert sorted(os.listdir(files["dir"])) == ["bt", "bt.lock", "home"]
    quiet = run_tool(testbed, paths_args(files), env=env_for(testbed, files), verbose=False)
    assert quiet.returncode == 9
    assert len(quiet.stderr.strip().splitlines()) == 1, quiet.stderr


def test_unusable_token_with_cached_vault_token(testbed, files):
    env = env_for(testbed, files)
    assert run_tool(testbed, paths_args(files), env=env, verbose=False).returncode == 0
    old = seed(files["bt"], tb.make_jwt(lifetime=60))
    before = read_bytes(files["bt"])
    testbed.emu.config(token_kind="no_exp")
    proc = run_tool(testbed, paths_args(files), env=env, extra_secrets=[old])
    assert proc.returncode == 9, proc.stderr
    assert read_bytes(files["bt"]) == before


# ------------------------------------------------------------------ modes

def test_files_0600_with_umask_000(testbed, files):
    proc = run_tool(testbed, paths_args(files), env=env_for(testbed, files), umask=0)
    assert proc.returncode == 0, proc.stderr
    assert mode(files["bt"]) == 0o600
    assert mode(files["vt"]) == 0o600
    assert mode(files["bt"] + ".lock") == 0o600
    # a renewal over an existing 0644 file also ends 0600
    seed(files["bt"], tb.make_jwt(lifetime=60), mode_bits=0o644)
    proc = run_tool(testbed, paths_args(files), env=env_for(testbed, files), umask=0)
    assert proc.returncode == 0, proc.stderr
    assert mode(files["bt"]) == 0o600
    leftovers = [n for n in os.listdir(files["dir"]) if n not in ("bt", "vt", "bt.lock", "home")]
    assert leftovers == []


# ------------------------------------------------------------------ planted files

@pytest.fixture
def sticky(tmp_path):
    directory = tmp_path / "shared"
    directory.mkdir()
    os.chmod(str(directory), 0o1777)  # noqa: S103 - a /tmp-like shared directory on purpose
    victim_dir = tmp_path / "elsewhere"
    victim_dir.mkdir()
    victim = victim_dir / "victim"
    victim.write_text("precious\n")
    return str(directory), str(victim)


def test_planted_symlink_in_sticky_dir_refused(testbed, files, sticky):
    directory, victim = sticky
    target = os.path.join(directory, "bt_u0")
    os.symlink(victim, target)
    os.lchown(target, 65534, 65534)
    proc = run_tool(testbed, ["-o", target, "--vaulttokenfile", files["vt"]],
                    env=env_for(testbed, files))
    assert proc.returncode == 8, proc.stderr
    line = error_lines(proc.stderr)[-1]
    assert "symbolic link" in line or "symlink" in line, line
    assert read_bytes(victim) == b"precious\n"
    assert os.path.islink(target)
    assert testbed.emu.total() == 0, "refused only after talking to Vault"


def test_planted_foreign_file_in_sticky_dir_refused(testbed, files, sticky):
    directory, _ = sticky
    target = os.path.join(directory, "bt_u0")
    with open(target, "w") as handle:
        handle.write("planted\n")
    os.chmod(target, 0o644)
    os.chown(target, 65534, 65534)
    proc = run_tool(testbed, ["-o", target, "--vaulttokenfile", files["vt"]],
                    env=env_for(testbed, files))
    assert proc.returncode == 8, proc.stderr
    line = error_lines(proc.stderr)[-1]
    assert "65534" in line or "belongs" in line, line
    assert read_bytes(target) == b"planted\n"
    assert os.stat(target).st_uid == 65534
    assert testbed.emu.total() == 0


def test_planted_vault_token_symlink_not_followed(testbed, files, sticky):
    """The vault token cache is only a cache: a planted symlink there is neither read
    nor written through, nor replaced; the run warns, logs in with Kerberos, and
    succeeds."""
    directory, victim = sticky
    vt = os.path.join(directory, "vt_u0")
    os.symlink(victim, vt)
    os.lchown(vt, 65534, 65534)
    proc = run_tool(testbed, ["-o", files["bt"], "--vaulttokenfile", vt],
                    env=env_for(testbed, files))
    assert proc.returncode == 0, proc.stderr
    assert read_bytes(victim) == b"precious\n", "vault token written through a planted symlink"
    assert os.path.islink(vt), "the planted symlink was replaced"
    assert testbed.emu.counters()["kerberos_login"] == 1
    warnings = [line for line in proc.stderr.splitlines()
                if line.startswith("igwn-robot-get: warning:") and vt in line]
    assert warnings, proc.stderr
    assert valid_token_bytes(read_bytes(files["bt"]))


def test_own_symlink_in_private_dir_refused_not_followed(testbed, files, tmp_path):
    """A symlink at the token path is never trusted nor followed, even in our own
    directory: exit 8 before any Kerberos or Vault work, everything left as it was."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.symlink(str(victim), files["bt"])
    kdc = testbed.kdc_requests()
    proc = run_tool(testbed, paths_args(files), env=env_for(testbed, files))
    assert proc.returncode == 8, proc.stderr
    line = error_lines(proc.stderr)[-1]
    assert files["bt"] in line and "symbolic link" in line, line
    assert victim.read_text() == "precious\n"
    assert os.path.islink(files["bt"])
    assert testbed.emu.total() == 0 and testbed.kdc_requests() == kdc
    assert not os.path.exists(files["bt"] + ".lock")


def test_unwritable_output_dir_fails_fast_without_network(testbed, files):
    target = os.path.join(files["dir"], "missing", "bt")
    proc = run_tool(testbed, ["-o", target, "--vaulttokenfile", files["vt"]],
                    env=env_for(testbed, files))
    assert proc.returncode == 8, proc.stderr
    assert proc.elapsed < 3
    assert testbed.emu.total() == 0


# ------------------------------------------------------------------ leak scan of core paths

def test_core_paths_leak_nothing_at_vvv(testbed, files):
    env = env_for(testbed, files)
    bt2, bt3 = files["bt"] + "2", files["bt"] + "3"
    runs = [
        (paths_args(files), {"kerberos_login": 1, "token_create": 1, "creds_read": 1}),
        (paths_args(files), {}),                                   # fresh: no network
        (paths_args(files) + ["-m", "10799"], {"creds_read": 1}),  # cached vault token
        (["-o", bt2, "--vaulttokenfile", files["vt"], "--audience", "https://x.example",
          "--scopes", "read:/frames"], {"sts_read": 1}),
        (["-o", bt3, "--vaulttokenfile", "none"], {"kerberos_login": 1, "creds_read": 1}),
    ]
    for i, (args, expected) in enumerate(runs):
        if i == 2:
            time.sleep(1.1)  # so that -m 10799 finds the first token stale
        before = testbed.emu.counters()
        proc = run_tool(testbed, args, env=env)
        assert proc.returncode == 0, proc.stderr
        assert delta(before, testbed.emu.counters()) == expected, args
        scan_output(testbed, proc.stdout + proc.stderr,
                    file_secrets(files["bt"], files["vt"], bt2, bt3))


# ------------------------------------------------------------------ jitter

def test_jitter_sleeps_within_bound_when_stale(testbed, files):
    env = env_for(testbed, files)
    assert run_tool(testbed, paths_args(files), env=env, verbose=False).returncode == 0
    pauses = []
    for _ in range(3):
        seed(files["bt"], tb.make_jwt(lifetime=60))
        proc = run_tool(testbed, paths_args(files) + ["--jitter", "2"], env=env)
        assert proc.returncode == 0, proc.stderr
        match = re.search(r"waiting ([0-9.]+)s \(--jitter\)", proc.stderr)
        assert match, proc.stderr
        pause = float(match.group(1))
        assert 0 <= pause <= 2.0
        assert proc.elapsed >= pause - 0.1
        assert proc.elapsed < 2.0 + 4
        pauses.append(pause)
    FIGURES["jitter_pauses"] = pauses


def test_jitter_skipped_when_fresh(testbed, files):
    seed(files["bt"], tb.make_jwt(lifetime=10800))
    proc = run_tool(testbed, paths_args(files) + ["--jitter", "30"], env=env_for(testbed, files))
    assert proc.returncode == 0, proc.stderr
    assert proc.elapsed < 3
    assert "--jitter" not in proc.stderr
    assert testbed.emu.total() == 0
