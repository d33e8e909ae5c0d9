"""The deployment examples under deploy/ are valid and say what they promise.

- Kubernetes: every manifest passes `kubernetes-validate --strict` against the
  newest Kubernetes version the installed validator knows (offline), and the
  CronJob has what issue #5 asks for (Forbid, deadlines, history limits, the
  restricted security context, the `check` initContainer, the 0400 keytab
  Secret with fsGroup, scratch emptyDir at /tmp, resources).
- Compose: Debian's docker-compose 1.29 validates the file without a daemon
  (`config -q`), and the resolved configuration maps the user, mounts the
  keytab and token read-only where they should be.
- Cron: every crontab line has 5 valid time fields, no `%`, --minsecs matched
  to the hourly cadence; cron-quiet is silent on success and loud on failure;
  the copy-in line, run as cron would run it against the test KDC and Vault
  emulator, fetches a token silently and fails with one line.
The image rehearsal of the CronJob is in test_k8s_rehearsal.py.
"""

import base64
import json
import os
import pathlib
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(REPO, "deploy")
K8S = os.path.join(DEPLOY, "kubernetes")
COMPOSE_DIR = os.path.join(DEPLOY, "compose")
COMPOSE = os.path.join(COMPOSE_DIR, "compose.yaml")
CRON = os.path.join(DEPLOY, "cron")
CRON_QUIET = os.path.join(CRON, "cron-quiet")
TOOL = os.path.join(REPO, "igwn_robot_get.py")
MANIFESTS = ["pvc.yaml", "cronjob.yaml", "deployment.yaml"]
TOKEN_FILE = "/tokens/scitoken.use"


def load(name):
    with open(os.path.join(K8S, name)) as handle:
        docs = [d for d in yaml.safe_load_all(handle) if d]
    assert len(docs) == 1, name
    return docs[0]


def k8s_version():
    """The newest Kubernetes version the installed validator has schemas for."""
    from kubernetes_validate import utils
    return utils.latest_version()


def env_dict(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def mounts(container):
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


def make_jwt(seconds_left, **claims):
    """An unsigned-looking JWT with exp in seconds_left (the tool does not verify)."""
    def b64(obj):
        raw = json.dumps(obj).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    now = int(time.time())
    payload = {"iss": "https://test.example", "sub": "robot", "aud": "ANY",
               "scope": "read:/", "iat": now, "nbf": now, "exp": now + seconds_left}
    payload.update(claims)
    return "%s.%s.%s" % (b64({"alg": "RS256", "typ": "JWT", "kid": "k"}), b64(payload),
                         "c2lnbmF0dXJl")


# -- Kubernetes --------------------------------------------------------------

@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_validates_strictly(name):
    version = k8s_version()
    proc = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict",
                           "-k", version, os.path.join(K8S, name)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed" in proc.stdout + proc.stderr


def test_validator_is_strict():
    """--strict really rejects an unknown field (a typo would not slip through)."""
    text = open(os.path.join(K8S, "cronjob.yaml")).read()
    bad = text.replace("concurrencyPolicy:", "concurencyPolicy:")
    proc = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict",
                           "-k", k8s_version(), "-"], input=bad,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode == 0 and "passed" not in proc.stdout + proc.stderr:
        pytest.skip("this kubernetes-validate does not read stdin")
    assert proc.returncode != 0
    assert "concurencyPolicy" in proc.stdout + proc.stderr


def test_kustomization_lists_every_manifest():
    with open(os.path.join(K8S, "kustomization.yaml")) as handle:
        kust = yaml.safe_load(handle)
    assert kust["kind"] == "Kustomization"
    assert sorted(kust["resources"]) == sorted(MANIFESTS)
    assert [i["name"] for i in kust["images"]] == ["igwn-robot-get"]


