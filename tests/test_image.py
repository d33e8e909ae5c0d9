"""The real image, run with podman against the test KDC and Vault emulator (issue #4).

Every run follows the container docs' examples (`--user`, `-v tokens:/tokens`,
`-v keytab:/keytab:ro`, `-e KRB5_KTNAME=/keytab`, `-e BEARER_TOKEN_FILE=...`), plus what
the test bed needs: `--network host` (the KDC and the emulator listen on 127.0.0.1), its
krb5.conf (KRB5_CONFIG) and CA mounted read-only, and `-a <vault_url> --cafile /ca.pem`.
The image is built once per session (tests/imagelib.py): skipped when it cannot be built,
failed instead in CI or with IGWN_REQUIRE_IMAGE=1.
"""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

import imagelib
import testbed as tb

pytestmark = [pytest.mark.image, pytest.mark.timeout(300)]

UID = 65534             # nobody: has a passwd entry in the image
ODD_UID = 43210         # has none
KRB5_IN = "/etc/krb5-testbed.conf"
CA_IN = "/ca.pem"
FIGURES = {}


@pytest.fixture(scope="module")
def image():
    return imagelib.ensure_image()


@pytest.fixture(scope="module", autouse=True)
def report_sizes(image):
    yield
    total, base, added = imagelib.image_sizes(image)
    if total:
        print("\nimage {}: {:.1f} MB, {:.1f} MB on top of debian:bookworm-slim ({:.1f} MB); "
              "figures: {}".format(image, total / 1e6, (added or 0) / 1e6, (base or 0) / 1e6,
                                   FIGURES))


class Robot:
    """One test's host side: a token directory and a keytab, as a user would prepare."""

    def __init__(self, bed, area, uid=UID, gid=None, keytab=None):
        self.bed = bed
        self.uid, self.gid = uid, uid if gid is None else gid
        self.tokens = os.path.join(area, "tokens")
        os.mkdir(self.tokens)
        os.chown(self.tokens, self.uid, self.gid)
        self.keytab = os.path.join(area, "robot.keytab")
        shutil.copyfile(keytab or bed.robot_keytab, self.keytab)
        os.chown(self.keytab, self.uid, self.gid)
        os.chmod(self.keytab, 0o600)
        self.user = "{}:{}".format(self.uid, self.gid)

    def volumes(self, tokens=True, keytab=True):
        out = ["{}:{}:ro".format(self.bed.krb5_conf, KRB5_IN),
               "{}:{}:ro".format(self.bed.ca_file, CA_IN)]
        if tokens:
            out.append("{}:/tokens".format(self.tokens))
        if keytab:
            out.append("{}:/keytab:ro".format(self.keytab))
        return out

    def env(self, **extra):
        env = {"KRB5_KTNAME": "/keytab", "KRB5_CONFIG": KRB5_IN}
        for key, value in extra.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def bed_args(self, vault_url=None):
        return ["-a", vault_url or self.bed.vault_url, "--cafile", CA_IN]

    def run(self, *args, user="default", env=None, volumes=None, bed_args=True, first=(),
            vault_url=None, **kw):
        """One run: FIRST (e.g. "check"), the test bed's -a/--cafile, then ARGS."""
        user = self.user if user == "default" else user
        args = list(first) + (self.bed_args(vault_url) if bed_args else []) + list(args)
        return imagelib.run_image(args, user=user,
                                  volumes=self.volumes() if volumes is None else volumes,
                                  env=self.env() if env is None else env, **kw)

    def token(self, name):
        return os.path.join(self.tokens, name)


@pytest.fixture
def robot(image, testbed, tmp_path):
    return Robot(testbed, str(tmp_path))


def one_error(proc):
    """The single error line the entrypoint or the tool printed."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("igwn-robot-get: error: "), lines[0]
    assert "Traceback" not in proc.stderr
    return lines[0]


closed_port = tb.closed_port


def files_in(directory):
    """The files a run left, without the tool's lock files."""
    return sorted(n for n in os.listdir(directory) if not n.endswith(".lock"))


