"""First use: the OIDC device flow through a pseudo-terminal (issue #3).

The robot other/ci.ligo.org has no refresh token in the Vault emulator. At a
terminal (pexpect) the tool shows the https URL and the user code, polls until
the emulator approves, stores the refresh token and writes the token (0600)
and the credkey file; the next run, with no terminal, works through Kerberos
alone. Without a terminal the tool exits 7 and says a human must run it once.
slow_down doubles the poll interval; deny, expiry and --oidc-timeout exit 10;
Ctrl-C exits 130 promptly and changes nothing. --condor hands off to
condor_vault_storer (a stand-in here) and fails clearly when it is missing or
inside the image.
"""

import os
import re
import shutil
import stat
import subprocess
import time

import pytest

import testbed as tb

pexpect = pytest.importorskip("pexpect")

pytestmark = pytest.mark.timeout(120)

OTHER_KEY = "other/ci.ligo.org:other"
FIGURES = {"leak_scans": 0}


# ------------------------------------------------------------------ helpers

def scan_output(bed, text, extra_secrets=()):
    tb.scan_output(bed, text, extra_secrets, FIGURES)


def error_lines(text):
    return [line for line in text.splitlines() if "igwn-robot-get: error:" in line]


def read_bytes(path):
    with open(path, "rb") as handle:
        return handle.read()


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def other(testbed, tmp_path):
    """Paths and environment for the robot with no refresh token."""
    home = tmp_path / "home"
    home.mkdir()
    files = {"bt": str(tmp_path / "bt"), "vt": str(tmp_path / "vt"), "home": str(home),
             "dir": str(tmp_path),
             "credkey": str(home / ".config" / "htgettoken" / "credkey-igwn-other")}
    files["env"] = testbed.tool_env(HOME=files["home"], KRB5_KTNAME=testbed.other_keytab)
    return files


def args_for(files, *extra):
    return ["-o", files["bt"], "--vaulttokenfile", files["vt"], "--no-browser"] + list(extra)


def spawn(bed, args, env, umask=None, timeout=60):
    cmd = bed.tool_command(args)
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    return pexpect.spawn(cmd[0], cmd[1:], env=env, encoding="utf-8", timeout=timeout,
                         dimensions=(40, 200), preexec_fn=preexec)


def finish(child, timeout=60):
    """Wait for the child to end; return (exit code, everything it printed)."""
    out = child.before or ""
    child.expect(pexpect.EOF, timeout=timeout)
    out += child.before or ""
    child.close()
    code = child.exitstatus if child.exitstatus is not None else -child.signalstatus
    return code, out


def expect_prompt(child):
    """Read the URL and the user code the tool shows; return them and the text so far."""
    child.expect(r"(https://\S+)", timeout=30)
    seen = child.before + child.after
    url = child.match.group(1)
    child.expect(r"code:\s+(\S+)", timeout=10)
    seen += child.before + child.after
    return url, child.match.group(1), seen


def plain_run(bed, args, env, verbose=True, timeout=60):
    cmd = bed.tool_command((["-vvv"] if verbose else []) + list(args))
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)
    proc.elapsed = time.monotonic() - started
    scan_output(bed, proc.stdout + proc.stderr)
    return proc


def poll_times(bed):
    return [(p["time"], p["answer"]) for p in bed.emu.state()["polls"]]


@pytest.fixture(scope="module", autouse=True)
def report_figures():
    yield
    print("\noidc figures: %s" % FIGURES)


# ------------------------------------------------------------------ the device flow

def test_first_use_device_flow_then_unattended(testbed, other):
    testbed.emu.config(device={"approve_after_polls": 2, "poll_interval": "1"})
    child = spawn(testbed, args_for(other, "-vvv"), other["env"], umask=0)
    url, code, seen = expect_prompt(child)
    status, out = finish(child)
    out = seen + out
    scan_output(testbed, out, [read_bytes(other["bt"]).decode().strip()]
                if os.path.exists(other["bt"]) else [])
    assert status == 0, out
    assert url.startswith("https://"), url
    assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{4}", code), code
    counters = testbed.emu.counters()
    assert counters["auth_url"] == 1, counters
    assert counters["poll"] == 2, counters
    assert counters["creds_write"] == 1, counters
    assert testbed.emu.state()["refresh_token_stored"][OTHER_KEY] is True
    # the token, the vault token and the credkey file, all 0600 despite umask 000
    token = read_bytes(other["bt"]).decode()
    assert token.endswith("\n")
    assert tb.jwt_claims(token)["exp"] > time.time() + 3600
    assert mode(other["bt"]) == 0o600
    assert mode(other["vt"]) == 0o600
    assert os.path.isfile(other["credkey"]), os.listdir(other["home"])
    assert mode(other["credkey"]) == 0o600
    credkey = read_bytes(other["credkey"]).decode()
    assert credkey.endswith("\n") and credkey.strip() and "\n" not in credkey.strip()
    # poll spacing follows poll_interval "1"
    times = [t for t, _ in poll_times(testbed)]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(0.8 <= g < 1.8 for g in gaps), gaps
    FIGURES["poll_gaps_normal"] = [round(g, 2) for g in gaps]

    # later runs need no human: no terminal, a fresh token file and no vault token
    before = testbed.emu.counters()
    second = plain_run(testbed, ["-o", other["bt"] + "2", "--vaulttokenfile",
                                 other["vt"] + "2"], other["env"])
    assert second.returncode == 0, second.stderr
    after = testbed.emu.counters()
    assert after["auth_url"] == before["auth_url"]
    assert after["poll"] == before["poll"]
    assert after["kerberos_login"] == before["kerberos_login"] + 1
    assert after["creds_write"] == before["creds_write"]
    assert tb.jwt_claims(read_bytes(other["bt"] + "2").decode())["exp"] > time.time()


