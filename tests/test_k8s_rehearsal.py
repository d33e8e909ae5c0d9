"""Rehearse the deployments with the real image: the Kubernetes CronJob
(issue #5 item 4), the docker run crontab line and the Docker Compose set-up.

The image runs the way deploy/kubernetes/cronjob.yaml makes the kubelet run
it, with every value read from that manifest:

- read-only root filesystem (`readOnlyRootFilesystem`), a tmpfs at /tmp (the
  emptyDir) and nothing else writable;
- numeric `runAsUser:runAsGroup`, the `fsGroup` as a supplementary group, no
  capabilities, no privilege escalation;
- the keytab as kubelet mounts a Secret with mode 0400 and an fsGroup: a
  read-only volume holding a timestamped directory, a `..data` symlink and a
  `robot.keytab` symlink to `..data/robot.keytab`, the file itself mode 0440
  owned by root:fsGroup (kubernetes/kubernetes#57923); KRB5_KTNAME names the
  volume's directory, as the manifest does;
- the token volume as kubelet leaves a PVC root with fsGroup: root:fsGroup,
  mode 2775;
- the manifest's environment and args.

First the initContainer (`entrypoint.sh check` with the job's options: the
entrypoint's checks, then the tool's --check), then the job itself, against
the test KDC and Vault emulator on the host network (the test bed's
krb5.conf, CA and Vault URL are the only additions). Both must pass, and the
Deployment's reader (another UID, in the fsGroup) must be able to read the
token; with the keytab unreadable (0400 root:root, what the Secret gives
without fsGroup), world-readable (0444) or the token volume not writable, the
check step must fail with its message and exit code.
"""

import os
import shlex
import shutil
import stat
import subprocess
import tempfile
import time

import pytest
import yaml

import imagelib

pytestmark = pytest.mark.image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRONJOB = os.path.join(REPO, "deploy", "kubernetes", "cronjob.yaml")
DEPLOYMENT = os.path.join(REPO, "deploy", "kubernetes", "deployment.yaml")
CHECKS = ["uid_mapping", "keytab_mount", "token_volume",   # entrypoint.sh
          "keytab", "token_file", "vault"]                 # the tool's --check
SECRET_STAMP = "..2025_01_01_00_00_00.000000000"
# The tool itself, as the image's HEALTHCHECK runs it (no entrypoint checks: a reader
# mounts the token volume read-only).
TOOL_IN_IMAGE = "/usr/local/bin/igwn-robot-get"
# Where the test bed's files appear inside the container.
BED_DIR = "/etc/testbed"


def load_pod():
    with open(CRONJOB) as handle:
        cron = yaml.safe_load(handle)
    return cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def load_reader():
    with open(DEPLOYMENT) as handle:
        return yaml.safe_load(handle)["spec"]["template"]["spec"]


