"""The real image, built and run with podman against the test KDC and Vault emulator.

Every run follows the container docs' examples (`--user`, `-v tokens:/tokens`,
`-v keytab:/keytab:ro`, `-e KRB5_KTNAME=/keytab`, `-e BEARER_TOKEN_FILE=...`), plus what
the test bed needs: `--network host` (the KDC, the emulator and the proxy listen on
127.0.0.1), its krb5.conf (KRB5_CONFIG) and CA mounted read-only, and
`-a <vault_url> --cafile /ca.pem`. The image is built once per session
(tests/imagelib.py): skipped when it cannot be built, failed instead in CI or with
IGWN_REQUIRE_IMAGE=1 (`make test`).
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
SECRET_STAMP = "..2026_01_01_00_00_00.000000000"
HEALTHCHECK = ["/usr/local/bin/igwn-robot-get", "--show", "--quiet", "--minsecs", "300"]
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
        self.area = area
        self.uid, self.gid = uid, uid if gid is None else gid
        self.tokens = os.path.join(area, "tokens")
        os.mkdir(self.tokens)
        os.chown(self.tokens, self.uid, self.gid)
        self.keytab = os.path.join(area, "robot.keytab")
        shutil.copyfile(keytab or bed.robot_keytab, self.keytab)
        os.chown(self.keytab, self.uid, self.gid)
        os.chmod(self.keytab, 0o600)
        self.keytab_source = self.keytab
        self.user = "{}:{}".format(self.uid, self.gid)

    def volumes(self, tokens=True, keytab=True):
        out = ["{}:{}:ro".format(self.bed.krb5_conf, KRB5_IN),
               "{}:{}:ro".format(self.bed.ca_file, CA_IN)]
        if tokens:
            out.append("{}:/tokens".format(self.tokens))
        if keytab:
            out.append("{}:/keytab:ro".format(self.keytab_source))
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

    def token(self, name=None):
        return os.path.join(self.tokens, name or "bt_u{}".format(self.uid))


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


def check_lines(proc):
    """{name: (state, line)} of a `check` run's output."""
    out = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("ok", "FAIL"):
            out[parts[1]] = (parts[0], line)
    return out


def files_in(directory):
    """The files a run left, without the tool's lock files."""
    return sorted(n for n in os.listdir(directory) if not n.endswith(".lock"))


def owner_mode(path):
    info = os.stat(path)
    return info.st_uid, info.st_gid, info.st_mode & 0o7777


def claims_of(path):
    with open(path) as handle:
        return tb.jwt_claims(handle.read())


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


def secret_volume(area, keytab, uid, gid, mode=0o400):
    """A directory as kubelet mounts a Secret: timestamped dir, ..data, per-key symlink."""
    root = os.path.join(area, "secret")
    stamp = os.path.join(root, SECRET_STAMP)
    os.makedirs(stamp)
    target = os.path.join(stamp, "robot.keytab")
    shutil.copyfile(keytab, target)
    os.chown(target, uid, gid)
    os.chmod(target, mode)
    os.symlink(SECRET_STAMP, os.path.join(root, "..data"))
    os.symlink("..data/robot.keytab", os.path.join(root, "robot.keytab"))
    for path in (stamp, root):
        os.chmod(path, 0o755)  # noqa: S103 -- as kubelet makes it
    return root


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
    assert env["XDG_RUNTIME_DIR"] == "/tokens"
    assert env["HOME"] == "/tmp"
    assert env["IGWN_ROBOT_GET_IMAGE"]
    with open(os.path.join(imagelib.REPO, "igwn_robot_get.py")) as handle:
        version = re.search(r'^__version__ = "(.*)"$', handle.read(), re.M).group(1)
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == version
    assert labels["org.opencontainers.image.title"] == "igwn-robot-get"
    assert labels["org.opencontainers.image.base.name"].endswith("debian:bookworm-slim")
    # the HEALTHCHECK runs the tool itself, not the entrypoint
    health = info.get("Healthcheck") or config.get("Healthcheck") or {}
    assert health.get("Test") == ["CMD"] + HEALTHCHECK, health


