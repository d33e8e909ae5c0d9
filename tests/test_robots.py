"""Robots and readers side by side (issue 13), end to end with real parts.

- Two robots in the test KDC under one uid, with the DEFAULT vault token cache:
  each robot has its own (/tmp/vt_u<uid>-<credkey>-<role>), so alternate renewals
  each cost one Vault request and no KDC traffic after each robot's first login;
  an explicit --vaulttokenfile shared by both still works, as htgettoken's file.
- KRB5_KTNAME naming a directory laid out as the kubelet lays out a Secret
  (timestamped directory, ``..data`` link, key link, file 0440 root:fsGroup), run
  as a non-root uid in that group; an empty directory and one with two keytabs are
  refused (exit 3).
- --mode 0640: the token gets its directory's group and a reader of another uid in
  that group can read it (one outside the group cannot); modes that others could
  read, or the group write, are usage errors.

Runs as another uid use a copy of the tool and an interpreter that uid can run
(test_hostile.User, python_for).
"""

import os
import shutil
import stat
import subprocess
import time

import pytest

import testbed as tb
from userlib import PREFIX, User, as_user, assert_failure, diff, read, seed, traffic

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(os.geteuid() != 0,
                                 reason="chowns files and runs the tool as other uids: "
                                        "needs root")]

ROBOT_UID = 4243            # the robots' account (no passwd entry)
FSGROUP = 4300              # the Secret's fsGroup / the token readers' group
READER_UID = 4301           # an application of another uid in that group
OUTSIDER_UID = 4302         # a uid outside that group


def vt_cache(uid, credkey, role):
    """The default vault token cache of a robot: /tmp/vt_u<uid>-<credkey>-<role>,
    every character outside [A-Za-z0-9._] written %XX."""
    def safe(text):
        return "".join(c if (c.isascii() and c.isalnum()) or c in "._" else
                       "".join("%{:02X}".format(b) for b in c.encode()) for c in text)
    return "/tmp/vt_u{}-{}-{}".format(uid, safe(credkey), safe(role))


@pytest.fixture
def made(testbed):
    users = []

    def make(uid=0, gid=None, groups=()):
        user = User(testbed, uid, gid, groups)
        users.append(user)
        return user

    yield make
    for user in users:
        user.close()


# ---------------------------------------------------------------- two robots, one uid

@pytest.fixture(params=["root", "uid"])
def two_robots(request, testbed, made):
    """(user, robots): robot/ci.ligo.org and other/ci.ligo.org under one uid, each with
    its keytab and token file; their default vault token caches removed before and
    after (and htgettoken's /tmp/vt_u<uid> if this test made it)."""
    uid = 0 if request.param == "root" else ROBOT_UID
    user = made(uid)
    testbed.emu.credentials("other/ci.ligo.org:other", "good")
    robots = []
    for name, keytab in (("robot", testbed.robot_keytab), ("other", testbed.other_keytab)):
        robots.append({
            "name": name, "credkey": name + "/ci.ligo.org",
            "keytab": user.copy_keytab(keytab, name + ".keytab"),
            "out": os.path.join(user.private, name + ".bt"),
            "cache": vt_cache(uid, name + "/ci.ligo.org", name)})
    shared_default = "/tmp/vt_u{}".format(uid)
    existed = os.path.lexists(shared_default)
    user.htgettoken_cache = (shared_default, os.lstat(shared_default) if existed else None)
    caches = [r["cache"] for r in robots]
    for path in caches:
        if os.path.lexists(path):
            os.unlink(path)
    try:
        yield user, robots
    finally:
        for path in caches + ([] if existed else [shared_default]):
            if os.path.lexists(path):
                os.unlink(path)


def renew(testbed, user, robot, *extra):
    """One renewal of an expired token; (result, Vault requests, KDC requests)."""
    seed(robot["out"], tb.make_jwt(lifetime=-600))
    user.own(robot["out"])
    before, kdc = traffic(testbed)
    result = user.run(["-o", robot["out"]] + list(extra),
                      env=user.env(KRB5_KTNAME=robot["keytab"]))
    assert result.returncode == 0, (robot["name"], result.stderr)
    claims = tb.jwt_claims(read(robot["out"]))
    assert claims["sub"] == robot["credkey"], "{} got {}'s token".format(
        robot["name"], claims["sub"])
    assert claims["exp"] > time.time() + 3600
    after, kdc_after = traffic(testbed)
    return result, diff(after, before), diff(kdc_after, kdc)