def test_no_terminal_needs_a_human(testbed, other):
    proc = plain_run(testbed, args_for(other), other["env"], verbose=False)
    assert proc.returncode == 7, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("igwn-robot-get: error:"), line
    assert "interactive" in line and "once" in line, line
    assert "igwn-robot-get" in line.split(":", 2)[2] and other["bt"] in line, line
    counters = testbed.emu.counters()
    assert counters["auth_url"] == 0 and counters["poll"] == 0, counters
    assert not os.path.exists(other["bt"]) and not os.path.exists(other["vt"])
    assert not os.path.exists(other["credkey"])
    verbose = plain_run(testbed, args_for(other), other["env"])
    assert verbose.returncode == 7


def test_no_terminal_in_image_shows_docker_run_it(testbed, other):
    env = dict(other["env"], IGWN_ROBOT_GET_IMAGE="igwn/robot-get:test")
    proc = plain_run(testbed, args_for(other), env, verbose=False)
    assert proc.returncode == 7, proc.stderr
    line = error_lines(proc.stderr)[-1]
    assert "docker run" in line and "-it" in line and "igwn/robot-get:test" in line, line
    assert testbed.emu.counters()["auth_url"] == 0


def test_dead_refresh_token_needs_a_human(testbed, other):
    testbed.emu.config(credentials={OTHER_KEY: "dead"})
    proc = plain_run(testbed, args_for(other), other["env"])
    assert proc.returncode == 7, proc.stderr
    assert testbed.emu.counters()["auth_url"] == 0


def test_nooidc_at_a_terminal_exits_7(testbed, other):
    child = spawn(testbed, args_for(other, "--nooidc"), other["env"])
    status, out = finish(child)
    assert status == 7, out
    assert testbed.emu.counters()["auth_url"] == 0


def test_slow_down_doubles_the_interval(testbed, other):
    testbed.emu.config(device={"approve_after_polls": 2, "slow_down_once": True,
                               "poll_interval": "1"})
    child = spawn(testbed, args_for(other), other["env"])
    expect_prompt(child)
    status, out = finish(child)
    assert status == 0, out
    polls = poll_times(testbed)
    assert [a for _, a in polls] == ["slow_down", "authorization_pending", "approved"], polls
    gaps = [b[0] - a[0] for a, b in zip(polls, polls[1:])]
    FIGURES["poll_gaps_after_slow_down"] = [round(g, 2) for g in gaps]
    assert all(1.8 <= g < 3.0 for g in gaps), gaps


@pytest.mark.parametrize("device,words", [
    ({"deny": True}, ("denied", "failed")),
    ({"expire": True}, ("expired", "failed")),
])
def test_denied_or_expired_login_exits_10(testbed, other, device, words):
    testbed.emu.config(device=dict(device, approve_after_polls=1, poll_interval="1"))
    child = spawn(testbed, args_for(other, "-vvv"), other["env"])
    expect_prompt(child)
    status, out = finish(child)
    scan_output(testbed, out)
    assert status == 10, out
    lines = error_lines(out)
    assert len(lines) == 1, out
    assert any(w in lines[0].lower() for w in words), lines[0]
    assert not os.path.exists(other["bt"])
    assert testbed.emu.counters()["creds_write"] == 0


def test_oidc_timeout_exits_10(testbed, other):
    testbed.emu.config(device={"approve_after_polls": 1000, "poll_interval": "1"})
    child = spawn(testbed, args_for(other, "--oidc-timeout", "3"), other["env"])
    expect_prompt(child)
    started = time.monotonic()
    status, out = finish(child)
    assert status == 10, out
    assert time.monotonic() - started < 6
    assert "--oidc-timeout" in error_lines(out)[-1]