class Pod:
    """The CronJob's pod, played by podman with the manifest's settings."""

    def __init__(self, image, testbed, workdir, fs_group=None):
        pod = load_pod()
        self.image = image
        self.testbed = testbed
        self.workdir = workdir
        sc = pod["securityContext"]
        self.uid, self.gid = sc["runAsUser"], sc["runAsGroup"]
        self.fs_group = sc["fsGroup"] if fs_group is None else fs_group
        (self.init,) = pod["initContainers"]
        (self.main,) = pod["containers"]
        for container in (self.init, self.main):
            csc = container["securityContext"]
            assert csc["readOnlyRootFilesystem"] and csc["capabilities"]["drop"] == ["ALL"]
            assert csc["allowPrivilegeEscalation"] is False
        self.volumes = {v["name"]: v for v in pod["volumes"]}
        self.env = {e["name"]: e["value"] for e in self.main["env"]}
        self.host_dirs = {}
        for mount in self.main["volumeMounts"]:
            volume = self.volumes[mount["name"]]
            if "secret" in volume:
                self.keytab_mount = mount["mountPath"]
                self.host_dirs[mount["mountPath"]] = self.make_secret(volume["secret"])
            elif "persistentVolumeClaim" in volume:
                self.token_mount = mount["mountPath"]
                self.host_dirs[mount["mountPath"]] = self.make_pvc()
            elif "emptyDir" in volume:
                self.tmp_mounts = getattr(self, "tmp_mounts", []) + [mount["mountPath"]]
        self.readonly = {m["mountPath"] for m in self.main["volumeMounts"] if m.get("readOnly")}

    # -- the volumes, as kubelet prepares them

    def make_secret(self, secret):
        """A Secret volume: timestamped dir, ..data, per-key symlinks."""
        root = os.path.join(self.workdir, "secret-volume")
        stamp = os.path.join(root, SECRET_STAMP)
        os.makedirs(stamp)
        for item in secret["items"]:
            assert item["key"] == "robot.keytab"
            target = os.path.join(stamp, item["path"])
            shutil.copyfile(self.testbed.robot_keytab, target)
            mode = item.get("mode", secret.get("defaultMode", 0o644))
            # fsGroup: kubelet chowns to root:fsGroup and adds group read (#57923)
            os.chown(target, 0, self.fs_group)
            os.chmod(target, mode | 0o040)
            os.symlink(os.path.join("..data", item["path"]), os.path.join(root, item["path"]))
        os.symlink(SECRET_STAMP, os.path.join(root, "..data"))
        os.chown(stamp, 0, self.fs_group)
        os.chmod(stamp, 0o2755)  # noqa: S103 -- as kubelet makes it
        os.chown(root, 0, self.fs_group)
        os.chmod(root, 0o3777)  # noqa: S103 -- the volume's tmpfs root: sticky, setgid
        self.keytab_file = os.path.join(stamp, secret["items"][0]["path"])
        return root

    def make_pvc(self):
        """The PVC's root after kubelet applied fsGroup: root:fsGroup, 2775."""
        root = os.path.join(self.workdir, "pvc")
        os.makedirs(root)
        os.chown(root, 0, self.fs_group)
        os.chmod(root, 0o2775)  # noqa: S103 -- fsGroup's group-writable PVC root
        self.token_dir = root
        return root

    # -- running a container of the pod

    def podman_options(self):
        """user, volumes, env and the other `podman run` options of the pod."""
        extra = ["--read-only", "--read-only-tmpfs=false",
                 "--group-add", str(self.fs_group),
                 "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                 # the kubelet ignores the image's HEALTHCHECK (and podman
                 # would need systemd to run it)
                 "--no-healthcheck"]
        for path in self.tmp_mounts:
            extra += ["--tmpfs", "%s:rw,nosuid,nodev,size=16m,mode=1777" % path]
        volumes = ["%s:%s%s" % (host, path, ":ro" if path in self.readonly else "")
                   for path, host in self.host_dirs.items()]
        # the test bed: its krb5.conf (KDC on 127.0.0.1) and CA, read-only
        volumes += ["%s:%s/krb5.conf:ro" % (self.testbed.krb5_conf, BED_DIR),
                    "%s:%s/ca.pem:ro" % (self.testbed.ca_file, BED_DIR)]
        env = dict(self.env, KRB5_CONFIG="%s/krb5.conf" % BED_DIR)
        return {"user": "%d:%d" % (self.uid, self.gid), "volumes": volumes, "env": env,
                "network": "host", "extra": extra, "image": self.image}

    def bed_args(self):
        return ["-a", self.testbed.vault_url, "--cafile", "%s/ca.pem" % BED_DIR]

    def run(self, container):
        """Run the init container ("check") or the job, with the manifest's
        args plus the test bed's Vault URL and CA."""
        args = list(container["args"]) + self.bed_args()
        return imagelib.run_image(args, timeout=120, **self.podman_options())

    def run_as(self, uid, gid, groups, args, entrypoint=None):
        """A container of another pod on the same volumes (read-only), e.g. the
        Deployment's reader: UID:GID with supplementary GROUPS."""
        volumes = ["%s:%s:ro" % (host, path) for path, host in self.host_dirs.items()]
        extra = ["--read-only", "--cap-drop", "ALL", "--no-healthcheck"]
        for group in groups:
            extra += ["--group-add", str(group)]
        return imagelib.run_image(args, user="%d:%d" % (uid, gid), volumes=volumes,
                                  env={"BEARER_TOKEN_FILE": self.env["BEARER_TOKEN_FILE"]},
                                  network="none", entrypoint=entrypoint, extra=extra,
                                  image=self.image, timeout=60)

    def check(self):
        return self.run(self.init)

    def job(self):
        return self.run(self.main)

    def token_path(self):
        token = self.env["BEARER_TOKEN_FILE"]
        assert os.path.dirname(token) == self.token_mount
        return os.path.join(self.token_dir, os.path.basename(token))