def owner_mode(path):
    info = os.stat(path)
    return info.st_uid, info.st_gid, info.st_mode & 0o7777


def no_credentials_in(directory, bed, allowed):
    """No vault token or refresh token in DIRECTORY; only the ALLOWED files."""
    names = sorted(os.listdir(directory))
    assert set(names) <= set(allowed), names
    secrets = [s for s in bed.emu.secrets() if s]
    for name in names:
        with open(os.path.join(directory, name)) as handle:
            text = handle.read()
        for secret in secrets:
            if secret in text:
                assert name.endswith(".use") or name.startswith("bt_u"), name
                assert tb.jwt_claims(secret)  # only the bearer token, a JWT


# -- the image itself -------------------------------------------------------------------

def test_image_metadata(image):
    proc = subprocess.run(imagelib.podman_cmd("image", "inspect", image), capture_output=True,
                          text=True, check=True)
    info = json.loads(proc.stdout)[0]
    config = info["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/usr/local/bin/entrypoint.sh"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert "BEARER_TOKEN_FILE" not in env
    assert env["HOME"] == "/tmp"
    assert env["IGWN_ROBOT_GET_IMAGE"]
    with open(os.path.join(imagelib.REPO, "igwn_robot_get.py")) as handle:
        version = re.search(r'^__version__ = "(.*)"$', handle.read(), re.M).group(1)
    assert config["Labels"]["org.opencontainers.image.version"] == version
    assert config["Labels"]["org.opencontainers.image.title"] == "igwn-robot-get"
    health = info.get("Healthcheck") or config.get("Healthcheck") or {}
    assert "--show" in health.get("Test", []), info.get("Config")


def test_image_contents(image):
    script = r"""
set -e
stat -c '%a %u:%g' /tokens
for c in gcc cc make pip pip3 g++; do command -v "$c" && exit 1; done
python3 -c 'import pip' 2>/dev/null && exit 2
dpkg-query -W -f '${Package}\n' |\
  grep -E -- '-dev$|^(gcc|g\+\+|cpp)(-[0-9]+)?$|^build-ess' && exit 3
test -z "$(ls /var/lib/apt/lists | grep -v -x -e lock -e partial)" || exit 4
# the tool needs gssapi and the standard library only
python3 -c 'import requests' 2>/dev/null && exit 5
python3 -I -c 'import gssapi, igwn_robot_get; print("imports ok")'
igwn-robot-get --version
echo "bash $BASH_VERSION"
"""
    proc = imagelib.run_image(["-c", script], entrypoint="/bin/bash", network="none")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "1777 10001:10001"
    assert "imports ok" in proc.stdout
    assert proc.stdout.count("igwn-robot-get") == 1


# -- the seed's examples -------------------------------------------------------------------

def test_basic_usage(robot, testbed):
    """The seed's basic usage: a 0600 token owned by the mapped UID at BEARER_TOKEN_FILE."""
    env = robot.env(BEARER_TOKEN_FILE="/tokens/scitoken.use")
    started = time.monotonic()
    proc = robot.run(env=env)
    FIGURES["first_run_s"] = round(time.monotonic() - started, 2)
    assert proc.returncode == 0, proc.stderr
    token = robot.token("scitoken.use")
    assert owner_mode(token) == (UID, UID, 0o600)
    with open(token) as handle:
        claims = tb.jwt_claims(handle.read())
    assert claims["sub"] == "robot/ci.ligo.org"
    assert claims["exp"] > time.time() + 3600
    # the vault token stays in the container's /tmp, out of the shared volume
    no_credentials_in(robot.tokens, testbed, {"scitoken.use", "scitoken.use.lock"})
    # a second run finds the token fresh: no request to Vault
    testbed.emu.reset()
    started = time.monotonic()
    again = robot.run(env=env)
    FIGURES["fresh_run_s"] = round(time.monotonic() - started, 2)
    assert again.returncode == 0, again.stderr
    assert testbed.emu.total() == 0


def test_default_token_file_for_any_uid(image, testbed, tmp_path):
    """Without BEARER_TOKEN_FILE the token lands at /tokens/bt_u<uid>; no passwd entry."""
    robot = Robot(testbed, str(tmp_path), uid=ODD_UID)
    proc = robot.run()
    assert proc.returncode == 0, proc.stderr
    assert owner_mode(robot.token("bt_u{}".format(ODD_UID))) == (ODD_UID, ODD_UID, 0o600)
    no_credentials_in(robot.tokens, testbed,
                      {"bt_u{}".format(ODD_UID), "bt_u{}.lock".format(ODD_UID)})


def test_advanced_options_reach_the_tool(robot, testbed):
    proc = robot.run("--minsecs", "3600", "--audience", "https://my-service.example.org",
                     "--scopes", "read:/data")
    assert proc.returncode == 0, proc.stderr
    counters = testbed.emu.counters()
    assert counters["sts_read"] == 1 and counters["creds_read"] == 0, counters
    with open(robot.token("bt_u{}".format(UID))) as handle:
        claims = tb.jwt_claims(handle.read())
    aud = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    assert aud == ["https://my-service.example.org"], claims
    assert claims["scope"] == "read:/data", claims


def test_vault_token_cached_in_a_private_directory(robot, testbed, tmp_path):
    """The README's note: --vaulttokenfile in a private mount, outside /tokens."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chown(private, UID, UID)
    volumes = robot.volumes() + ["{}:/private".format(private)]
    first = robot.run("--vaulttokenfile", "/private/vt", volumes=volumes)
    assert first.returncode == 0, first.stderr
    assert owner_mode(str(private / "vt")) == (UID, UID, 0o600)
    os.unlink(robot.token("bt_u{}".format(UID)))
    before = testbed.emu.counters()
    second = robot.run("--vaulttokenfile", "/private/vt", volumes=volumes)
    assert second.returncode == 0, second.stderr
    after = testbed.emu.counters()
    assert sum(after.values()) - sum(before.values()) == 1, (before, after)
    assert after["kerberos_login"] == before["kerberos_login"]
    no_credentials_in(robot.tokens, testbed, {"bt_u{}".format(UID), "bt_u{}.lock".format(UID)})


def test_show_and_healthcheck(robot, testbed):
    assert robot.run().returncode == 0
    show = robot.run("--show", bed_args=False, volumes=robot.volumes(keytab=False),
                     env=robot.env(KRB5_KTNAME=None))
    assert show.returncode == 0, show.stderr
    assert "robot/ci.ligo.org" in show.stdout + show.stderr
    expiring = robot.run("--show", "-q", "--minsecs", "99999", bed_args=False)
    assert expiring.returncode == 11
    # the image's HEALTHCHECK, run by podman in a running container
    name = imagelib.unique_name()
    subprocess.run(imagelib.podman_cmd(*imagelib.run_args(
        ["infinity"], user=robot.user, volumes=robot.volumes(), entrypoint="sleep", name=name,
        healthcheck=True, extra=["-d"])), capture_output=True, check=True)
    try:
        healthy = subprocess.run(imagelib.podman_cmd("healthcheck", "run", name),
                                 capture_output=True, text=True, check=False)
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        os.unlink(robot.token("bt_u{}".format(UID)))
        unhealthy = subprocess.run(imagelib.podman_cmd("healthcheck", "run", name),
                                   capture_output=True, text=True, check=False)
        assert unhealthy.returncode != 0
    finally:
        subprocess.run(imagelib.podman_cmd("rm", "-f", "-t", "0", name), capture_output=True,
                       check=False)


def test_entrypoint_bash_gives_a_shell(robot):
    proc = robot.run("-c", 'id -u; echo "$HOME"; ls -d /tokens /keytab; igwn-robot-get -V',
                     entrypoint="/bin/bash", bed_args=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:4] == [str(UID), "/tmp", "/keytab", "/tokens"]
    # -it: a real terminal (script gives podman one)
    tty = robot.run("-c", "tty; echo shell-ok", entrypoint="/bin/bash", bed_args=False,
                    tty=True)
    assert tty.returncode == 0, tty.stdout
    assert "/dev/pts/" in tty.stdout and "shell-ok" in tty.stdout


def test_check_mode_without_fetch(robot, testbed):
    proc = robot.run(first=["check"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    states = [line.split()[:2] for line in proc.stdout.splitlines()]
    assert states == [["ok", "condor"], ["ok", "uid_mapping"], ["ok", "keytab"],
                      ["ok", "token_dir"], ["ok", "network"]], proc.stdout
    assert not files_in(robot.tokens)
    counters = testbed.emu.counters()
    assert sum(counters.values()) == 0, counters


# -- troubleshooting: each case gives its message and code -----------------------------------

def test_no_user(robot):
    """No --user: the image's default user 10001, but /tokens belongs to the host user."""
    proc = robot.run(user=None)
    assert proc.returncode == 20
    line = one_error(proc)
    assert "--user $(id -u):$(id -g)" in line and "10001" in line
    assert "belongs to {0}:{0}".format(UID) in line
    assert not files_in(robot.tokens)


def test_root_refused_unless_meant(robot):
    proc = robot.run(user="0:0")
    assert proc.returncode == 20
    assert "--user $(id -u):$(id -g)" in one_error(proc)
    meant = robot.run(user="0:0", env=robot.env(IGWN_ROBOT_GET_ALLOW_ROOT="1"))
    assert meant.returncode == 0, meant.stderr
    assert owner_mode(robot.token("bt_u0"))[::2] == (0, 0o600)


def test_keytab_not_mounted(robot):
    proc = robot.run(volumes=robot.volumes(keytab=False))
    assert proc.returncode == 3
    line = one_error(proc)
    assert "keytab /keytab not found" in line and "-v /path/to/robot.keytab:/keytab:ro" in line


def test_keytab_variable_unset(robot):
    proc = robot.run(env=robot.env(KRB5_KTNAME=None))
    assert proc.returncode == 3
    assert "KRB5_KTNAME is not set" in one_error(proc)


def test_keytab_is_a_directory(robot, tmp_path):
    # what docker does when the host path given to -v does not exist
    empty = tmp_path / "missing.keytab"
    empty.mkdir()
    volumes = robot.volumes(keytab=False) + ["{}:/keytab:ro".format(empty)]
    proc = robot.run(volumes=volumes)
    assert proc.returncode == 3
    line = one_error(proc)
    assert "is a directory" in line and "docker created an empty directory" in line


def test_keytab_unreadable(robot):
    os.chown(robot.keytab, 0, 0)
    proc = robot.run()
    assert proc.returncode == 3
    line = one_error(proc)
    assert "not readable" in line
    assert "mode 0600, owner 0:0, we are {0}:{0}".format(UID) in line


def test_keytab_unsafe(robot):
    os.chmod(robot.keytab, 0o644)
    proc = robot.run()
    assert proc.returncode == 3
    assert "chmod 600" in one_error(proc)


def test_tokens_not_writable(robot):
    os.chown(robot.tokens, 0, 0)
    os.chmod(robot.tokens, 0o755)  # noqa: S103 -- a directory others cannot write
    proc = robot.run()
    assert proc.returncode == 8
    line = one_error(proc)
    assert "/tokens" in line and "owner 0:0, mode 0755" in line
    assert "chown {0}:{0} /path/to/tokens".format(UID) in line
    assert not files_in(robot.tokens)


def test_tokens_read_only(robot):
    volumes = [v + ":ro" if v.endswith(":/tokens") else v for v in robot.volumes()]
    proc = robot.run(volumes=volumes)
    assert proc.returncode == 8
    assert "read-only" in one_error(proc)


def test_tokens_not_mounted(robot):
    """Nothing mounted at /tokens: the token would vanish with the container."""
    proc = robot.run(volumes=robot.volumes(tokens=False))
    assert proc.returncode == 8
    assert "/tokens is not a mounted volume" in one_error(proc)


def test_tokens_not_mounted_elsewhere(robot):
    proc = robot.run(env=robot.env(BEARER_TOKEN_FILE="/data/scitoken.use"))
    assert proc.returncode == 8
    assert "/data does not exist" in one_error(proc)


def test_vault_unreachable(robot, testbed):
    started = time.monotonic()
    proc = robot.run(vault_url="https://localhost:{}".format(closed_port()))
    elapsed = time.monotonic() - started
    assert proc.returncode == 5
    line = one_error(proc)
    assert "cannot reach Vault" in line and "outbound HTTPS" in line
    assert elapsed < 10
    assert not files_in(robot.tokens)


def test_first_use_without_it(image, testbed, tmp_path):
    robot = Robot(testbed, str(tmp_path), keytab=testbed.other_keytab)
    proc = robot.run()
    assert proc.returncode == 7
    line = [x for x in proc.stderr.splitlines() if "error:" in x][-1]
    assert "docker run" in line and "-it" in line and imagelib.IMAGE in line, line
    assert testbed.emu.counters()["auth_url"] == 0
    assert not files_in(robot.tokens)


def test_condor_refused(robot):
    proc = robot.run("--condor")
    assert proc.returncode == 12
    assert "install igwn-robot-get on the host" in one_error(proc)


# -- signals and the first-use flow ---------------------------------------------------------

def test_sigterm_stops_a_run_within_a_second(robot, testbed):
    """docker stop: the tool (PID 1 after exec) ends on SIGTERM, and keeps the old token."""
    testbed.emu.fault("kerberos_login", delay=60)
    name = imagelib.unique_name()
    cmd = imagelib.podman_cmd(*imagelib.run_args(
        robot.bed_args(), user=robot.user, volumes=robot.volumes(), env=robot.env(),
        name=name))
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while testbed.emu.counters()["kerberos_login"] < 1:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never reached Vault"
            time.sleep(0.1)
        time.sleep(0.3)
        started = time.monotonic()
        subprocess.run(imagelib.podman_cmd("kill", "--signal", "TERM", name),
                       capture_output=True, check=True)
        out, err = proc.communicate(timeout=20)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(imagelib.podman_cmd("rm", "-f", "-t", "0", name), capture_output=True,
                       check=False)
    FIGURES["sigterm_s"] = round(elapsed, 2)
    assert proc.returncode == 143, err
    assert elapsed < 1.0, elapsed
    assert "SIGTERM" in err
    assert not files_in(robot.tokens)


def test_first_use_with_it_completes(image, testbed, tmp_path):
    """`docker run -it` at a pseudo-terminal: the OIDC device flow, then a token."""
    pexpect = pytest.importorskip("pexpect")
    testbed.emu.config(device={"approve_after_polls": 1, "poll_interval": "1"})
    robot = Robot(testbed, str(tmp_path), keytab=testbed.other_keytab)
    child = imagelib.spawn_image(robot.bed_args(), user=robot.user, volumes=robot.volumes(),
                                 env=robot.env(), timeout=90)
    try:
        child.expect(r"https://\S+", timeout=60)
        child.expect(pexpect.EOF, timeout=60)
    finally:
        child.close(force=True)
    out = (child.before or "")
    assert child.exitstatus == 0, out
    token = robot.token("bt_u{}".format(UID))
    assert owner_mode(token) == (UID, UID, 0o600)
    counters = testbed.emu.counters()
    assert counters["auth_url"] == 1 and counters["creds_write"] == 1, counters
    # later runs need no human
    os.unlink(token)
    again = robot.run()
    assert again.returncode == 0, again.stderr