def test_no_secret_manifest_with_placeholder():
    """The keytab Secret is created from the file with kubectl, never from a
    base64 placeholder in a manifest (which `kubectl apply` would push over
    the real one)."""
    for name in os.listdir(K8S):
        if name.endswith((".yaml", ".yml")):
            with open(os.path.join(K8S, name)) as handle:
                kinds = [d.get("kind") for d in yaml.safe_load_all(handle) if d]
            assert "Secret" not in kinds, name
    readme = re.sub(r"\\\n\s*", "", open(os.path.join(K8S, "README.md")).read())
    assert ("kubectl create secret generic robot-keytab "
            "--from-file=robot.keytab=") in readme
    assert "--from-file=robot.keytab=" in open(os.path.join(K8S, "cronjob.yaml")).read()


def cronjob_parts():
    cron = load("cronjob.yaml")
    job = cron["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    return cron, job, pod


def test_cronjob_schedule_and_job_limits():
    cron, job, pod = cronjob_parts()
    assert cron["apiVersion"] == "batch/v1" and cron["kind"] == "CronJob"
    spec = cron["spec"]
    fields = spec["schedule"].split()
    assert len(fields) == 5 and fields[1:] == ["*", "*", "*", "*"], "hourly"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] < 3600
    assert spec["successfulJobsHistoryLimit"] >= 1
    assert spec["failedJobsHistoryLimit"] >= 1
    # The deadline covers the tool's own budget (--timeout 60, KDC 15 s, the
    # check) with room for an image pull, and ends well before the next run.
    assert 60 + 15 < job["activeDeadlineSeconds"] < 3600
    assert 0 < job["backoffLimit"] <= 6
    assert pod["restartPolicy"] == "Never"   # failed pods keep their logs
    rules = job["podFailurePolicy"]["rules"]
    fail_codes = [r["onExitCodes"]["values"] for r in rules if r["action"] == "FailJob"]
    assert fail_codes and {3, 7, 8, 20} <= set(fail_codes[0])
    assert not {4, 5, 6} & set(fail_codes[0]), "transient failures must be retried"