@pytest.fixture(scope="module")
def image():
    return imagelib.ensure_image()


def output(proc):
    return "stdout:\n%s\nstderr:\n%s" % (proc.stdout, proc.stderr)


@pytest.mark.parametrize("fs_group", [None, 4242], ids=["manifest", "distinct-fsgroup"])
def test_cronjob_rehearsal_passes(image, testbed, tmp_path, fs_group):
    """check, then the job: both pass; the token is the job UID's and the
    fsGroup's, 0640, in the token volume, alone with its lock (no vault token
    there)."""
    pod = Pod(image, testbed, str(tmp_path), fs_group=fs_group)
    # the keytab as the job sees it: 0440 root:fsGroup through two symlinks
    info = os.stat(pod.keytab_file)
    assert stat.S_IMODE(info.st_mode) == 0o440 and (info.st_uid, info.st_gid) == (0, pod.fs_group)

    check = pod.check()
    assert check.returncode == 0, output(check)
    assert [line.split()[:2] for line in check.stdout.splitlines()] == [
        ["ok", name] for name in CHECKS], output(check)
    # the tool found the one keytab in the Secret volume's directory
    (keytab_line,) = [line for line in check.stdout.splitlines() if line.split()[1] == "keytab"]
    assert "robot.keytab" in keytab_line, output(check)
    assert os.listdir(pod.token_dir) == [], "check must fetch nothing"
    assert testbed.emu.counters().get("kerberos_login", 0) == 0

    job = pod.job()
    assert job.returncode == 0, output(job)
    assert job.stdout == "" and job.stderr == "", output(job)
    token = pod.token_path()
    info = os.stat(token)
    # --mode 0640: the job's UID, the volume's group (the fsGroup)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (
        pod.uid, pod.fs_group, 0o640)
    assert sorted(os.listdir(pod.token_dir)) == sorted(
        [os.path.basename(token), os.path.basename(token) + ".lock"])
    counters = testbed.emu.counters()
    assert counters.get("kerberos_login") == 1
    # --vaulttokenfile none: no vault token minted for a cache that dies with the pod
    assert counters.get("token_create", 0) == 0

    # the job's own UID sees it with --show (decodes it, time left; no fetch)
    show = pod.run_as(pod.uid, pod.gid, [pod.fs_group], ["--show"], entrypoint=TOOL_IN_IMAGE)
    assert show.returncode == 0, output(show)
    assert "time left:" in show.stdout, output(show)

    # the next hour: the token is still fresh, the job does nothing
    before = sum(testbed.emu.counters().values())
    again = pod.job()
    assert again.returncode == 0, output(again)
    assert sum(testbed.emu.counters().values()) == before