def test_image_contents(image):
    script = r"""
set -e
stat -c '%a %u:%g' /tokens
for c in gcc cc make pip pip3 g++; do command -v "$c" && exit 1; done
python3 -c 'import pip' 2>/dev/null && exit 2
python3 -c 'import ensurepip' 2>/dev/null && exit 2
dpkg-query -W -f '${Package}\n' |\
  grep -E -- '-dev$|^(gcc|g\+\+|cpp)(-[0-9]+)?$|^build-ess|^python3-pip' && exit 3
test -z "$(ls /var/lib/apt/lists | grep -v -x -e lock -e partial)" || exit 4
# the build's CA mount left nothing: no extra CA, no mountpoint
test -z "$(ls -A /usr/local/share/ca-certificates 2>/dev/null)" || exit 5
test ! -e /etc/pip.conf || exit 5
dpkg-query -W -f '${Package} ${Version}\n' python3-requests python3-gssapi ca-certificates
python3 -I -c 'import requests_gssapi, requests, gssapi, igwn_robot_get
print("requests-gssapi", requests_gssapi.__version__)
print("requests_gssapi in", requests_gssapi.__file__)'
ls /usr/lib/python3/dist-packages/requests_gssapi/__pycache__ | head -1
igwn-robot-get --version
"""
    proc = imagelib.run_image(["-c", script], entrypoint="/bin/bash", network="none")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "1777 10001:10001"
    assert "requests-gssapi 1.3.0" in lines
    assert "requests_gssapi in /usr/lib/python3/dist-packages/requests_gssapi/__init__.py" \
        in lines
    assert any(line.startswith("python3-gssapi 1.8.2") for line in lines), lines
    assert any(line.startswith("python3-requests 2.28") for line in lines), lines
    assert any(line.endswith(".pyc") for line in lines), lines


# -- the seed's examples -------------------------------------------------------------------

def test_basic_usage(robot, testbed):
    """The seed's basic usage: a 0600 token owned by the mapped UID at BEARER_TOKEN_FILE."""
    env = robot.env(BEARER_TOKEN_FILE="/tokens/scitoken.use")
    started = time.monotonic()
    proc = robot.run(env=env)
    FIGURES["first_run_s"] = round(time.monotonic() - started, 2)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == proc.stderr == ""
    token = robot.token("scitoken.use")
    assert owner_mode(token) == (UID, UID, 0o600)
    claims = claims_of(token)
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


COUNTING_TOOL = """#!/bin/sh
# test: count the tool's starts (each one Python interpreter), then run it
echo "$$" >>/tokens/tool-starts
exec /usr/bin/python3 -I -m igwn_robot_get "$@"
"""


def test_fresh_token_run_starts_one_interpreter(robot, testbed):
    """A fresh-token run is the entrypoint's bash, exec'ing the tool: one Python."""
    assert robot.run().returncode == 0
    counting = os.path.join(robot.area, "counting-tool")
    with open(counting, "w") as handle:
        handle.write(COUNTING_TOOL)
    os.chmod(counting, 0o755)  # noqa: S103 -- a test script
    volumes = robot.volumes() + ["{}:/usr/local/bin/igwn-robot-get:ro".format(counting)]
    testbed.emu.reset()
    proc = robot.run(volumes=volumes)
    assert proc.returncode == 0, proc.stderr
    with open(robot.token("tool-starts")) as handle:
        starts = handle.read().split()
    # exec all the way down: the tool is the container's PID 1
    assert starts == ["1"], starts
    assert testbed.emu.total() == 0


def test_default_token_file_for_any_uid(image, testbed, tmp_path):
    """The seed's interactive example sets no BEARER_TOKEN_FILE: the tool's own default,
    $XDG_RUNTIME_DIR/bt_u<uid> = /tokens/bt_u<uid>, for a UID without a passwd entry."""
    robot = Robot(testbed, str(tmp_path), uid=ODD_UID)
    proc = robot.run()
    assert proc.returncode == 0, proc.stderr
    assert owner_mode(robot.token()) == (ODD_UID, ODD_UID, 0o600)
    no_credentials_in(robot.tokens, testbed,
                      {"bt_u{}".format(ODD_UID), "bt_u{}.lock".format(ODD_UID)})


def test_advanced_options_reach_the_tool(robot, testbed):
    """The seed's advanced example: --minsecs, --audience and --scopes after the image."""
    proc = robot.run("--minsecs", "3600", "--audience", "https://my-service.example.org",
                     "--scopes", "read:/data")
    assert proc.returncode == 0, proc.stderr
    counters = testbed.emu.counters()
    assert counters["sts_read"] == 1 and counters["creds_read"] == 0, counters
    claims = claims_of(robot.token())
    aud = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    assert aud == ["https://my-service.example.org"], claims
    assert claims["scope"] == "read:/data", claims


