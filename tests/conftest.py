"""Shared fixtures: one KDC + Vault emulator per session, a private area per test.

- `testbed`: the session's Testbed (tests/testbed.py), started on first use.
- the emulator is reset before every test that uses `testbed` (counters,
  faults, stored credentials, vault tokens, the standby's mode; the CONNECT
  proxy's log), so tests are independent.
- `tool`: per-test paths (bearer token file, vault token file, HOME) and a
  `run()` that always passes -o and --vaulttokenfile, so tests never share
  /tmp/bt_u0 or /tmp/vt_u0.
- `jwt`: helpers to craft token strings for seeding files.
Set KEEP_TESTBED=1 to keep the test bed's directory (logs) after the session.
"""

import os
import shutil
import stat
import tempfile

import pytest

import testbed as tb


def pytest_configure(config):
    config.addinivalue_line("markers", "image: builds and runs the container image (slow)")
    if not config.getini("timeout") and getattr(config.option, "timeout", None) is None:
        config.option.timeout = 300


@pytest.fixture(scope="session")
def testbed():
    workdir = tempfile.mkdtemp(prefix="igwn-testbed-")
    bed = tb.Testbed(workdir)
    bed.start()
    try:
        yield bed
    finally:
        bed.stop()
        if not os.environ.get("KEEP_TESTBED"):
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _reset_emulator(request):
    """Reset the emulator (and the CONNECT proxy's log) before each test that uses
    the test bed."""
    if "testbed" in request.fixturenames:
        bed = request.getfixturevalue("testbed")
        bed.emu.reset()
        bed.proxy_reset()


class ToolFiles:
    """One test's token file, vault token file and HOME, and a runner using them."""

    def __init__(self, bed, directory):
        self.bed = bed
        self.dir = str(directory)
        self.out = os.path.join(self.dir, "bt")
        self.vt = os.path.join(self.dir, "vt")
        self.home = os.path.join(self.dir, "home")
        os.makedirs(self.home, exist_ok=True)

    def args(self):
        return ["-o", self.out, "--vaulttokenfile", self.vt]

    def env(self, **extra):
        return self.bed.tool_env(**dict({"HOME": self.home}, **extra))

    def run(self, *args, env=None, **kw):
        """Run the tool with this test's files; returns a CompletedProcess."""
        return self.bed.run_tool(self.args() + list(args),
                                 env=self.env() if env is None else env, **kw)

    def seed(self, token, path=None, mode=0o600):
        """Write a token file (bearer by default) as a previous run would have."""
        path = path or self.out
        with open(path, "w") as handle:
            handle.write(token + "\n")
        os.chmod(path, mode)
        return token

    def read(self, path=None):
        with open(path or self.out) as handle:
            return handle.read().strip()

    def mode(self, path=None):
        return stat.S_IMODE(os.stat(path or self.out).st_mode)

    def leaks(self, *texts):
        """Secrets issued by the emulator (or seeded here) that appear in texts."""
        secrets = self.bed.emu.secrets()
        for path in (self.out, self.vt):
            if os.path.exists(path):
                secrets.append(self.read(path))
        return tb.leaked_secrets("\n".join(texts), secrets)


@pytest.fixture
def tool(testbed, tmp_path):
    return ToolFiles(testbed, tmp_path)


class JWTs:
    """Token strings for seeding files."""

    make = staticmethod(tb.make_jwt)
    claims = staticmethod(tb.jwt_claims)
    malformed = tb.MALFORMED_JWTS

    @staticmethod
    def good(lifetime=10800):
        return tb.make_jwt(lifetime=lifetime)

    @staticmethod
    def expiring(lifetime=60):
        return tb.make_jwt(lifetime=lifetime)

    @staticmethod
    def expired():
        return tb.make_jwt(lifetime=-600)

    @staticmethod
    def no_exp():
        return tb.make_jwt(lifetime=None)


@pytest.fixture
def jwt():
    return JWTs