def test_deployment_reader_rehearsal(image, testbed, tmp_path):
    """The Deployment's reader (another UID, the fsGroup among its
    supplementalGroups) reads the job's 0640 token, and its readiness probe
    (`--show --minsecs 300`) passes; a UID outside the group cannot read it."""
    pod = Pod(image, testbed, str(tmp_path))
    assert pod.job().returncode == 0
    token = pod.env["BEARER_TOKEN_FILE"]
    reader = load_reader()
    (app,) = reader["containers"]
    sc = reader["securityContext"]
    uid, gid, groups = sc["runAsUser"], sc["runAsGroup"], sc["supplementalGroups"]
    assert uid != pod.uid and pod.fs_group in groups
    read = pod.run_as(uid, gid, groups, [token], entrypoint="cat")
    assert read.returncode == 0, output(read)
    assert read.stdout.count(".") == 2     # a JWT (never printed by the test)
    outsider = pod.run_as(uid, gid, [], [token], entrypoint="cat")
    assert outsider.returncode != 0 and "Permission denied" in outsider.stderr
    # the probe, with the image's igwn-robot-get in place of the ConfigMap's copy
    probe = app["readinessProbe"]["exec"]["command"]
    assert probe[1].endswith("/igwn_robot_get.py")
    ready = pod.run_as(uid, gid, groups, probe[2:], entrypoint=TOOL_IN_IMAGE)
    assert ready.returncode == 0, output(ready)


