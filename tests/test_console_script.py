"""The `igwn-robot-get` console script (what `pip install` writes) gets the same
fresh-token fast path as the script and `python -m`, and importing the module from
any other program has no side effect."""

import os
import subprocess
import sys

import testbed as tb

WRAPPER = """import sys
from igwn_robot_get import main
if __name__ == "__main__":
    sys.exit(main())
"""


def console(tmp_path, *args):
    wrapper = tmp_path / "igwn-robot-get"       # the name pip gives it
    wrapper.write_text(WRAPPER)
    env = dict(os.environ, PYTHONPATH=tb.REPO, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, str(wrapper)] + list(args), env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60)


def test_console_script_fresh_token(tmp_path, jwt):
    token = tmp_path / "bt"
    token.write_text(jwt.good() + "\n")
    done = console(tmp_path, "-o", str(token), "-v")
    assert done.returncode == 0, done.stderr
    assert "is fresh" in done.stderr


def test_console_script_full_run(tmp_path):
    done = console(tmp_path, "-o", str(tmp_path / "missing"), "--show")
    assert done.returncode == 11
    assert done.stderr.startswith("igwn-robot-get: error: no token at")


def test_import_from_another_program_has_no_side_effect(tmp_path, jwt):
    token = tmp_path / "bt"
    token.write_text(jwt.good() + "\n")
    program = "import igwn_robot_get; print('still here', igwn_robot_get.__version__)"
    env = dict(os.environ, PYTHONPATH=tb.REPO, BEARER_TOKEN_FILE=str(token))
    done = subprocess.run([sys.executable, "-c", program, "-o", str(token)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "still here" in done.stdout, done.stderr
