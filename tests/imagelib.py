"""Helpers for tests that build and run the igwn-robot-get container image.

- `ensure_image()`: build the image once per test session (scripts/build-image.sh, with
  podman and this repository's containers/containers.conf; the debian:bookworm-slim base
  is built from Debian's archive first when missing) and return its name.
- `podman_cmd(*args)`: the command line to run podman with that configuration.
- `run_image(args, user=..., volumes=..., env=..., tty=False, timeout=...)`: one
  `podman run --rm` of the image, as a text CompletedProcess.
- `spawn_image(...)`: the same under a pseudo-terminal (`-it`), as a pexpect child.

Skip or fail: when the image cannot be built (no podman, no network to Debian's archive
or PyPI, ...) tests using it are skipped, except in CI (environment variable CI set) or
with IGWN_REQUIRE_IMAGE=1, where a failure to build fails them.
"""

import os
import re
import shlex
import shutil
import subprocess
import threading
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
IMAGE = os.environ.get("IGWN_IMAGE", "igwn-robot-get:latest")
BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
CONTAINERS_CONF = os.path.join(REPO, "containers", "containers.conf")
BUILD_SCRIPT = os.path.join(REPO, "scripts", "build-image.sh")
BUILD_TIMEOUT = 1200

__all__ = ["IMAGE", "BASE_IMAGE", "ensure_image", "image_required", "podman_cmd", "unique_name",
           "podman_env", "run_image", "spawn_image", "image_sizes", "run_args"]

_state = {"built": None, "error": None}
_lock = threading.Lock()


def image_required():
    """True in CI (CI set) or with IGWN_REQUIRE_IMAGE=1: build failures fail, not skip."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return ci or os.environ.get("IGWN_REQUIRE_IMAGE") == "1"


def podman_env(**extra):
    """The environment podman needs on this machine kind (runc, ulimits, cgroupfs)."""
    env = dict(os.environ, CONTAINERS_CONF=os.environ.get("CONTAINERS_CONF", CONTAINERS_CONF))
    env.update(extra)
    return env


def podman_cmd(*args):
    """`podman ARGS...` with the project's containers.conf, as an argument list.

    The configuration goes through `env`, so the list works as is with subprocess,
    pexpect or a shell line (shlex.join).
    """
    conf = os.environ.get("CONTAINERS_CONF", CONTAINERS_CONF)
    return ["env", "CONTAINERS_CONF=" + conf, "podman"] + [str(a) for a in args]


def _unavailable(reason):
    if image_required():
        pytest.fail("container image unavailable (CI or IGWN_REQUIRE_IMAGE=1): " + reason,
                    pytrace=False)
    pytest.skip("container image unavailable: " + reason)


def ensure_image():
    """Build the image once per session and return its name; skip or fail otherwise."""
    with _lock:
        if _state["built"] is None and _state["error"] is None:
            _state["built"], _state["error"] = _build()
    if _state["error"]:
        _unavailable(_state["error"])
    return _state["built"]


def _build():
    if not shutil.which("podman"):
        return None, ("podman not installed (apt-get install -y --no-install-recommends "
                      "podman runc debootstrap)")
    if not os.path.exists(os.path.join(REPO, "igwn_robot_get.py")):
        return None, "igwn_robot_get.py missing"
    try:
        proc = subprocess.run([BUILD_SCRIPT], env=podman_env(ENGINE="podman", IMAGE=IMAGE),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return None, "scripts/build-image.sh took more than {} s".format(BUILD_TIMEOUT)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        return None, "scripts/build-image.sh failed (exit {}):\n{}".format(
            proc.returncode, tail)
    return IMAGE, None


def _volume_args(volumes):
    out = []
    for volume in volumes or ():
        if isinstance(volume, (tuple, list)):
            volume = ":".join(str(part) for part in volume)
        out += ["-v", str(volume)]
    return out


def run_args(args=(), user=None, volumes=(), env=None, network="host", entrypoint=None,
             name=None, interactive=False, extra=(), image=None, healthcheck=False):
    """The `podman run` argument list (after `podman`) for one run of the image.

    The image's HEALTHCHECK is disabled unless healthcheck=True: podman runs it with
    systemd timers, which this machine kind lacks (it would print errors on stderr).
    """
    cmd = ["run", "--rm", "--pull=never"]
    if not healthcheck:
        cmd.append("--no-healthcheck")
    if interactive:
        cmd.append("-it")
    if name:
        cmd += ["--name", name]
    if network:
        cmd += ["--network", network]
    if user is not None:
        cmd += ["--user", str(user)]
    cmd += _volume_args(volumes)
    for key, value in (env or {}).items():
        cmd += ["-e", "{}={}".format(key, value)]
    if entrypoint is not None:
        cmd += ["--entrypoint", entrypoint]
    cmd += list(extra)
    cmd.append(image or IMAGE)
    return cmd + [str(a) for a in args]


def run_image(args=(), user=None, volumes=(), env=None, tty=False, timeout=120,
              network="host", entrypoint=None, name=None, extra=(), image=None,
              healthcheck=False):
    """Run the image once (`podman run --rm`); return a text CompletedProcess.

    volumes: "host:container[:ro]" strings or (host, container[, "ro"]) tuples;
    env: dict of -e variables; network: "host" by default (the test bed is on loopback);
    tty=True: run with -it under `script` (a real pseudo-terminal); the output is then
    in .stdout (stderr is empty) with carriage returns and NUL bytes removed.
    """
    cmd = podman_cmd(*run_args(args, user, volumes, env, network, entrypoint, name,
                               interactive=tty, extra=extra, image=image,
                               healthcheck=healthcheck))
    if not tty:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, check=False)
    line = " ".join(shlex.quote(part) for part in cmd)
    proc = subprocess.run(["script", "-qec", line, "/dev/null"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)
    proc.stdout = re.sub(r"[\r\x00]", "", proc.stdout + proc.stderr)
    proc.stderr = ""
    return proc


def spawn_image(args=(), user=None, volumes=(), env=None, timeout=120, network="host",
                entrypoint=None, name=None, extra=(), image=None, healthcheck=False):
    """Start `podman run --rm -it` on a pseudo-terminal; return the pexpect child."""
    import pexpect
    cmd = podman_cmd(*run_args(args, user, volumes, env, network, entrypoint, name,
                               interactive=True, extra=extra, image=image,
                               healthcheck=healthcheck))
    return pexpect.spawn(cmd[0], cmd[1:], timeout=timeout, encoding="utf-8",
                         dimensions=(40, 200))


def unique_name(prefix="igwn-test"):
    return "{}-{}".format(prefix, uuid.uuid4().hex[:10])


def image_sizes(image=None):
    """(image bytes, base bytes, bytes added on top of the base) from podman."""
    def size(ref):
        proc = subprocess.run(podman_cmd("image", "inspect", "--format", "{{.Size}}", ref),
                              capture_output=True, text=True, check=False)
        return int(proc.stdout.strip()) if proc.returncode == 0 else None
    total, base = size(image or IMAGE), size(BASE_IMAGE)
    added = total - base if total is not None and base is not None else None
    return total, base, added