BROKEN = {
    # (what, how to break the volume, exit code, words the message must have)
    "keytab-unreadable": ("keytab", lambda pod: (os.chown(pod.keytab_file, 0, 0),
                                                 os.chmod(pod.keytab_file, 0o400)),
                          3, ["not readable"]),
    "keytab-world-readable": ("keytab", lambda pod: os.chmod(pod.keytab_file, 0o444),
                              3, ["readable or writable by others", "chmod 600"]),
    "token-volume-not-writable": ("token_volume", lambda pod: (
        os.chown(pod.token_dir, 0, 0), os.chmod(pod.token_dir, 0o755)),  # noqa: S103
        8, ["cannot create files", "chown"]),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_cronjob_rehearsal_check_fails(image, testbed, tmp_path, case):
    """A broken pod fails in the initContainer, with the problem and the fix
    in its output and the class's exit code, before anything is fetched."""
    check_name, breakage, code, words = BROKEN[case]
    pod = Pod(image, testbed, str(tmp_path))
    breakage(pod)
    check = pod.check()
    assert check.returncode == code, output(check)
    # the first failure is this case's (a later check may fail for the same cause)
    failed = [line for line in check.stdout.splitlines() if line.startswith("FAIL")][0]
    assert failed.split()[1] == check_name and "(exit %d)" % code in failed, output(check)
    assert [line.split()[1] for line in check.stdout.splitlines()] == CHECKS, output(check)
    for word in words:
        assert word in failed, output(check)
    assert testbed.emu.counters().get("kerberos_login", 0) == 0
    assert not os.path.exists(pod.token_path())


# -- the docker crontab line (deploy/cron/docker.crontab) -----------------------------

ROBOT_UID = 1000
SHIM_DOCKER = """#!/bin/sh
# test shim: docker -> podman with this machine's configuration, on the host network
# (the test bed listens on loopback) with the test bed's krb5.conf and CA
if [ "$1" = run ]; then
    shift
    exec {podman} run --network=host --no-healthcheck --pull=never \\
        -v {krb5}:{bed}/krb5.conf:ro -v {ca}:{bed}/ca.pem:ro -e KRB5_CONFIG={bed}/krb5.conf "$@"
fi
exec {podman} "$@"
"""
SHIM_ID = """#!/bin/sh
# test shim: cron runs the line as the robot's user, UID/GID {uid}
case "$1" in -u|-g) echo {uid} ;; *) exec /usr/bin/id "$@" ;; esac
"""


@pytest.fixture
def robot_home():
    """/home/robot for the crontab line: tokens and keytab owned by the robot."""
    path = tempfile.mkdtemp(prefix="igwn-cron-")
    os.chmod(path, 0o755)  # noqa: S103 -- the robot's UID must traverse it
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_docker_crontab_line_rehearsal(image, testbed, robot_home, tmp_path):
    """The docker run line of deploy/cron/docker.crontab, run by sh as cron
    would (docker played by podman, the robot's `id` by a shim): silent on
    success, the token 0600 and the robot's; a broken keytab makes it loud,
    with the tool's one line and the exit status."""
    from test_deploy import crontab_entries

    env, entries = crontab_entries("docker.crontab")
    (line,) = [cmd for _, cmd, active in entries if active]
    assert " igwn-robot-get:latest " in line
    home = robot_home
    for sub in ("bin", ".secure", "tokens"):
        os.makedirs(os.path.join(home, sub))
    shutil.copy(os.path.join(REPO, "deploy", "cron", "cron-quiet"), os.path.join(home, "bin"))
    keytab = os.path.join(home, ".secure", "robot.keytab")
    shutil.copyfile(testbed.robot_keytab, keytab)
    os.chmod(keytab, 0o600)
    for path in (keytab, os.path.join(home, "tokens")):
        os.chown(path, ROBOT_UID, ROBOT_UID)

    shims = tmp_path / "shims"
    shims.mkdir()
    podman = " ".join(shlex.quote(part) for part in imagelib.podman_cmd())
    (shims / "docker").write_text(SHIM_DOCKER.format(
        podman=podman, krb5=shlex.quote(testbed.krb5_conf), ca=shlex.quote(testbed.ca_file),
        bed=BED_DIR))
    (shims / "id").write_text(SHIM_ID.format(uid=ROBOT_UID))
    for shim in ("docker", "id"):
        (shims / shim).chmod(0o755)

    command = line.replace("/home/robot", home).replace(
        " igwn-robot-get:latest ", " %s " % image)
    command += " -a %s --cafile %s/ca.pem --jitter 0" % (testbed.vault_url, BED_DIR)
    run_env = {k: v.replace("/home/robot", home) for k, v in env.items()}
    run_env.update(PATH="%s:%s" % (shims, run_env["PATH"]), HOME=home, TMPDIR=str(tmp_path))

    def cron():
        return subprocess.run([run_env["SHELL"], "-c", command], env=run_env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=180)

    ok = cron()
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", ""), output(ok)
    token = os.path.join(home, "tokens", "scitoken.use")
    info = os.stat(token)
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (ROBOT_UID, 0o600)
    assert testbed.emu.counters().get("token_create", 0) == 0   # --vaulttokenfile none

    os.unlink(token)
    os.chmod(keytab, 0o644)
    bad = cron()
    assert bad.returncode == 3, output(bad)
    assert "keytab" in bad.stdout and "chmod 600" in bad.stdout, output(bad)
    assert "exit status 3" in bad.stderr
    assert not os.path.exists(token)


# -- Docker Compose (deploy/compose/) through podman's Docker API --------------------

SHIM_COMPOSE = """#!/bin/sh
# test shim: `docker compose` (v2) -> Debian's docker-compose 1.29, talking to podman's
# Docker-compatible API (DOCKER_HOST); anything else is podman
if [ "$1" = compose ]; then
    shift
    exec docker-compose "$@"
fi
exec {podman} "$@"
"""


@pytest.fixture
def docker_api(tmp_path):
    """podman's Docker-compatible API on a private socket, for docker-compose."""
    if not shutil.which("docker-compose"):
        pytest.skip("docker-compose not installed (scripts/bootstrap.sh installs it)")
    sock = tmp_path / "podman.sock"
    proc = subprocess.Popen(imagelib.podman_cmd("system", "service", "--time=0",
                                                "unix://%s" % sock),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("podman system service did not start")
            time.sleep(0.1)
        yield "unix://%s" % sock
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_compose_cron_line_rehearsal(image, testbed, robot_home, tmp_path, docker_api):
    """deploy/compose as a user sets it up (README commands), driven by the
    compose line of deploy/cron/docker.crontab: quiet on success, the token
    the user's and 0600; `run ... token-generator --show` sees it; a broken
    keytab makes the line loud with exit 3. A test-only override file adds
    what the test bed needs (host network, its krb5.conf, CA and Vault URL)."""
    from test_deploy import crontab_entries

    project = os.path.join(robot_home, "igwn-compose")
    os.makedirs(os.path.join(project, "tokens"))
    shutil.copy(os.path.join(REPO, "deploy", "compose", "compose.yaml"), project)
    with open(os.path.join(REPO, "deploy", "compose", ".env.example")) as handle:
        dotenv = handle.read() + "UID=%d\nGID=%d\n" % (ROBOT_UID, ROBOT_UID)
    with open(os.path.join(project, ".env"), "w") as handle:
        handle.write(dotenv)
    keytab = os.path.join(project, "robot.keytab")
    shutil.copyfile(testbed.robot_keytab, keytab)
    os.chmod(keytab, 0o600)
    for path in (keytab, os.path.join(project, "tokens")):
        os.chown(path, ROBOT_UID, ROBOT_UID)
    os.makedirs(os.path.join(robot_home, "bin"))
    shutil.copy(os.path.join(REPO, "deploy", "cron", "cron-quiet"),
                os.path.join(robot_home, "bin"))

    with open(os.path.join(project, "compose.yaml")) as handle:
        command = yaml.safe_load(handle)["services"]["token-generator"]["command"]
    override = {"services": {"token-generator": {
        "image": image,
        "network_mode": "host",
        "volumes": ["%s:%s/krb5.conf:ro" % (testbed.krb5_conf, BED_DIR),
                    "%s:%s/ca.pem:ro" % (testbed.ca_file, BED_DIR)],
        "environment": {"KRB5_CONFIG": "%s/krb5.conf" % BED_DIR},
        "command": command + ["-a", testbed.vault_url, "--cafile", "%s/ca.pem" % BED_DIR],
    }}}
    with open(os.path.join(project, "test-override.yaml"), "w") as handle:
        yaml.safe_dump(override, handle)

    shims = tmp_path / "shims"
    shims.mkdir()
    podman = " ".join(shlex.quote(part) for part in imagelib.podman_cmd())
    (shims / "docker").write_text(SHIM_COMPOSE.format(podman=podman))
    (shims / "docker").chmod(0o755)

    env, entries = crontab_entries("docker.crontab")
    (line,) = [cmd for _, cmd, _ in entries if "compose" in cmd]
    line = line.replace("/home/robot", robot_home)
    run_env = {k: v.replace("/home/robot", robot_home) for k, v in env.items()}
    run_env.update(PATH="%s:%s" % (shims, run_env["PATH"]), HOME=robot_home,
                   TMPDIR=str(tmp_path), DOCKER_HOST=docker_api,
                   COMPOSE_FILE="compose.yaml:test-override.yaml",
                   COMPOSE_PROJECT_NAME="igwn-deploy-test-%d" % os.getpid())

    def sh(command):
        return subprocess.run([run_env["SHELL"], "-c", command], env=run_env, cwd=project,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=300)

    try:
        ok = sh(line)
        assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", ""), output(ok)
        token = os.path.join(project, "tokens", "scitoken.use")
        info = os.stat(token)
        # --mode 0640: the user's, and the token directory's group (GID)
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (
            ROBOT_UID, ROBOT_UID, 0o640)

        # my-app: another UID, with group_add GID, reads it (read-only mount)
        def read_as(*extra):
            return imagelib.run_image(
                ["/app/tokens/scitoken.use"], user="4321:4321", entrypoint="cat",
                volumes=["%s:/app/tokens:ro" % os.path.join(project, "tokens")],
                network="none", extra=list(extra), image=image)
        reader = read_as("--group-add", str(ROBOT_UID))
        assert reader.returncode == 0 and reader.stdout.count(".") == 2, output(reader)
        assert read_as().returncode != 0, "a UID outside the group must not read it"

        # the README's "see that it worked"
        show = sh("docker compose --profile token-gen run --rm -T token-generator --show")
        assert show.returncode == 0, output(show)
        assert "time left:" in show.stdout and "exp:" in show.stdout, output(show)

        os.unlink(token)
        os.chmod(keytab, 0o644)
        bad = sh(line)
        assert bad.returncode == 3, output(bad)
        assert "keytab" in bad.stdout and "chmod 600" in bad.stdout, output(bad)
        assert not os.path.exists(token)
    finally:
        sh("docker compose --profile token-gen down --remove-orphans")