def test_first_use_with_it_completes(image, testbed, tmp_path):
    """The seed's interactive example, first use: `docker run -it` at a pseudo-terminal
    runs the OIDC device flow, then writes the token; later runs need no human."""
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
    token = robot.token()
    assert owner_mode(token) == (UID, UID, 0o600)
    counters = testbed.emu.counters()
    assert counters["auth_url"] == 1 and counters["creds_write"] == 1, counters
    os.unlink(token)
    again = robot.run()
    assert again.returncode == 0, again.stderr


def test_first_use_without_it(image, testbed, tmp_path):
    robot = Robot(testbed, str(tmp_path), keytab=testbed.other_keytab)
    proc = robot.run()
    assert proc.returncode == 7
    line = [x for x in proc.stderr.splitlines() if "error:" in x][-1]
    assert "docker run" in line and "-it" in line and imagelib.IMAGE in line, line
    assert testbed.emu.counters()["auth_url"] == 0
    assert not files_in(robot.tokens)


def test_secret_volume_directory_as_krb5_ktname(robot, tmp_path):
    """KRB5_KTNAME=/keytab naming a directory as a Kubernetes Secret volume looks: the
    tool uses the one keytab in it (the seed's Kubernetes form)."""
    robot.keytab_source = secret_volume(str(tmp_path), robot.keytab, UID, UID)
    proc = robot.run("-v")
    assert proc.returncode == 0, proc.stderr
    assert claims_of(robot.token())["sub"] == "robot/ci.ligo.org"
    assert "Traceback" not in proc.stderr


def test_https_proxy_reaches_vault(robot, testbed):
    """-e HTTPS_PROXY: the tool reaches Vault through the proxy (CONNECT, TLS verified end
    to end), by a name only the proxy can resolve."""
    if not getattr(testbed, "proxy_url", None) or not getattr(testbed, "proxied_vault_url",
                                                               None):
        pytest.skip("the test bed has no CONNECT proxy")
    testbed.proxy_reset()
    proc = robot.run(vault_url=testbed.proxied_vault_url,
                     env=robot.env(HTTPS_PROXY=testbed.proxy_url))
    assert proc.returncode == 0, proc.stderr
    assert claims_of(robot.token())["sub"] == "robot/ci.ligo.org"
    targets = [c["target"] for c in testbed.proxy_connects()]
    assert targets and set(targets) == {"{}:{}".format(tb.PROXIED_HOST, testbed.vault_port)}
    # without the proxy the name does not resolve: exit 5, one line
    os.unlink(robot.token())
    direct = robot.run("--timeout", "5", vault_url=testbed.proxied_vault_url)
    assert direct.returncode == 5, direct.stderr
    one_error(direct)


def test_vault_token_cached_in_a_private_directory(robot, testbed, tmp_path):
    """The README's note: --vaulttokenfile in a private mount, outside /tokens."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chown(private, UID, UID)
    volumes = robot.volumes() + ["{}:/private".format(private)]
    first = robot.run("--vaulttokenfile", "/private/vt", volumes=volumes)
    assert first.returncode == 0, first.stderr
    assert owner_mode(str(private / "vt")) == (UID, UID, 0o600)
    os.unlink(robot.token())
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
        os.unlink(robot.token())
        unhealthy = subprocess.run(imagelib.podman_cmd("healthcheck", "run", name),
                                   capture_output=True, text=True, check=False)
        assert unhealthy.returncode != 0
    finally:
        subprocess.run(imagelib.podman_cmd("rm", "-f", "-t", "0", name), capture_output=True,
                       check=False)


def test_entrypoint_bash_gives_a_shell(robot):
    """The seed's "interactive shell access": --entrypoint /bin/bash."""
    proc = robot.run("-c", 'id -u; echo "$HOME"; ls -d /tokens /keytab; igwn-robot-get -V',
                     entrypoint="/bin/bash", bed_args=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:4] == [str(UID), "/tmp", "/keytab", "/tokens"]
    tty = robot.run("-c", "tty; echo shell-ok", entrypoint="/bin/bash", bed_args=False,
                    tty=True)
    assert tty.returncode == 0, tty.stdout
    assert "/dev/pts/" in tty.stdout and "shell-ok" in tty.stdout


def test_help_and_version_need_nothing(image):
    """-h/--help/-V/--version go straight to the tool: no user, volume or keytab."""
    for args in (["--version"], ["-h"]):
        proc = imagelib.run_image(args, network="none")
        assert proc.returncode == 0, proc.stderr
        assert "igwn-robot-get" in proc.stdout


# -- check mode: the Kubernetes initContainer ------------------------------------------------

ENTRYPOINT_CHECKS = ["uid_mapping", "keytab_mount", "token_volume"]
TOOL_CHECKS = ["keytab", "token_file", "vault"]


