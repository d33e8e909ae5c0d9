"""Running the tool as other users, and planting files where a robot looks.

Shared by test_hostile, test_robots and test_e2e_core.  A run as another uid uses
a copy of igwn_robot_get.py in a directory that uid can read and an interpreter it
can run (``python_for``), as a copy-in host would: the checkout may live in a 0700
directory such as /root.
"""

import atexit
import base64
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import pytest

import testbed as tb

PREFIX = "igwn-robot-get: error: "
WARNING = "igwn-robot-get: warning: "
ROBOT_UID = 4242            # a robot account with no passwd entry
PLANTER = 65534             # the hostile local user (nobody)
HANG = 20                   # seconds: a run that takes longer has hung
NEEDED = ("requests", "requests_gssapi", "gssapi")
DISTRIBUTIONS = ("requests", "urllib3", "idna", "charset-normalizer", "certifi",
                 "requests-gssapi", "gssapi", "decorator")


# ---------------------------------------------------------------- running as another uid

_CLEANUP = []


@atexit.register
def _remove_shared_dirs():
    for path in _CLEANUP:
        shutil.rmtree(path, ignore_errors=True)


def shared_dir(prefix, keep=False):
    """A new directory under /tmp that every uid can traverse (mode 0755)."""
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None)
    os.chmod(path, 0o755)  # noqa: S103 -- other uids must reach the files inside
    if not keep:
        _CLEANUP.append(path)
    return path


def as_user(uid, gid=None, groups=()):
    """The setpriv prefix that runs a command as uid:gid with these extra groups."""
    gid = uid if gid is None else gid
    extra = ["--groups", ",".join(str(g) for g in groups)] if groups else ["--clear-groups"]
    return ["setpriv", "--reuid", str(uid), "--regid", str(gid)] + extra + ["--"]