def test_cronjob_pod_security():
    _, _, pod = cronjob_parts()
    sc = pod["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] > 0 and sc["runAsGroup"] > 0 and sc["fsGroup"] > 0
    # without it the kubelet makes every file in the volume group-writable on each mount
    assert sc["fsGroupChangePolicy"] == "OnRootMismatch"
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    containers = pod["initContainers"] + pod["containers"]
    assert len(containers) == 2
    for container in containers:
        csc = container["securityContext"]
        assert csc["allowPrivilegeEscalation"] is False, container["name"]
        assert csc["readOnlyRootFilesystem"] is True, container["name"]
        assert csc["capabilities"]["drop"] == ["ALL"], container["name"]
        assert "add" not in csc["capabilities"]
        res = container["resources"]
        assert set(res["requests"]) >= {"cpu", "memory"}
        assert set(res["limits"]) >= {"cpu", "memory"}


def test_cronjob_init_container_runs_entrypoint_check():
    """The initContainer is the same image with args ["check", ...]: the
    image's ENTRYPOINT is entrypoint.sh, so this runs `entrypoint.sh check`
    with the job's options, environment and mounts."""
    _, _, pod = cronjob_parts()
    (init,) = pod["initContainers"]
    (main,) = pod["containers"]
    assert init["image"] == main["image"]
    # "check", then the job's own options, so that -a/-k/-o reach the checks
    assert init["args"] == ["check"] + main["args"]
    assert "command" not in init and "command" not in main, "keep the image ENTRYPOINT"
    assert init["env"] == main["env"]
    assert init["volumeMounts"] == main["volumeMounts"]
    assert init["securityContext"] == main["securityContext"]
    assert main["imagePullPolicy"] == init["imagePullPolicy"] == "IfNotPresent"


def test_cronjob_volumes_keytab_tokens_tmp():
    _, _, pod = cronjob_parts()
    (main,) = pod["containers"]
    env = env_dict(main)
    mnt = mounts(main)
    volumes = {v["name"]: v for v in pod["volumes"]}
    # token: on the shared PVC, at the path readers are told about
    assert env["BEARER_TOKEN_FILE"] == TOKEN_FILE
    tokens = mnt[os.path.dirname(TOKEN_FILE)]
    assert not tokens.get("readOnly")
    assert volumes[tokens["name"]]["persistentVolumeClaim"]["claimName"] == "robot-tokens"
    # keytab: the Secret created from the file, mode 0400 (0440 root:fsGroup
    # once mounted); KRB5_KTNAME names the Secret volume, a directory holding
    # exactly one keytab, as the seed's manifest does
    assert env["KRB5_KTNAME"] == "/keytab"
    kmount = mnt[env["KRB5_KTNAME"]]
    assert kmount["readOnly"] is True
    secret = volumes[kmount["name"]]["secret"]
    assert secret["secretName"] == "robot-keytab"
    assert secret["defaultMode"] == 0o400
    (item,) = secret["items"]
    assert item == {"key": "robot.keytab", "path": "robot.keytab", "mode": 0o400}
    # scratch: /tmp on an emptyDir, not on the shared token volume
    assert volumes[mnt["/tmp"]["name"]]["emptyDir"]["sizeLimit"]
    assert set(volumes) == {tokens["name"], kmount["name"], mnt["/tmp"]["name"]}


def schedule_period_seconds(schedule):
    minute, hour = schedule.split()[:2]
    assert re.fullmatch(r"\d+", minute) and hour == "*", schedule
    return 3600


def option_value(args, name):
    return args[args.index(name) + 1]


def test_cronjob_minsecs_matches_cadence():
    """--minsecs at least one period: a token never expires between two
    successful runs; and below the 3-hour token lifetime minus a period, so
    not every run renews."""
    cron, _, pod = cronjob_parts()
    (main,) = pod["containers"]
    period = schedule_period_seconds(cron["spec"]["schedule"])
    minsecs = int(option_value(main["args"], "--minsecs"))
    assert period <= minsecs <= 10800 - period
    # the job's /tmp dies with the pod: a cached vault token could never be reused
    assert option_value(main["args"], "--vaulttokenfile") == "none"
    # readable by the volume's group (fsGroup), for readers of another UID
    assert option_value(main["args"], "--mode") == "0640"


def test_deployment_reads_token_read_only():
    dep = load("deployment.yaml")
    _, _, pod = cronjob_parts()
    spec = dep["spec"]["template"]["spec"]
    (app,) = spec["containers"]
    env = env_dict(app)
    mnt = mounts(app)
    volumes = {v["name"]: v for v in spec["volumes"]}
    token_dir = os.path.dirname(env["BEARER_TOKEN_FILE"])
    assert os.path.basename(env["BEARER_TOKEN_FILE"]) == os.path.basename(TOKEN_FILE)
    assert mnt[token_dir]["readOnly"] is True
    pvc = volumes[mnt[token_dir]["name"]]["persistentVolumeClaim"]
    assert pvc == {"claimName": "robot-tokens", "readOnly": True}
    # the token is 0640, group fsGroup: a reader of another UID joins that group
    reader, writer = spec["securityContext"], pod["securityContext"]
    assert reader["runAsUser"] != writer["runAsUser"]
    assert writer["fsGroup"] in reader["supplementalGroups"]
    assert reader["runAsNonRoot"] is True
    assert "fsGroup" not in reader
    # a readiness probe on the token (a liveness restart would not fetch one)
    probe = app["readinessProbe"]["exec"]["command"]
    assert "--show" in probe and "--minsecs" in probe
    assert "livenessProbe" not in app
    script = probe[1]
    script_mount = mnt[os.path.dirname(script)]
    assert script_mount["readOnly"] is True
    assert volumes[script_mount["name"]]["configMap"]["name"] == "igwn-robot-get"
    assert os.path.basename(script) == "igwn_robot_get.py"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to play the two UIDs")
@pytest.mark.parametrize("seconds_left,expected", [(3 * 3600, 0), (60, 11), (None, 11)])
def test_deployment_probe_command_works(open_tmp, seconds_left, expected):
    """Run the Deployment's probe command as the kubelet would, as the
    Deployment's UID and groups, on a token as the CronJob leaves it (mode
    0640, owned by the job's UID and the fsGroup), with the ConfigMap's script
    replaced by a copy of this checkout's: exit 0 on a fresh token, 11 on an
    expiring or missing one. It runs under Debian's python3 (no gssapi, as in
    an application image)."""
    python = shutil.which("python3", path="/usr/bin")
    if python is None:
        pytest.skip("no /usr/bin/python3")
    dep = load("deployment.yaml")
    spec = dep["spec"]["template"]["spec"]
    (app,) = spec["containers"]
    _, _, job = cronjob_parts()
    writer, reader = job["securityContext"], spec["securityContext"]
    command = list(app["readinessProbe"]["exec"]["command"])
    assert command[0] == "python3"
    script = open_tmp / "igwn_robot_get.py"
    shutil.copy(TOOL, script)
    script.chmod(0o644)
    command[0:2] = [python, str(script)]
    tokens = open_tmp / "tokens"
    tokens.mkdir()
    os.chown(tokens, 0, writer["fsGroup"])
    tokens.chmod(0o2775)
    token = tokens / "scitoken.use"
    if seconds_left is not None:
        token.write_text(make_jwt(seconds_left) + "\n")
        os.chown(token, writer["runAsUser"], writer["fsGroup"])
        token.chmod(0o640)
    home = open_tmp / "home"
    home.mkdir()
    os.chown(home, reader["runAsUser"], reader["runAsGroup"])
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "BEARER_TOKEN_FILE": str(token)}
    groups = [reader["runAsGroup"]] + list(reader["supplementalGroups"])
    # The reader mounts the volume read-only, as the Deployment says: --show believes
    # the writer's file only where it cannot write the directory itself.
    (mount,) = [m for m in app["volumeMounts"] if m["name"] == "robot-tokens"]
    assert mount["readOnly"] is True
    as_reader = ["setpriv", "--reuid", str(reader["runAsUser"]), "--regid",
                 str(reader["runAsGroup"]), "--groups", ",".join(map(str, groups)), "--"]
    read_only = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift '
                 '&& exec "$@"', "sh", str(tokens)]
    proc = subprocess.run(read_only + as_reader + command, env=env, capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL, cwd=str(home))
    assert proc.returncode == expected, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    if seconds_left is not None:
        assert token.read_text().split(".")[2].strip() not in proc.stdout + proc.stderr