def test_two_robots_default_caches_never_evict_each_other(testbed, two_robots):
    user, robots = two_robots
    for robot in robots:                      # each robot's first run logs in
        _, vault, kdc = renew(testbed, user, robot)
        assert vault == {"kerberos_login": 1, "token_create": 1, "creds_read": 1}, vault
        assert kdc, "the first login made no KDC request"
    for cache in (r["cache"] for r in robots):
        info = os.lstat(cache)
        assert stat.S_ISREG(info.st_mode) and info.st_uid == user.uid, cache
        assert stat.S_IMODE(info.st_mode) == 0o600, cache
    assert read(robots[0]["cache"]) != read(robots[1]["cache"])
    for _ in range(2):                        # then alternate: one request each, no KDC
        for robot in robots:
            _, vault, kdc = renew(testbed, user, robot)
            assert vault == {"creds_read": 1}, (robot["name"], vault)
            assert kdc == {}, (robot["name"], kdc)
    path, before = user.htgettoken_cache
    after = os.lstat(path) if os.path.lexists(path) else None
    assert (after and (after.st_ino, after.st_mtime_ns)) == (
        before and (before.st_ino, before.st_mtime_ns)), "htgettoken's " + path + " was used"


def test_two_robots_sharing_an_explicit_cache_still_work(testbed, two_robots):
    """--vaulttokenfile given: used as given, by both, as htgettoken's file is; each
    run logs in again when the other robot's token is refused, and succeeds."""
    user, robots = two_robots
    shared = os.path.join(user.private, "vt-shared")
    for round_ in range(2):
        for robot in robots:
            _, vault, _ = renew(testbed, user, robot, "--vaulttokenfile", shared)
            first = round_ == 0 and robot is robots[0]
            assert vault == {"kerberos_login": 1, "token_create": 1,
                             "creds_read": 1 if first else 2}, (robot["name"], vault)
            assert os.stat(shared).st_uid == user.uid
            assert stat.S_IMODE(os.stat(shared).st_mode) == 0o600
            assert read(shared) in testbed.emu.secrets()
    for robot in robots:
        assert not os.path.lexists(robot["cache"]), "the default cache was used"


def test_refused_cached_vault_token_is_deleted_at_once(testbed, made):
    """A cached vault token Vault refuses is deleted before anything else can fail (here
    a silent KDC, exit 4), so the next run never presents it again."""
    user = made()
    seed(user.vt, "hvs.refused-by-vault-" + "x" * 40)
    seed(user.out, tb.make_jwt(lifetime=-600))
    silent = user.env(KRB5_CONFIG=testbed.silent_kdc_env()["KRB5_CONFIG"])
    before = testbed.emu.counters()
    result = user.run(user.args("--kdc-timeout", "2"), env=silent)
    assert result.returncode == 4, result.stderr
    assert diff(testbed.emu.counters(), before) == {"creds_read": 1}
    assert not os.path.lexists(user.vt), "the refused vault token is still cached"
    before = testbed.emu.counters()
    result = user.run(user.args("--kdc-timeout", "2"), env=silent)
    assert result.returncode == 4, result.stderr
    assert diff(testbed.emu.counters(), before) == {}, "the refused token was presented again"


# ---------------------------------------------------------------- a Secret volume as KRB5_KTNAME

TIMESTAMPED = "..2026_12_01_10_00_00.123456789"


def kubelet_secret(parent, keytab, key, gid):
    """A Secret volume as the kubelet writes it, holding one key: the file is
    <vol>/..<timestamp>/<key>, 0440 root:<gid>; <vol>/..data links to the timestamped
    directory and <vol>/<key> to ..data/<key>."""
    volume = os.path.join(parent, "keytab-volume")
    os.mkdir(volume)
    os.chown(volume, 0, gid)
    os.chmod(volume, 0o3777)  # noqa: S103 -- drwxrwsrwt, as the kubelet mounts it
    data = os.path.join(volume, TIMESTAMPED)
    os.mkdir(data)
    os.chown(data, 0, gid)
    os.chmod(data, 0o2755)  # noqa: S103 -- the kubelet's timestamped directory
    path = os.path.join(data, key)
    shutil.copyfile(keytab, path)
    os.chown(path, 0, gid)
    os.chmod(path, 0o440)
    os.symlink(TIMESTAMPED, os.path.join(volume, "..data"))
    os.symlink(os.path.join("..data", key), os.path.join(volume, key))
    return volume