def _can_import(python, prefix, env):
    """True when python, run as the prefix's uid, imports the tool's packages and can
    start itself again (as that uid, not only from setpriv)."""
    code = ("import subprocess, sys; import {}; subprocess.run([sys.executable, '-c', "
            "'import gssapi'], check=True)".format(", ".join(NEEDED)))
    try:
        done = subprocess.run(prefix + [python, "-c", code], cwd="/", env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _version(python):
    try:
        done = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def _copy_packages():
    """Copy the tool's packages (from this interpreter) where every uid can read them."""
    from importlib import metadata
    site = os.path.join(shared_dir("igwn-site-"), "site")
    for name in DISTRIBUTIONS:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for rel in dist.files or ():
            if ".." in rel.parts or "__pycache__" in rel.parts:
                continue
            source = str(dist.locate_file(rel))
            if not os.path.isfile(source):
                continue
            target = os.path.join(site, *rel.parts)
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            shutil.copyfile(source, target)
            os.chmod(target, 0o644)
    return site


_PYTHONS = {}


def python_for(uid, gid=None, groups=()):
    """(interpreter, extra environment) that uid can run with requests, requests_gssapi
    and gssapi; skips the test, saying why, when there is none.

    Tried in order: $IGWN_TOOL_PYTHON, this interpreter, /usr/bin/python3; then
    /usr/bin/python3 with a copy of this interpreter's packages (same version only).
    """
    key = (uid, gid, tuple(groups))
    if key not in _PYTHONS:
        prefix = as_user(uid, gid, groups)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        found = None
        for python in (os.environ.get("IGWN_TOOL_PYTHON"), sys.executable, "/usr/bin/python3"):
            if python and _can_import(python, prefix, env):
                found = (python, {})
                break
        system = "/usr/bin/python3"
        if found is None and os.path.exists(system) and _version(system) == _version(
                sys.executable):
            site = _copy_packages()
            if _can_import(system, prefix, dict(env, PYTHONPATH=site)):
                found = (system, {"PYTHONPATH": site})
        _PYTHONS[key] = found or (
            "no interpreter that uid {} can run has {} ({} is out of its reach, /usr/bin/"
            "python3 lacks them and a copy of the packages did not work)".format(
                uid, ", ".join(NEEDED), sys.executable))
    found = _PYTHONS[key]
    if isinstance(found, str):
        pytest.skip(found)
    return found


def tool_copy(directory):
    """Copy the checkout's igwn_robot_get.py into directory/tool/ (root-owned, readable)."""
    tooldir = os.path.join(directory, "tool")
    os.makedirs(tooldir, exist_ok=True)
    os.chmod(tooldir, 0o755)  # noqa: S103 -- the robot uid must read the copy
    path = os.path.join(tooldir, "igwn_robot_get.py")
    shutil.copyfile(tb.TOOL, path)
    os.chmod(path, 0o644)
    return path


class Result(object):
    """A finished run: exit code, decoded output, raw stderr bytes, elapsed time."""

    def __init__(self, done, elapsed):
        self.returncode = done.returncode
        self.raw_stderr = done.stderr
        self.stdout = done.stdout.decode("utf-8", "replace")
        self.stderr = done.stderr.decode("utf-8", "replace")
        self.elapsed = elapsed

    @property
    def lines(self):
        return [line for line in self.stderr.splitlines() if line.strip()]

    def warnings(self, *words):
        return [line for line in self.lines
                if line.startswith(WARNING) and all(w in line for w in words)]


class User(object):
    """A robot account: its private directory, HOME, keytab, and a runner.

    uid 0 runs the checkout with this interpreter; another uid runs a copy of the tool
    with python_for(uid) through setpriv.  Everything lives in one directory under
    /tmp, removed by close().
    """

    def __init__(self, bed, uid=0, gid=None, groups=()):
        self.bed, self.uid = bed, uid
        self.gid = uid if gid is None else gid
        self.groups = tuple(groups)
        self.area = shared_dir("igwn-hostile-u{}-".format(uid), keep=True)
        self.extra_env = {}
        if uid == 0:
            self.python = os.environ.get("IGWN_TOOL_PYTHON") or sys.executable
            self.tool = tb.TOOL
        else:
            self.python, self.extra_env = python_for(uid, self.gid, self.groups)
            self.tool = tool_copy(self.area)
        self.private = self.mkdir("private", 0o700)
        self.home = self.mkdir("home", 0o700)
        self.keytab = self.copy_keytab(bed.robot_keytab)
        self.out = os.path.join(self.private, "bt")
        self.vt = os.path.join(self.private, "vt")

    def close(self):
        shutil.rmtree(self.area, ignore_errors=True)

    def mkdir(self, name, mode, owner=None, group=None):
        path = os.path.join(self.area, name)
        os.mkdir(path)
        os.chown(path, self.uid if owner is None else owner,
                 self.gid if group is None else group)
        os.chmod(path, mode)
        return path

    def sticky_dir(self, name="shared"):
        """A /tmp-like directory: world-writable with the sticky bit."""
        path = self.mkdir(name, 0o1777, owner=0, group=0)
        return path

    def copy_keytab(self, source, name="robot.keytab"):
        path = os.path.join(self.private, name)
        shutil.copyfile(source, path)
        os.chown(path, self.uid, self.gid)
        os.chmod(path, 0o600)
        return path

    def own(self, path):
        os.lchown(path, self.uid, self.gid)
        return path

    def env(self, **extra):
        values = dict({"HOME": self.home, "KRB5_KTNAME": self.keytab}, **self.extra_env)
        values.update(extra)
        return self.bed.tool_env(**values)

    def command(self, args, bare=False, isolated=False):
        cmd = as_user(self.uid, self.gid, self.groups) if self.uid else []
        cmd += [self.python] + (["-I"] if isolated else []) + [self.tool]
        if not bare:
            cmd += self.bed.tool_args()
        return cmd + [str(a) for a in args]

    def run(self, args, env=None, timeout=HANG, cwd="/", bare=False, isolated=False,
            extra_secrets=()):
        """Run the tool to completion (fail the test if it hangs); scan its output."""
        cmd = self.command(args, bare, isolated)
        started = time.monotonic()
        try:
            done = subprocess.run(cmd, env=self.env() if env is None else env, cwd=cwd,
                                  stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail("the tool hung: no exit within {} s: {}".format(
                timeout, " ".join(shlex.quote(str(a)) for a in args)))
        result = Result(done, time.monotonic() - started)
        tb.scan_output(self.bed, result.stdout + result.stderr, extra_secrets)
        assert "MemoryError" not in result.stderr, result.stderr
        return result

    def args(self, *extra):
        return ["-o", self.out, "--vaulttokenfile", self.vt] + list(extra)


# ---------------------------------------------------------------- small helpers

def assert_failure(result, code, *words):
    """Exit code, one error line last on stderr (warnings may precede it), its words."""
    lines = result.lines
    assert result.returncode == code, (result.returncode, result.stderr)
    assert lines and lines[-1].startswith(PREFIX), result.stderr
    others = [line for line in lines[:-1] if not line.startswith(WARNING)]
    assert not others, "expected one error line on stderr, got:\n" + result.stderr
    for word in words:
        assert word in lines[-1], (word, lines[-1])


def assert_one_line(result, code):
    assert result.returncode == code, (result.returncode, result.stderr)
    assert len(result.lines) == 1, "expected one line on stderr:\n" + result.stderr
    assert result.lines[0].startswith(PREFIX), result.stderr


def traffic(bed):
    """Vault requests by endpoint and KDC requests so far."""
    return bed.emu.counters(), bed.kdc_requests()


def diff(after, before):
    return {k: after.get(k, 0) - before.get(k, 0)
            for k in set(after) | set(before) if after.get(k, 0) != before.get(k, 0)}


def seed(path, text, mode=0o600, owner=None):
    with open(path, "w") as handle:
        handle.write(text + "\n")
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner, owner)
    return text


def read(path):
    with open(path) as handle:
        return handle.read().strip()


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_jwt(payload_text):
    """A JWT whose payload is exactly this JSON text."""
    return ".".join([b64url('{"alg":"RS256","typ":"JWT"}'), b64url(payload_text),
                     b64url(os.urandom(32))])


def make_kind(kind, path, good_token_file=None):
    """Put a non-regular thing at path: symlink, fifo, devzero, chardev, directory."""
    if kind == "symlink":
        os.symlink(good_token_file, path)
    elif kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "devzero":
        os.symlink("/dev/zero", path)
    elif kind == "chardev":
        try:
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # a second /dev/zero
        except OSError as exc:
            pytest.skip("cannot create a character device here: {}".format(exc.strerror))
    elif kind == "directory":
        os.mkdir(path, 0o700)
    else:
        raise AssertionError(kind)
    return path


def same_kind(kind, path):
    info = os.lstat(path)
    return {"symlink": stat.S_ISLNK, "devzero": stat.S_ISLNK, "fifo": stat.S_ISFIFO,
            "chardev": stat.S_ISCHR, "directory": stat.S_ISDIR,
            "regular": stat.S_ISREG}[kind](info.st_mode)