def test_check_mode_without_fetch(robot, testbed):
    proc = robot.run(first=["check"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    states = [line.split()[:2] for line in proc.stdout.splitlines()]
    assert states == [["ok", name] for name in ENTRYPOINT_CHECKS + TOOL_CHECKS], proc.stdout
    assert not files_in(robot.tokens)
    counters = testbed.emu.counters()
    assert counters["kerberos_login"] == 0 and counters["sts_read"] == 0, counters


def test_check_mode_reports_all_and_exits_with_the_first(robot):
    """Vault unreachable and the keytab unsafe: every line printed, the first failure's
    exit code (the keytab's, 3)."""
    os.chmod(robot.keytab, 0o644)
    proc = robot.run("--timeout", "5", first=["check"],
                     vault_url="https://localhost:{}".format(tb.closed_port()))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    lines = check_lines(proc)
    assert [lines[n][0] for n in ENTRYPOINT_CHECKS] == ["ok"] * 3, proc.stdout
    assert lines["keytab"][0] == "FAIL" and lines["keytab"][1].endswith("(exit 3)")
    assert lines["vault"][0] == "FAIL" and lines["vault"][1].endswith("(exit 5)")


def test_check_mode_entrypoint_failure_comes_first(robot):
    proc = robot.run(first=["check"], volumes=robot.volumes(tokens=False))
    assert proc.returncode == 8, proc.stdout + proc.stderr
    lines = check_lines(proc)
    assert lines["token_volume"][0] == "FAIL"
    assert "not a mounted volume" in lines["token_volume"][1]
    assert set(TOOL_CHECKS) <= set(lines), proc.stdout   # the tool's check still ran


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
    assert "keytab /keytab (KRB5_KTNAME) not found" in line
    assert "-v /path/to/robot.keytab:/keytab:ro" in line


def test_keytab_variable_unset(robot, testbed):
    """KRB5_KTNAME unset and no -k: the tool's own keytab rules decide (exit 3)."""
    proc = robot.run(env=robot.env(KRB5_KTNAME=None))
    assert proc.returncode == 3
    assert "keytab" in one_error(proc)
    assert testbed.emu.counters()["kerberos_login"] == 0


def test_keytab_given_with_k(robot):
    """-k instead of KRB5_KTNAME: the entrypoint leaves it to the tool, which uses it."""
    proc = robot.run("-k", "/keytab", env=robot.env(KRB5_KTNAME=None))
    assert proc.returncode == 0, proc.stderr


def test_keytab_is_an_empty_directory(robot, tmp_path):
    # what docker does when the host path given to -v does not exist
    empty = tmp_path / "missing.keytab"
    empty.mkdir()
    robot.keytab_source = str(empty)
    proc = robot.run()
    assert proc.returncode == 3
    line = one_error(proc)
    assert "empty directory" in line and "docker created an empty directory" in line


@pytest.mark.parametrize("owner, mode", [((0, 0), 0o600), ((UID, UID), 0o644)],
                         ids=["unreadable", "world-readable"])
def test_keytab_refused_by_the_tool(robot, testbed, owner, mode):
    os.chown(robot.keytab, *owner)
    os.chmod(robot.keytab, mode)
    proc = robot.run()
    assert proc.returncode == 3
    assert "keytab" in one_error(proc)
    assert testbed.emu.counters()["kerberos_login"] == 0


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


def test_token_file_elsewhere_is_the_tools(robot, testbed):
    """BEARER_TOKEN_FILE outside /tokens, in a directory that does not exist: the tool's
    own check (exit 8), before any Kerberos or Vault work."""
    proc = robot.run(env=robot.env(BEARER_TOKEN_FILE="/data/scitoken.use"))
    assert proc.returncode == 8
    assert "/data" in one_error(proc)
    assert testbed.emu.counters()["kerberos_login"] == 0


def test_vault_unreachable(robot):
    started = time.monotonic()
    proc = robot.run("--timeout", "5", vault_url="https://localhost:{}".format(tb.closed_port()))
    elapsed = time.monotonic() - started
    assert proc.returncode == 5
    one_error(proc)
    assert elapsed < 15
    assert not files_in(robot.tokens)


def test_condor_refused(robot):
    proc = robot.run("--condor")
    assert proc.returncode == 12
    assert "condor" in one_error(proc).lower()


# -- signals ------------------------------------------------------------------------------

def test_sigterm_stops_a_run_within_a_second(robot, testbed):
    """docker stop: the tool (PID 1 after exec) ends on SIGTERM, exit 143, no token."""
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