def test_ctrl_c_while_polling_exits_130_and_changes_nothing(testbed, other):
    old = tb.make_jwt(lifetime=60)
    with open(other["bt"], "w") as handle:
        handle.write(old + "\n")
    os.chmod(other["bt"], 0o600)
    before = read_bytes(other["bt"])
    testbed.emu.config(device={"approve_after_polls": 1000, "poll_interval": "1"})
    child = spawn(testbed, args_for(other, "-vvv"), other["env"])
    expect_prompt(child)
    child.expect("waiting for the login", timeout=10)
    time.sleep(1.5)
    assert testbed.emu.counters()["poll"] >= 1
    started = time.monotonic()
    child.sendintr()
    status, out = finish(child, timeout=10)
    elapsed = time.monotonic() - started
    scan_output(testbed, out, [old])
    FIGURES["ctrl_c_seconds"] = round(elapsed, 2)
    assert status == 130, out
    assert elapsed < 2.5, elapsed
    assert "Traceback" not in out
    assert len(error_lines(out)) == 1, out
    assert read_bytes(other["bt"]) == before
    assert not os.path.exists(other["vt"])
    assert not os.path.exists(other["credkey"])
    left = sorted(n for n in os.listdir(other["dir"]) if n not in ("bt", "bt.lock", "home"))
    assert left == []
    assert testbed.emu.counters()["creds_write"] == 0


# ------------------------------------------------------------------ --condor

STORER = """#!/bin/sh
{{
  printf 'args:'; printf ' %s' "$@"; printf '\\n'
  printf 'KRB5CCNAME=%s\\n' "$KRB5CCNAME"
  ccache="${{KRB5CCNAME#FILE:}}"
  if [ -s "$ccache" ]; then echo ccache=present; else echo ccache=missing; fi
}} >> {record}
exit {code}
"""

CONFIG_VAL = """#!/bin/sh
if [ "$1" = SEC_CREDENTIAL_GETTOKEN_OPTS ]; then echo '{opts}'; exit 0; fi
exit 1
"""


def stand_ins(directory, bed, storer_code=0, opts=None):
    bindir = os.path.join(directory, "bin")
    os.makedirs(bindir, exist_ok=True)
    record = os.path.join(directory, "storer.log")
    if opts is None:
        opts = "--credkey=robot/ci.ligo.org --role=robot --vaultserver=%s" % bed.vault_url
    for name, text in (("condor_vault_storer", STORER.format(record=record, code=storer_code)),
                       ("condor_config_val", CONFIG_VAL.format(opts=opts))):
        path = os.path.join(bindir, name)
        with open(path, "w") as handle:
            handle.write(text)
        os.chmod(path, 0o755)  # noqa: S103 - stand-in commands must be executable
    return bindir, record


def condor_run(bed, tmp_path, bindir=None, verbose=True, **extra):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    path = "/usr/bin:/bin" if bindir is None else bindir + ":/usr/bin:/bin"
    env = bed.tool_env(HOME=str(home), PATH=path, **extra)
    return plain_run(bed, ["--condor", "-o", str(tmp_path / "bt"), "--vaulttokenfile",
                           str(tmp_path / "vt")], env, verbose=verbose)


def test_condor_hands_off_to_condor_vault_storer(testbed, tmp_path):
    bindir, record = stand_ins(str(tmp_path), testbed)
    proc = condor_run(testbed, tmp_path, bindir)
    assert proc.returncode == 0, proc.stderr
    lines = read_bytes(record).decode().splitlines()
    assert lines[0].split()[-1] == "igwn", lines
    assert lines[1].startswith("KRB5CCNAME="), lines
    assert lines[2] == "ccache=present", lines
    ccache = lines[1].split("=", 1)[1].replace("FILE:", "", 1)
    assert not os.path.exists(ccache), "Kerberos ticket left on disk after the hand-off"
    assert not os.path.exists(str(tmp_path / "bt"))


def test_condor_wrong_htcondor_config_says_the_line(testbed, tmp_path):
    bindir, _ = stand_ins(str(tmp_path), testbed, opts="--credkey=someone-else")
    proc = condor_run(testbed, tmp_path, bindir, verbose=False)
    assert proc.returncode == 12, proc.stderr
    line = error_lines(proc.stderr)[-1]
    assert "SEC_CREDENTIAL_GETTOKEN_OPTS" in line and "--credkey=robot/ci.ligo.org" in line


def test_condor_storer_failure_exits_12(testbed, tmp_path):
    bindir, _ = stand_ins(str(tmp_path), testbed, storer_code=3)
    proc = condor_run(testbed, tmp_path, bindir)
    assert proc.returncode == 12, proc.stderr
    assert "3" in error_lines(proc.stderr)[-1]


def test_condor_missing_storer_exits_12(testbed, tmp_path):
    if shutil.which("condor_vault_storer", path="/usr/bin:/bin"):
        pytest.skip("condor_vault_storer is installed on this machine")
    proc = condor_run(testbed, tmp_path, verbose=False)
    assert proc.returncode == 12, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "condor_vault_storer" in lines[0] and "install" in lines[0], lines[0]


def test_condor_in_image_exits_12_at_once(testbed, tmp_path):
    bindir, record = stand_ins(str(tmp_path), testbed)
    kdc_before = testbed.kdc_requests()
    proc = condor_run(testbed, tmp_path, bindir, IGWN_ROBOT_GET_IMAGE="x")
    assert proc.returncode == 12, proc.stderr
    assert proc.elapsed < 2, proc.elapsed
    assert "image" in error_lines(proc.stderr)[-1]
    assert not os.path.exists(record)
    assert testbed.kdc_requests() == kdc_before
    assert testbed.emu.total() == 0
