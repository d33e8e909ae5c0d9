"""Operator features, end to end (issue #8).

--show (exit codes, human-readable claims, --json, $BEARER_TOKEN, never the raw
token), --log-format json (every stderr line a JSON object, in success and in
every failure class, no token), --status-file and --metrics-file after a
success and then after failures, and --on-change (runs once on renewal, not on
a no-op; a failing hook keeps the new token).
"""

import json
import os
import re
import shlex
import sys
import time

import pytest

import testbed as tb

pytestmark = pytest.mark.timeout(120)

FIGURES = {"leak_scans": 0}


# ------------------------------------------------------------------ helpers

def run_tool(bed, args, env=None, timeout=60, verbose=True, vault=None, extra_secrets=()):
    return tb.run_scanned(bed, args, env, timeout, None, verbose, vault, extra_secrets,
                          FIGURES)


def scan_output(bed, text, extra_secrets=()):
    tb.scan_output(bed, text, extra_secrets, FIGURES)


def read_text(path):
    with open(path) as handle:
        return handle.read()


def seed(path, token, mode_bits=0o600):
    with open(path, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, mode_bits)
    return token


@pytest.fixture
def files(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    return {"bt": str(tmp_path / "bt"), "vt": str(tmp_path / "vt"), "home": str(home),
            "dir": str(tmp_path), "status": str(tmp_path / "status.json"),
            "metrics": str(tmp_path / "igwn_robot_get.prom")}


def paths_args(files):
    return ["-o", files["bt"], "--vaulttokenfile", files["vt"]]


def env_for(bed, files, **extra):
    return bed.tool_env(HOME=files["home"], **extra)


closed_port = tb.closed_port


@pytest.fixture(scope="module", autouse=True)
def report_figures():
    yield
    print("\nops figures: %s" % FIGURES)


# ------------------------------------------------------------------ --show

SHOW_CLAIMS = {"sub": "show-me@ligo.org", "scope": "read:/frames gwdatafind.read",
               "aud": "https://datafind.ligo.org"}


@pytest.mark.parametrize("lifetime,code", [(7200, 0), (600, 11), (-600, 11)])
def test_show_exit_codes_by_time_left(testbed, files, lifetime, code):
    token = seed(files["bt"], tb.make_jwt(SHOW_CLAIMS, lifetime=lifetime))
    proc = run_tool(testbed, ["--show", "-o", files["bt"]], env=env_for(testbed, files),
                    extra_secrets=[token])
    assert proc.returncode == code, proc.stdout + proc.stderr
    out = proc.stdout
    assert "show-me@ligo.org" in out and "read:/frames gwdatafind.read" in out, out
    assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", out), "no human-readable time: " + out
    assert "left" in out, out
    for part in token.split("."):
        assert part not in out + proc.stderr, "raw token part printed"
    assert testbed.emu.total() == 0, "--show talked to Vault"
    if code:
        assert len(proc.stderr.strip().splitlines()) >= 1
        assert proc.stderr.strip().splitlines()[-1].startswith("igwn-robot-get: error:")


def test_show_minsecs_decides(testbed, files):
    seed(files["bt"], tb.make_jwt(lifetime=600))
    assert run_tool(testbed, ["--show", "-o", files["bt"], "-m", "300"],
                    env=env_for(testbed, files)).returncode == 0
    assert run_tool(testbed, ["--show", "-o", files["bt"], "-m", "900"],
                    env=env_for(testbed, files)).returncode == 11


@pytest.mark.parametrize("content", [None, "", "garbage", "a.b.c", "eyJ.%%%.x",
                                     tb.make_jwt(lifetime=None)],
                         ids=["missing", "empty", "garbage", "abc", "bad_b64", "no_exp"])
def test_show_missing_or_malformed_is_11(testbed, files, content):
    if content is not None:
        seed(files["bt"], content)
    proc = run_tool(testbed, ["--show", "-o", files["bt"]], env=env_for(testbed, files),
                    verbose=False)
    assert proc.returncode == 11, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("igwn-robot-get: error:"), proc.stderr
    assert testbed.emu.total() == 0


def test_show_json_is_one_object(testbed, files):
    token = seed(files["bt"], tb.make_jwt(SHOW_CLAIMS, lifetime=7200))
    claims = tb.jwt_claims(token)
    proc = run_tool(testbed, ["--show", "--json", "-o", files["bt"]], env=env_for(testbed, files),
                    extra_secrets=[token])
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert isinstance(doc, dict)
    assert doc["claims"] == claims
    assert 7100 < doc["time_left"] <= 7200
    assert token.split(".")[2] not in proc.stdout
    expiring = seed(files["bt"], tb.make_jwt(SHOW_CLAIMS, lifetime=60))
    proc = run_tool(testbed, ["--show", "--json", "-o", files["bt"]], env=env_for(testbed, files),
                    extra_secrets=[expiring])
    assert proc.returncode == 11
    doc = json.loads(proc.stdout)
    assert doc["time_left"] < 61


def test_show_reads_bearer_token_env(testbed, files, tmp_path):
    token = tb.make_jwt({"sub": "from-the-environment"}, lifetime=7200)
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    env = env_for(testbed, files, BEARER_TOKEN=token, XDG_RUNTIME_DIR=str(runtime))
    proc = run_tool(testbed, ["--show"], env=env, extra_secrets=[token])
    assert proc.returncode == 0, proc.stderr
    assert "from-the-environment" in proc.stdout
    assert token not in proc.stdout
    env = env_for(testbed, files, BEARER_TOKEN=tb.make_jwt(lifetime=60),
                  XDG_RUNTIME_DIR=str(runtime))
    assert run_tool(testbed, ["--show"], env=env, verbose=False).returncode == 11


def test_show_discovers_bearer_token_file(testbed, files):
    seed(files["bt"], tb.make_jwt({"sub": "from-the-file"}, lifetime=7200))
    env = env_for(testbed, files, BEARER_TOKEN_FILE=files["bt"])
    proc = run_tool(testbed, ["--show"], env=env, verbose=False)
    assert proc.returncode == 0, proc.stderr
    assert "from-the-file" in proc.stdout


# ------------------------------------------------------------------ --log-format json

def _usage(bed, files):
    return ["--minsecs", "soon"], None


def _keytab(bed, files):
    return [], env_for(bed, files, KRB5_KTNAME=os.path.join(files["dir"], "no.keytab"))


def _kerberos(bed, files):
    return ["--kdc-timeout", "2"], bed.silent_kdc_env(HOME=files["home"])


def _unreachable(bed, files):
    return ["--timeout", "2", "-a", "https://localhost:%d" % closed_port()], None


def _refused(bed, files):
    bed.emu.config(faults=[{"endpoint": "kerberos_login", "status": 403}])
    return [], None


def _needs_human(bed, files):
    bed.emu.config(credentials={"robot/ci.ligo.org:robot": "missing"})
    return [], None


def _output(bed, files):
    return ["-o", os.path.join(files["dir"], "missing", "bt")], None


def _unusable(bed, files):
    bed.emu.config(token_kind="no_exp")
    return [], None


def _show(bed, files):
    return ["--show"], None


def _condor(bed, files):
    return ["--condor"], env_for(bed, files, IGWN_ROBOT_GET_IMAGE="x")


def _hook(bed, files):
    return ["--on-change", "/bin/false"], None


def _success(bed, files):
    return [], None


def _fresh(bed, files):
    seed(files["bt"], tb.make_jwt(lifetime=7200))
    return [], None


JSON_CASES = [
    ("success", _success, 0), ("fresh", _fresh, 0), ("usage", _usage, 2),
    ("keytab", _keytab, 3), ("kerberos", _kerberos, 4), ("unreachable", _unreachable, 5),
    ("refused", _refused, 6), ("needs_human", _needs_human, 7), ("output", _output, 8),
    ("unusable", _unusable, 9), ("show", _show, 11), ("condor", _condor, 12),
    ("hook", _hook, 13),
]


@pytest.mark.parametrize("name,setup,code", JSON_CASES, ids=[c[0] for c in JSON_CASES])
def test_log_format_json_every_line(testbed, files, name, setup, code):
    extra, env = setup(testbed, files)
    args = paths_args(files) + ["--log-format", "json"]
    # later options win, so a case's own -o / -a override the defaults
    if "-a" in extra:
        i = extra.index("-a")
        proc = run_tool(testbed, args + extra[:i] + extra[i + 2:], vault=extra[i + 1],
                        env=env or env_for(testbed, files))
    else:
        proc = run_tool(testbed, args + extra, env=env or env_for(testbed, files))
    assert proc.returncode == code, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines or code == 0
    docs = []
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError:
            raise AssertionError("not a JSON line on stderr: %r" % line)
        assert isinstance(doc, dict), line
        for key in ("time", "level", "event", "message"):
            assert key in doc, (key, line)
        docs.append(doc)
    if code:
        errors = [d for d in docs if d["level"] == "error"]
        assert len(errors) == 1, proc.stderr
        assert errors[0]["exit_code"] == code, errors[0]
        assert isinstance(errors[0]["error_class"], str) and errors[0]["error_class"], errors[0]
    else:
        assert not [d for d in docs if d["level"] == "error"]
    # -vvv text and JSON logs carry the same redaction: nothing secret here either
    scan_output(testbed, proc.stderr, [open(p).read().strip() for p in (files["bt"], files["vt"])
                                       if os.path.isfile(p)])


# ------------------------------------------------------------------ --status-file

def test_status_file_success_then_failure(testbed, files):
    env = env_for(testbed, files)
    args = paths_args(files) + ["--status-file", files["status"]]
    first = run_tool(testbed, args, env=env)
    assert first.returncode == 0, first.stderr
    ok = json.loads(read_text(files["status"]))
    claims = tb.jwt_claims(read_text(files["bt"]))
    assert ok["exit_code"] == 0 and ok["outcome"] == "renewed"
    assert ok["last_success_time"] and ok["last_success_timestamp"]
    assert ok["attempt_time"]
    token = ok["token"]
    for key in ("exp", "sub", "scope", "aud"):
        assert token[key] == claims[key], key
    assert 10000 < token["time_left"] <= 10800

    # no-op run: still a success
    fresh = run_tool(testbed, args, env=env)
    assert fresh.returncode == 0
    noop = json.loads(read_text(files["status"]))
    assert noop["outcome"] == "fresh" and noop["exit_code"] == 0
    assert noop["last_success_timestamp"] > ok["last_success_timestamp"]

    # a failure: asking for more than the issuer's token lifetime
    failed = run_tool(testbed, args + ["-m", "20000"], env=env)
    assert failed.returncode == 6, failed.stderr
    bad = json.loads(read_text(files["status"]))
    assert bad["exit_code"] == 6 and bad["outcome"] == "failed"
    assert bad["last_success_time"] == noop["last_success_time"]
    assert bad["last_success_timestamp"] == noop["last_success_timestamp"]
    assert bad["attempt_timestamp"] > noop["attempt_timestamp"]
    assert bad["error_class"] and bad["error"]
    assert bad["token"]["exp"] == claims["exp"] and bad["token"]["sub"] == claims["sub"]
    assert bad["token"]["time_left"] is not None
    text = read_text(files["status"])
    scan_output(testbed, text, [read_text(files["bt"]).strip(), read_text(files["vt"]).strip()])


# ------------------------------------------------------------------ --metrics-file

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
                    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? (\S+)( -?\d+)?$')


def parse_prom(text):
    """Validate Prometheus text exposition format; return {name: value}, {name: type}."""
    values, types = {}, {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# HELP "):
            assert len(line.split(" ", 3)) == 4, line
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "untyped", "summary", "histogram"), line
            types[name] = kind
            continue
        assert not line.startswith("#"), line
        match = SAMPLE.match(line)
        assert match, "not a Prometheus sample: %r" % line
        name = match.group(1)
        assert name in types, "sample before its # TYPE: %r" % line
        values[name] = float(match.group(3))
    return values, types


def test_metrics_file_success_then_failures(testbed, files):
    env = env_for(testbed, files)
    args = paths_args(files) + ["--metrics-file", files["metrics"]]
    assert run_tool(testbed, args, env=env).returncode == 0
    values, types = parse_prom(read_text(files["metrics"]))
    names = sorted(values)
    prefix = os.path.commonprefix(names)
    assert prefix.endswith("_") and len(prefix) > 4, names
    exp = tb.jwt_claims(read_text(files["bt"]))["exp"]
    expiry = [n for n in names if "expir" in n and n.endswith("_timestamp_seconds")]
    assert expiry and values[expiry[0]] == exp, values
    success = [n for n in names if "success" in n and n.endswith("_timestamp_seconds")]
    assert success and abs(values[success[0]] - time.time()) < 30
    failures = [n for n in names if "fail" in n and n.endswith("_total")]
    assert failures and types[failures[0]] == "counter"
    exit_code = [n for n in names if "exit_code" in n]
    assert exit_code and values[exit_code[0]] == 0
    for name in names:
        if name.endswith("_total"):
            assert types[name] == "counter", name
    first_success = values[success[0]]
    first_failures = values.get(failures[0], 0)

    for attempt in (1, 2):
        failed = run_tool(testbed, args + ["-m", "20000"], env=env)
        assert failed.returncode == 6, failed.stderr
        values, _ = parse_prom(read_text(files["metrics"]))
        assert values[failures[0]] == first_failures + attempt, values
        assert values[exit_code[0]] == 6
        assert values[success[0]] == first_success
        assert values[expiry[0]] == exp
    text = read_text(files["metrics"])
    scan_output(testbed, text, [read_text(files["bt"]).strip()])


def test_json_logs_status_and_metrics_together(testbed, files):
    """The reviewer's check: only JSON lines, a status file with exp, an expiry metric."""
    args = paths_args(files) + ["--log-format", "json", "--status-file", files["status"],
                                "--metrics-file", files["metrics"]]
    proc = run_tool(testbed, args, env=env_for(testbed, files), verbose=False)
    assert proc.returncode == 0, proc.stderr
    for line in proc.stderr.splitlines():
        json.loads(line)
    status = json.loads(read_text(files["status"]))
    assert status["token"]["exp"] == tb.jwt_claims(read_text(files["bt"]))["exp"]
    values, _ = parse_prom(read_text(files["metrics"]))
    assert any(n.endswith("expiry_timestamp_seconds") for n in values)


# ------------------------------------------------------------------ --on-change

HOOK = """import json, os, sys
record = {"env": {k: v for k, v in os.environ.items() if k.startswith(("IGWN", "BEARER"))},
          "argv": sys.argv[1:]}
path = record["env"].get("IGWN_ROBOT_GET_TOKEN_FILE") or record["env"].get("BEARER_TOKEN_FILE")
if path and os.path.exists(path):
    record["token_head"] = open(path).read()[:20]
with open(sys.argv[1], "a") as handle:
    handle.write(json.dumps(record) + "\\n")
sys.exit(int(sys.argv[2]))
"""


def hook_command(tmp_path, code=0):
    directory = tmp_path / "hook dir"
    directory.mkdir(exist_ok=True)
    script = directory / "hook.py"
    script.write_text(HOOK)
    marker = directory / "marker log"
    command = " ".join(shlex.quote(p) for p in (sys.executable, str(script), str(marker),
                                                str(code)))
    return command, marker


def marker_lines(marker):
    if not marker.exists():
        return []
    return [json.loads(line) for line in marker.read_text().splitlines()]


def test_on_change_runs_once_on_renewal_not_on_noop(testbed, files, tmp_path):
    command, marker = hook_command(tmp_path)
    env = env_for(testbed, files)
    old = seed(files["bt"], tb.make_jwt(lifetime=60))
    args = paths_args(files) + ["--on-change", command]
    proc = run_tool(testbed, args, env=env, extra_secrets=[old])
    assert proc.returncode == 0, proc.stderr
    records = marker_lines(marker)
    assert len(records) == 1, records
    bt = os.path.abspath(files["bt"])
    assert bt in records[0]["env"].values(), records[0]
    assert records[0]["argv"][0] == str(marker)
    new = read_text(files["bt"])
    assert new.strip() != old
    assert records[0]["token_head"] == new[:20], "hook ran before the new token was in place"
    # no-op: the token is fresh, the hook must not run
    proc = run_tool(testbed, args, env=env)
    assert proc.returncode == 0
    assert len(marker_lines(marker)) == 1
    # a renewal again runs it again, once
    seed(files["bt"], tb.make_jwt(lifetime=60))
    proc = run_tool(testbed, args, env=env)
    assert proc.returncode == 0
    assert len(marker_lines(marker)) == 2


def test_failing_hook_keeps_the_new_token(testbed, files, tmp_path):
    command, marker = hook_command(tmp_path, code=3)
    old = seed(files["bt"], tb.make_jwt(lifetime=60))
    args = paths_args(files) + ["--on-change", command, "--status-file", files["status"]]
    proc = run_tool(testbed, args, env=env_for(testbed, files), extra_secrets=[old])
    assert proc.returncode != 0, "the hook's failure was not reported in the exit code"
    error = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(error) == 1 and "on-change" in error[0] and "3" in error[0], proc.stderr
    assert len(marker_lines(marker)) == 1
    new = read_text(files["bt"]).strip()
    assert new != old
    assert tb.jwt_claims(new)["exp"] > time.time() + 3600
    status = json.loads(read_text(files["status"]))
    assert status["exit_code"] == proc.returncode
    assert status["last_success_timestamp"], "the renewal itself succeeded"