# -- Compose -----------------------------------------------------------------

def compose(args, env_lines=None, tmp_path=None):
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose (Debian package) is missing: run scripts/bootstrap.sh"
    cmd = [exe, "-f", COMPOSE]
    if env_lines is not None:
        env_file = tmp_path / "test.env"
        with open(os.path.join(COMPOSE_DIR, ".env.example")) as handle:
            env_file.write_text(handle.read() + "".join(line + "\n" for line in env_lines))
        cmd += ["--env-file", str(env_file)]
    env = {k: v for k, v in os.environ.items()
           if k not in ("UID", "GID", "IGWN_IMAGE", "TOKEN_DIR", "KEYTAB", "APP_IMAGE",
                        "COMPOSE_FILE", "COMPOSE_PROFILES", "DOCKER_HOST")}
    return subprocess.run(cmd + args, capture_output=True, text=True, env=env, timeout=120,
                          cwd=str(tmp_path) if tmp_path else None)


def test_compose_file_has_no_version_key():
    with open(COMPOSE) as handle:
        data = yaml.safe_load(handle)
    assert "version" not in data
    assert set(data["services"]) == {"token-generator", "my-app"}


def test_compose_validates(tmp_path):
    proc = compose(["config", "-q"], ["UID=1000", "GID=1000"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""


def test_compose_refuses_missing_uid(tmp_path):
    """Without UID/GID compose stops, rather than run the generator as the
    image's default user (whose token the host user could not read)."""
    proc = compose(["config", "-q"], [], tmp_path)
    assert proc.returncode != 0
    assert "set UID and GID in .env" in proc.stderr


def test_compose_resolved_config(tmp_path):
    proc = compose(["--profile", "token-gen", "config"], ["UID=1234", "GID=5678"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    gen, app = services["token-generator"], services["my-app"]
    assert gen["profiles"] == ["token-gen"]
    assert gen["user"] == "1234:5678"
    # the reader runs as its image's own user, in the token's group (--mode 0640)
    assert "user" not in app
    assert [str(g) for g in app["group_add"]] == ["5678"]
    assert gen["environment"]["BEARER_TOKEN_FILE"] == TOKEN_FILE
    assert gen["environment"]["KRB5_KTNAME"] == "/keytab"
    gen_vols = {v.split(":")[1]: v for v in gen["volumes"]}
    assert gen_vols["/keytab"].endswith(":ro")
    assert gen_vols["/keytab"].startswith(COMPOSE_DIR + "/")
    assert not gen_vols["/tokens"].endswith(":ro")
    assert gen["read_only"] is True and gen["tmpfs"] == ["/tmp"]
    assert gen["cap_drop"] == ["ALL"]
    assert gen["restart"] == "no"
    assert option_value(gen["command"], "--minsecs") == "3600"
    assert option_value(gen["command"], "--vaulttokenfile") == "none"
    assert option_value(gen["command"], "--mode") == "0640"
    # the application reads the same directory, read-only, through BEARER_TOKEN_FILE
    app_token = app["environment"]["BEARER_TOKEN_FILE"]
    app_vols = {v.split(":")[1]: v for v in app["volumes"]}
    app_vol = app_vols[os.path.dirname(app_token)]
    assert app_vol.endswith(":ro")
    assert app_vol.split(":")[0] == gen_vols["/tokens"].split(":")[0]
    assert "depends_on" not in app


# -- Cron --------------------------------------------------------------------

CRONTABS = ["igwn-robot-get.crontab", "docker.crontab"]
FIELD_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
ENV_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
ENTRY = re.compile(r"^#?\s*([0-9*/,-]+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(.+)$")


def valid_field(field, low, high):
    for part in field.split(","):
        rng, _, step = part.partition("/")
        if step and not (step.isdigit() and int(step) > 0):
            return False
        if rng == "*":
            continue
        bounds = rng.split("-")
        if len(bounds) > 2 or not all(b.isdigit() for b in bounds):
            return False
        if not all(low <= int(b) <= high for b in bounds):
            return False
    return True


def crontab_entries(name):
    """(env, entries): NAME=value lines and (fields, command, active) entries,
    commented-out entries included so that the optional lines stay valid."""
    env, entries = {}, []
    with open(os.path.join(CRON, name)) as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if ENV_LINE.match(line):
                key, _, value = line.partition("=")
                env[key] = value
                continue
            match = ENTRY.match(line)
            if line.startswith("#") and not (match and line[1:2] in "0123456789*"):
                continue
            assert match, "not a crontab line: %r" % line
            entries.append((list(match.groups()[:5]), match.group(6),
                            not line.startswith("#")))
    return env, entries


@pytest.mark.parametrize("name", CRONTABS)
def test_crontab_syntax(name):
    env, entries = crontab_entries(name)
    assert entries and any(active for _, _, active in entries)
    assert env["SHELL"] == "/bin/sh" and "/usr/bin" in env["PATH"].split(":")
    assert env["BEARER_TOKEN_FILE"].endswith("/scitoken.use")
    for key, value in env.items():
        assert "$" not in value, "cron does not expand variables: %s" % key
        assert os.path.isabs(value) or key in ("SHELL", "PATH", "MAILTO"), key
    for fields, command, _ in entries:
        for field, (low, high) in zip(fields, FIELD_RANGES):
            assert valid_field(field, low, high), (field, command)
        assert "%" not in command, "cron turns % into a newline: escape it"
        shlex.split(command)    # balanced quotes
        if "igwn" in command and "compose" not in command:
            args = shlex.split(command)
            # hourly runs renew when less than an hour is left
            assert fields[1:] == ["*", "*", "*", "*"]
            assert option_value(args, "--minsecs") == "3600"


def test_crontab_copy_in_line():
    env, entries = crontab_entries("igwn-robot-get.crontab")
    active = [shlex.split(cmd) for _, cmd, on in entries if on]
    (args,) = active
    assert args[0] == "python3" and args[1].endswith("/igwn_robot_get.py")
    assert int(option_value(args, "--jitter")) > 0
    assert option_value(args, "--status-file")
    assert env["KRB5_KTNAME"].startswith("/")


def test_crontab_docker_lines_follow_the_seed():
    _, entries = crontab_entries("docker.crontab")
    commands = [shlex.split(cmd) for _, cmd, _ in entries]
    (run,) = [c for c in commands if "run" in c and "docker" in c and "compose" not in c]
    assert run[0].endswith("/cron-quiet") and run[1:3] == ["docker", "run"]
    assert "--rm" in run
    assert option_value(run, "--user") == "$(id -u):$(id -g)"
    volumes = [run[i + 1] for i, a in enumerate(run) if a == "-v"]
    assert any(v.endswith(":/tokens") for v in volumes)
    assert any(v.endswith(":/keytab:ro") for v in volumes)
    envs = [run[i + 1] for i, a in enumerate(run) if a == "-e"]
    assert "BEARER_TOKEN_FILE=" + TOKEN_FILE in envs and "KRB5_KTNAME=/keytab" in envs
    assert option_value(run, "--minsecs") == "3600"
    assert int(option_value(run, "--jitter")) > 0
    (comp,) = [c for c in commands if "compose" in c]
    assert comp[0] == "cd" and comp[3].endswith("/cron-quiet")
    assert comp[4:] == ["docker", "compose", "--profile", "token-gen", "run", "--rm", "-T",
                        "token-generator"]


def test_cron_quiet_shellcheck():
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not installed (scripts/bootstrap.sh installs it)")
    proc = subprocess.run(["shellcheck", CRON_QUIET], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_cron_quiet_silent_on_success_loud_on_failure(tmp_path):
    assert os.stat(CRON_QUIET).st_mode & stat.S_IXUSR
    env = dict(os.environ, TMPDIR=str(tmp_path))
    ok = subprocess.run([CRON_QUIET, "sh", "-c", "echo progress; echo more >&2"],
                        capture_output=True, text=True, env=env)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "")
    bad = subprocess.run([CRON_QUIET, "sh", "-c", "echo progress; echo 'it broke' >&2; exit 5"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 5
    assert "progress" in bad.stdout and "it broke" in bad.stdout
    assert "exit status 5" in bad.stderr
    assert os.listdir(tmp_path) == [], "temporary file left behind"
    usage = subprocess.run([CRON_QUIET], capture_output=True, text=True, env=env)
    assert usage.returncode == 2 and "usage" in usage.stderr


def cron_run(testbed, tmp_path, home):
    """The copy-in crontab line, run as cron runs it (sh -c with the
    crontab's variables), /home/robot mapped to home, pointed at the test bed
    and with --jitter 0 appended (the last value wins)."""
    env, entries = crontab_entries("igwn-robot-get.crontab")
    (command,) = [cmd for _, cmd, on in entries if on]
    command = command.replace("/home/robot", str(home))
    script = str(home / "bin" / "igwn_robot_get.py")
    command = command.replace(script, "%s %s" % (script, " ".join(
        shlex.quote(a) for a in testbed.tool_args())))
    command += " --jitter 0"
    run_env = {k: v.replace("/home/robot", str(home)) for k, v in env.items()}
    # cron's PATH, with this venv's python3 (requests, gssapi) first
    run_env["PATH"] = os.path.dirname(sys.executable) + ":" + run_env["PATH"]
    run_env.update(HOME=str(home), LOGNAME="robot", KRB5_CONFIG=testbed.krb5_conf)
    return subprocess.run([run_env["SHELL"], "-c", command], env=run_env,
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL), run_env


def test_crontab_copy_in_line_runs(testbed, tmp_path):
    """The crontab line works as written: silent on success (no cron mail),
    the token at BEARER_TOKEN_FILE, a status file; silent again on the next
    run; one line on stderr and the keytab exit code when it breaks."""
    testbed.emu.reset()
    home = tmp_path / "home"
    for sub in ("bin", ".secure", "tokens"):
        (home / sub).mkdir(parents=True)
    (home / ".secure").chmod(0o700)
    shutil.copy(testbed.robot_keytab, home / ".secure" / "robot.keytab")
    (home / ".secure" / "robot.keytab").chmod(0o600)
    shutil.copy(TOOL, home / "bin" / "igwn_robot_get.py")

    proc, env = cron_run(testbed, tmp_path, home)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), proc.stderr
    token = env["BEARER_TOKEN_FILE"]
    assert stat.S_IMODE(os.stat(token).st_mode) == 0o600
    assert open(token).read().count(".") == 2
    (line,) = [cmd for _, cmd, on in crontab_entries("igwn-robot-get.crontab")[1] if on]
    status_path = option_value(shlex.split(line), "--status-file").replace(
        "/home/robot", str(home))
    with open(status_path) as handle:
        status = json.load(handle)
    assert "0" in json.dumps(status)    # an exit code is recorded
    before = testbed.emu.counters()

    again, _ = cron_run(testbed, tmp_path, home)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    after = testbed.emu.counters()
    assert sum(after.values()) == sum(before.values()), "fresh token: no Vault request"

    os.unlink(home / ".secure" / "robot.keytab")
    os.unlink(token)
    broken, _ = cron_run(testbed, tmp_path, home)
    assert broken.returncode == 3
    assert broken.stdout == ""
    lines = broken.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("igwn-robot-get: error:"), broken.stderr


@pytest.fixture
def open_tmp():
    """A temporary directory UID 1000 can traverse (pytest's tmp_path is 0700)."""
    path = tempfile.mkdtemp(prefix="igwn-deploy-")
    os.chmod(path, 0o755)   # noqa: S103 -- UID 1000 must traverse it
    try:
        yield pathlib.Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the tool as UID 1000")
@pytest.mark.parametrize("mode,expected", [(0o440, 0), (0o444, 3), (0o460, 3)])
def test_copy_in_script_with_kubernetes_keytab_modes(testbed, open_tmp, mode, expected):
    """The script as UID 1000, group 1000, with the keytab as a Secret with
    fsGroup gives it (0440 root:1000): accepted; 0444 or group-writable:
    refused with the keytab code and one line naming the fix.

    Debian's python3 (the venv's interpreter lives under /root, closed to
    UID 1000) has no gssapi, so the accepted case is followed up to the keytab
    check (-v says why it was accepted); the whole fetch as 1000:1000 with
    this keytab runs in the image, in test_k8s_rehearsal.py."""
    python = shutil.which("python3", path="/usr/bin")
    if python is None:
        pytest.skip("no /usr/bin/python3")
    tmp_path = open_tmp
    keytab = tmp_path / "keytab" / "robot.keytab"
    keytab.parent.mkdir()
    keytab.parent.chmod(0o755)
    shutil.copyfile(testbed.robot_keytab, keytab)
    os.chown(keytab, 0, 1000)
    os.chmod(keytab, mode)
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    os.chown(tokens, 0, 1000)
    os.chmod(tokens, 0o2775)  # noqa: S103 -- a PVC root as kubelet leaves it with fsGroup
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, 1000, 1000)
    env = testbed.tool_env(HOME=str(home), KRB5_KTNAME=str(keytab),
                           BEARER_TOKEN_FILE=str(tokens / "scitoken.use"))
    # a copy UID 1000 can read, as a copy-in host has (the checkout may be in /root)
    script = tmp_path / "igwn_robot_get.py"
    shutil.copy(TOOL, script)
    script.chmod(0o644)
    proc = testbed.run_tool(["-v", "--minsecs", "3600", "--vaulttokenfile", "none"], env=env,
                            python=python, script=str(script), user=1000, group=1000,
                            extra_groups=[1000], cwd=str(home))
    assert "Traceback" not in proc.stderr, proc.stderr
    if expected == 0:
        assert proc.returncode != 3, proc.stderr
        assert "accepted as a Kubernetes Secret" in proc.stderr, proc.stderr
    else:
        assert proc.returncode == 3, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1 and "keytab" in errors[0] and "chmod 600" in errors[0], \
            proc.stderr
        assert not (tokens / "scitoken.use").exists()