@pytest.mark.parametrize("key", ["robot.keytab", "keytab"])
def test_kubelet_secret_directory_as_krb5_ktname(testbed, made, key):
    """The seed's CronJob sets KRB5_KTNAME to the Secret volume's directory, with
    fsGroup: the tool finds the one keytab in it and accepts its 0440 root:fsGroup
    mode, as a non-root uid in that group."""
    user = made(ROBOT_UID, ROBOT_UID, [FSGROUP])
    volume = kubelet_secret(user.area, testbed.robot_keytab, key, FSGROUP)
    seed(user.out, tb.make_jwt(lifetime=-600))
    user.own(user.out)
    result = user.run(["-v"] + user.args(), env=user.env(KRB5_KTNAME=volume))
    assert result.returncode == 0, result.stderr
    assert key in result.stderr, "-v does not say which keytab it used:\n" + result.stderr
    assert tb.jwt_claims(read(user.out))["sub"] == tb.ROBOT
    assert os.stat(os.path.join(volume, TIMESTAMPED, key)).st_mode & 0o777 == 0o440


def test_empty_keytab_directory_is_docker_trap(testbed, made):
    user = made()
    empty = user.mkdir("keytab", 0o755)
    seed(user.out, tb.make_jwt(lifetime=-600))
    before = traffic(testbed)
    result = user.run(user.args(), env=user.env(KRB5_KTNAME=empty))
    assert_failure(result, 3, empty, "docker")
    assert traffic(testbed) == before


def test_keytab_directory_with_two_keytabs_names_them(testbed, made):
    user = made()
    directory = user.mkdir("keytabs", 0o700)
    for name, source in (("a.keytab", testbed.robot_keytab), ("b.keytab", testbed.other_keytab)):
        shutil.copyfile(source, os.path.join(directory, name))
        os.chmod(os.path.join(directory, name), 0o600)
    seed(user.out, tb.make_jwt(lifetime=-600))
    before = traffic(testbed)
    result = user.run(user.args(), env=user.env(KRB5_KTNAME=directory))
    assert_failure(result, 3, directory, "a.keytab", "b.keytab")
    assert traffic(testbed) == before


# ---------------------------------------------------------------- --mode for readers in the group

def read_as(uid, groups, path):
    """``cat path`` as uid with these groups: (exit code, output)."""
    done = subprocess.run(as_user(uid, uid, groups) + ["cat", path], cwd="/",
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=30)
    return done.returncode, done.stdout


@pytest.mark.parametrize("writer", ["root", "uid"])
def test_mode_0640_token_is_read_by_another_uid_in_the_group(testbed, made, writer):
    """The token directory belongs to the readers' group (not setgid: the tool sets
    the group); the writer is root, or a robot uid in that group."""
    uid = 0 if writer == "root" else ROBOT_UID
    user = made(uid, uid, [FSGROUP] if uid else ())
    tokens = user.mkdir("tokens", 0o750, owner=uid, group=FSGROUP)
    out = os.path.join(tokens, "bt")
    result = user.run(["-o", out, "--vaulttokenfile", user.vt, "--mode", "0640"])
    assert result.returncode == 0, result.stderr
    info = os.stat(out)
    assert stat.S_IMODE(info.st_mode) == 0o640, oct(info.st_mode)
    assert info.st_gid == FSGROUP and info.st_uid == uid, (info.st_uid, info.st_gid)
    code, text = read_as(READER_UID, [FSGROUP], out)
    assert code == 0 and text.strip() == read(out), "the reader in the group cannot read it"
    code, text = read_as(OUTSIDER_UID, [], out)
    assert code != 0 and not text, "a uid outside the group read the token"
    before = traffic(testbed)
    again = user.run(["-v", "-o", out, "--vaulttokenfile", user.vt, "--mode", "0640"])
    assert again.returncode == 0 and "is fresh" in again.stderr, again.stderr
    assert traffic(testbed) == before


@pytest.mark.parametrize("mode", ["0400", "0440"])
def test_read_only_modes_accepted(testbed, made, mode):
    user = made()
    for _ in range(2):   # a renewal replaces a read-only token too
        seed(user.out, tb.make_jwt(lifetime=-600), mode=0o600)
        os.chmod(user.out, int(mode, 8))
        result = user.run(user.args("--mode", mode))
        assert result.returncode == 0, result.stderr
        assert stat.S_IMODE(os.stat(user.out).st_mode) == int(mode, 8)
        assert tb.jwt_claims(read(user.out))["exp"] > time.time() + 3600


@pytest.mark.parametrize("mode", ["0644", "0660", "0606", "0620", "0602", "0666", "banana",
                                  "", "9999"])
def test_modes_others_could_read_or_the_group_write_are_usage_errors(testbed, made, mode):
    user = made()
    token = seed(user.out, tb.make_jwt(lifetime=7200))
    before = traffic(testbed)
    result = user.run(user.args("--mode", mode), extra_secrets=[token])
    assert result.returncode == 2, result.stderr
    assert len(result.lines) == 1 and result.lines[0].startswith(PREFIX), result.stderr
    assert traffic(testbed) == before
    assert read(user.out) == token
