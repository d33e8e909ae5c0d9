#!/usr/bin/env python3
"""Benchmark igwn_robot_get.py against igwn-robot-get 0.3.3 on one test bed.

Both tools run, interleaved, against the same MIT KDC and Vault emulator
(tests/testbed.py) for four paths:

  a  token still fresh        (bearer file has more than --minsecs left)
  b  stale token, cached VT   (bearer file expired, valid vault token file)
  c  cold run                 (no bearer file, no vault token, no ticket)
  d  import                   (python -c 'import MODULE')

For each: wall time (median and spread over --reps runs), CPU time (user +
sys, wait4), peak RSS (/usr/bin/time -v), Vault requests by endpoint
(emulator counters delta), KDC AS/TGS requests (KDC log delta), exit codes,
and the ratio ours/theirs; plus the third-party packages each path imports
(one extra run with -X importtime, checked against what ours must import:
nothing on a and d, requests but no gssapi/requests_gssapi on b, all three on
c) and the image size when one is built.  In the same run: what the libraries
cost in ours' venv (import time and peak RSS of `python -c` with `import ssl,
http.client`, `import requests`, `import gssapi`, `import requests_gssapi`,
and the same imports chained in one process, as a cold run does them), path
a's wall time split into interpreter start, compile of the script and the
rest, the peak RSS of a, b and c split by what loads it, and, for comparison
only, ours on a, b and c through the console script pip writes (the module
from its .pyc).  The goals of issue 11 item 9 are printed as a table with
pass/miss next to the measured ratios.
Prints markdown tables and writes JSON.  It is a benchmark, not a test: it
exits non-zero only when our tool fails a run (or cannot run at all).

igwn-robot-auth==0.3.3 is installed from PyPI once into bench/.venv-anchor,
and ours' packages (requests, requests-gssapi, gssapi: what a copy-in host
has, without the development venv's test packages) into bench/.venv-ours,
both with the interpreter running this script, so both tools use one Python.
It has no --cafile: htgettoken trusts ssl.get_default_verify_paths(), which
honours SSL_CERT_FILE, so it gets SSL_CERT_FILE=<test CA> (the system trust
store is untouched), and -c FILE:<workdir>/ccache for its ticket.
Each tool has its own bearer file, vault token file and ccache; path a starts
from the state a successful run leaves, b from a stale JWT written over the
bearer file, c from no bearer file, no vault token and no ticket.

Usage: .venv/bin/python bench/bench.py [--reps N] [--json OUT]
"""

import argparse
import base64
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OURS_SCRIPT = os.path.join(REPO, "igwn_robot_get.py")
ANCHOR_DIR = os.path.join(HERE, ".venv-anchor")
ANCHOR_REQ = "igwn-robot-auth==0.3.3"
OURS_DIR = os.path.join(HERE, ".venv-ours")
OURS_REQ = ("requests", "requests-gssapi", "gssapi")  # what a copy-in host has
ANCHOR_MODULE = "igwn_robot_auth.tools.get"
OURS_MODULE = "igwn_robot_get"
TIME_BIN = "/usr/bin/time"
MINSECS = 3600  # both tools' default --minsecs
IMAGE = "igwn-robot-get:latest"
CONTAINERS_CONF = os.path.join(REPO, "containers", "containers.conf")

PATHS = [
    ("a", "token still fresh"),
    ("b", "stale token, cached vault token"),
    ("c", "cold: no vault token, no ticket"),
    ("d", "import of the module"),
]


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


# -- the reference tool's virtual environment --------------------------------

def anchor_python():
    return os.path.join(ANCHOR_DIR, "bin", "python")


def ensure_venv(directory, requirements):
    """Create ``directory`` as a venv holding ``requirements`` (cached by a stamp).

    The venv's python is the interpreter running us (venv resolves it to its base
    interpreter), so every tool runs on one Python. Returns (python, None) or
    (None, reason).
    """
    if isinstance(requirements, str):
        requirements = (requirements,)
    requirement = " ".join(requirements)  # the stamp's content
    stamp = os.path.join(directory, ".bench-stamp")
    py = os.path.join(directory, "bin", "python")
    if os.path.exists(stamp) and os.access(py, os.X_OK):
        with open(stamp) as f:
            if f.read().strip() == requirement:
                return py, None
    log("creating %s with %s from PyPI (once; cached)" % (directory, requirement))
    shutil.rmtree(directory, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", directory], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except (subprocess.CalledProcessError, OSError) as exc:
        return None, "venv creation failed: %s" % exc
    logfile = os.path.join(directory, "pip-install.log")
    with open(logfile, "w") as out:
        proc = subprocess.run(
            [py, "-m", "pip", "install", "--disable-pip-version-check",
             "--no-input"] + list(requirements),
            stdout=out, stderr=subprocess.STDOUT, timeout=900)
    if proc.returncode != 0:
        with open(logfile) as f:
            tail = f.read().splitlines()[-15:]
        return None, "pip install %s failed (see %s):\n%s" % (
            requirement, logfile, "\n".join(tail))
    with open(stamp, "w") as f:
        f.write(requirement + "\n")
    return py, None


def ensure_anchor():
    """bench/.venv-anchor with igwn-robot-auth==0.3.3: (python, versions) or
    (None, reason)."""
    py, reason = ensure_venv(ANCHOR_DIR, ANCHOR_REQ)
    return (py, anchor_version(py)) if py else (None, reason)


def ensure_ours():
    """bench/.venv-ours: what a copy-in host has for this tool (requests,
    requests-gssapi, gssapi), so that ours is not measured inside the
    development venv with its test packages. Falls back to this interpreter
    (said in the notes): (python, note or None)."""
    py, reason = ensure_venv(OURS_DIR, OURS_REQ)
    if py is None:
        note = "ours ran with %s, not bench/.venv-ours: %s" % (
            sys.executable, reason.splitlines()[0])
        log(note)
        return sys.executable, note
    return py, None


ANCHOR_DISTS = ("igwn-robot-auth", "igwn-auth-utils", "htgettoken", "gssapi", "requests")
OURS_DISTS = ("requests", "requests-gssapi", "gssapi", "urllib3")


def anchor_version(py, dists=ANCHOR_DISTS):
    """'name version ...' of ``dists`` in the venv of ``py`` (missing: '-')."""
    out = subprocess.run(
        [py, "-c", "import sys, importlib.metadata as m\n"
         "def v(d):\n    try:\n        return m.version(d)\n"
         "    except m.PackageNotFoundError:\n        return '-'\n"
         "print(' '.join('%s %s' % (d, v(d)) for d in sys.argv[1:]))"] + list(dists),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        universal_newlines=True)
    return out.stdout.strip()


# -- running one measured process ------------------------------------------

def run_measured(cmd, env, cwd, timeout=180):
    """Run cmd under /usr/bin/time -v (peak RSS); wall time measured here,
    CPU time (user + sys of the whole process tree) from wait4()."""
    tmp = tempfile.mkdtemp(prefix="bench-run-")
    tfile = os.path.join(tmp, "time")
    use_time = os.access(TIME_BIN, os.X_OK)
    full = [TIME_BIN, "-v", "-o", tfile] + cmd if use_time else cmd
    try:
        with open(os.path.join(tmp, "out"), "w+") as fout, \
                open(os.path.join(tmp, "err"), "w+") as ferr:
            t0 = time.perf_counter()
            proc = subprocess.Popen(full, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                    stdout=fout, stderr=ferr)
            killer = threading.Timer(timeout, proc.kill)
            killer.start()
            try:
                _, status, ru = os.wait4(proc.pid, 0)
            finally:
                killer.cancel()
            wall = time.perf_counter() - t0
            proc.returncode = (os.WEXITSTATUS(status) if os.WIFEXITED(status)
                               else -os.WTERMSIG(status))
            rc = proc.returncode
            fout.seek(0)
            ferr.seek(0)
            out, err = fout.read(), ferr.read()
        cpu = ru.ru_utime + ru.ru_stime
        rss_kb = ru.ru_maxrss  # KiB on Linux: the same figure time -v prints
        if use_time and os.path.exists(tfile):
            with open(tfile) as f:
                tv = f.read()
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", tv)
            rss_kb = int(m.group(1)) if m else rss_kb
            m = re.search(r"Exit status: (\d+)", tv)
            if m:
                rc = int(m.group(1))
            m = re.search(r"Command terminated by signal (\d+)", tv)
            if m:
                rc = -int(m.group(1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"wall": wall, "cpu": cpu, "rss_kb": rss_kb, "rc": rc, "stdout": out,
            "stderr": err}


# -- token files --------------------------------------------------------------

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def stale_jwt():
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": "bench"}
    payload = {"iss": "https://bench.invalid", "sub": "robot", "aud": "ANY",
               "scope": "read:/", "iat": now - 11400, "nbf": now - 11400,
               "exp": now - 600, "jti": "bench-stale", "ver": "scitoken:2.0"}
    return ".".join([b64url(json.dumps(header).encode()),
                     b64url(json.dumps(payload).encode()), b64url(b"x" * 64)])


def token_secs_left(path):
    try:
        with open(path) as f:
            tok = f.read().strip()
        part = tok.split(".")[1]
        part += "=" * (-len(part) % 4)
        return json.loads(base64.urlsafe_b64decode(part))["exp"] - time.time()
    except Exception:
        return None


def write_file(path, text):
    if os.path.lexists(path):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


def remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- the two tools ------------------------------------------------------------

class Tool:
    """One tool under test, with its own output, vault token and ccache files."""

    def __init__(self, key, label, python, bed, workdir):
        self.key = key
        self.label = label
        self.python = python
        self.bed = bed
        self.dir = os.path.join(workdir, key)
        os.makedirs(os.path.join(self.dir, "home"), mode=0o700)
        self.outfile = os.path.join(self.dir, "bt")
        self.vtfile = os.path.join(self.dir, "vt")
        self.ccache = os.path.join(self.dir, "ccache")
        self.pycache = os.path.join(self.dir, "pycache")

    def env(self):
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": os.path.join(self.dir, "home"),
            "LANG": "C.UTF-8",
            "KRB5_CONFIG": self.bed.krb5_conf,
            # never the default ccache /tmp/krb5cc_<uid>
            "KRB5CCNAME": "FILE:" + self.ccache,
        }
        return env

    def cmd(self, extra_python_args=()):
        raise NotImplementedError

    def import_cmd(self, extra=()):
        raise NotImplementedError


# what pip writes for [project.scripts] igwn-robot-get = "igwn_robot_get:main"
CONSOLE_SCRIPT = """import re
import sys
from igwn_robot_get import main
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(main())
"""


class Ours(Tool):
    def env(self):
        env = Tool.env(self)
        # keep the import path's .pyc out of the work tree (same speed)
        env["PYTHONPYCACHEPREFIX"] = self.pycache
        return env

    def cmd(self, extra_python_args=()):
        return [self.python] + list(extra_python_args) + [
            OURS_SCRIPT, "-a", self.bed.vault_url, "--cafile", self.bed.ca_file,
            "-k", self.bed.robot_keytab, "-o", self.outfile,
            "--vaulttokenfile", self.vtfile]

    def import_cmd(self, extra=()):
        return [self.python] + list(extra) + ["-c", "import " + OURS_MODULE]

    def console_cmd(self):
        """The same run through the console script pip writes for the
        ``igwn-robot-get`` entry point: the module comes from its .pyc."""
        script = os.path.join(self.dir, "bin", "igwn-robot-get")
        if not os.path.exists(script):
            os.makedirs(os.path.dirname(script), exist_ok=True)
            with open(script, "w") as f:
                f.write(CONSOLE_SCRIPT)
        return [self.python, script] + self.cmd()[2:]

    def import_env(self):
        env = self.env()
        env["PYTHONPATH"] = REPO
        return env

    def clear_ticket(self):
        pass  # in-memory ccache: nothing survives the process


class Theirs(Tool):
    def env(self):
        env = Tool.env(self)
        # htgettoken has no --cafile; it takes ssl.get_default_verify_paths(),
        # which honours SSL_CERT_FILE: point it at the test bed's CA only.
        env["SSL_CERT_FILE"] = self.bed.ca_file
        return env

    def cmd(self, extra_python_args=()):
        script = os.path.join(ANCHOR_DIR, "bin", "igwn-robot-get")
        return [self.python] + list(extra_python_args) + [
            script, "-a", self.bed.vault_url, "-k", self.bed.robot_keytab,
            "-c", "FILE:" + self.ccache, "-o", self.outfile,
            "--vaulttokenfile", self.vtfile]

    def import_cmd(self, extra=()):
        return [self.python] + list(extra) + ["-c", "import " + ANCHOR_MODULE]

    def import_env(self):
        return self.env()

    def clear_ticket(self):
        remove(self.ccache)


# -- one run of one path -----------------------------------------------------

def network_counts(bed):
    try:
        vault = dict(bed.emu.counters())
    except Exception as exc:  # pragma: no cover - emulator gone
        raise SystemExit("bench: cannot read emulator counters: %s" % exc)
    kdc = dict(bed.kdc_requests())
    return vault, kdc


def delta(after, before):
    out = {}
    for k, v in after.items():
        d = v - before.get(k, 0)
        if d:
            out[k] = d
    return out


def prepare(path, tool):
    if path == "a":
        left = token_secs_left(tool.outfile)
        if left is None or left < MINSECS + 120:
            return "bearer token not fresh before path a (%s s left)" % left
    elif path == "b":
        write_file(tool.outfile, stale_jwt())
        if not os.path.exists(tool.vtfile):
            return "no cached vault token before path b"
    elif path == "c":
        remove(tool.outfile)
        remove(tool.vtfile)
        tool.clear_ticket()
    return None


def run_once(bed, tool, path, extra_python_args=(), console=False):
    """One measured run of ``path``; ``console``: ours through its console
    script (the module imported from its .pyc) instead of the script."""
    problem = prepare(path, tool)
    if console:
        cmd, env = tool.console_cmd(), tool.import_env()
    elif path == "d":
        cmd, env = tool.import_cmd(extra_python_args), tool.import_env()
    else:
        cmd, env = tool.cmd(extra_python_args), tool.env()
    v0, k0 = network_counts(bed)
    res = run_measured(cmd, env, cwd=tool.dir)
    time.sleep(0.02)  # let the KDC finish its log line
    v1, k1 = network_counts(bed)
    res["vault"] = delta(v1, v0)
    res["kdc"] = {"AS": k1.get("AS", 0) - k0.get("AS", 0),
                  "TGS": k1.get("TGS", 0) - k0.get("TGS", 0)}
    res["prep_problem"] = problem
    if path in ("a", "b", "c") and res["rc"] == 0:
        left = token_secs_left(tool.outfile)
        if left is None or left < MINSECS:
            res["prep_problem"] = "exit 0 but no fresh token in the output file"
    return res


def emulator_rtt(bed, n=7):
    """Median time of one HTTPS request to the emulator on a kept-alive
    connection with TCP_NODELAY on the client, as urllib3 (requests) sends it:
    the per-request cost both tools pay on top of the server's own work."""
    import http.client
    import socket
    import ssl
    ctx = ssl.create_default_context(cafile=bed.ca_file)
    conn = http.client.HTTPSConnection("localhost", bed.vault_port, context=ctx, timeout=10)
    times = []
    try:
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(n + 1):
            t0 = time.perf_counter()
            conn.request("GET", "/_emu/counters")
            conn.getresponse().read()
            times.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return round(statistics.median(times[1:]) * 1000, 1)


def warm_up(bed, tool):
    """A cold fetch (not measured): token, vault token and ticket in place."""
    r = run_once(bed, tool, "c")
    if r["rc"] != 0 or r["prep_problem"]:
        return "warm-up fetch failed (exit %s%s): %s" % (
            r["rc"], ", " + r["prep_problem"] if r["prep_problem"] else "",
            last_line(r["stderr"]))
    return None


def last_line(text):
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


# -- statistics ----------------------------------------------------------------

def quantile(values, q):
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarise(runs):
    walls = [r["wall"] for r in runs]
    cpus = [r["cpu"] for r in runs]
    rss = [r["rss_kb"] for r in runs if r["rss_kb"] is not None]
    vault_total = {}
    for r in runs:
        for k, v in r["vault"].items():
            vault_total[k] = vault_total.get(k, 0) + v
    n = len(runs)
    vault_per_run = {k: v / n for k, v in sorted(vault_total.items())}
    kdc_per_run = {k: sum(r["kdc"][k] for r in runs) / n for k in ("AS", "TGS")}
    rcs = {}
    for r in runs:
        rcs[str(r["rc"])] = rcs.get(str(r["rc"]), 0) + 1
    return {
        "n": n,
        "wall_s": {"median": statistics.median(walls), "min": min(walls),
                   "max": max(walls), "q1": quantile(walls, 0.25),
                   "q3": quantile(walls, 0.75), "all": walls},
        "cpu_s": {"median": statistics.median(cpus), "min": min(cpus), "max": max(cpus),
                  "all": cpus},
        "peak_rss_kb": ({"median": statistics.median(rss), "min": min(rss),
                         "max": max(rss)} if rss else None),
        "vault_requests_per_run": vault_per_run,
        "vault_requests_total_per_run": sum(vault_per_run.values()),
        "kdc_requests_per_run": kdc_per_run,
        "exit_codes": rcs,
        "problems": sorted({r["prep_problem"] for r in runs if r["prep_problem"]}),
        "stderr_last": sorted({last_line(r["stderr"]) for r in runs
                               if r["rc"] != 0}),
    }


# -- imports: -X importtime ----------------------------------------------------

IMPORT_RE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")


def parse_importtime(stderr):
    """-> list of (name, self_us, cumulative_us, depth)"""
    out = []
    for line in stderr.splitlines():
        m = IMPORT_RE.match(line)
        if m:
            out.append((m.group(4), int(m.group(1)), int(m.group(2)),
                        (len(m.group(3)) - 1) // 2))
    return out


def stdlib_names():
    names = set(getattr(sys, "stdlib_module_names", ())) | set(sys.builtin_module_names)
    return names


def third_party(modnames, own):
    std = stdlib_names()
    tops = set()
    for name in modnames:
        top = name.split(".")[0]
        if top in std or top == own or top == "__main__":
            continue
        tops.add(top)
    return sorted(tops)


def installed(tool, tops):
    """Keep the names the tool's interpreter can find: -X importtime also lists
    optional imports that failed (brotli, simplejson, ...)."""
    if not tops:
        return tops
    code = ("import importlib.util, json, sys; print(json.dumps([n for n in sys.argv[1:] "
            "if importlib.util.find_spec(n) is not None]))")
    p = subprocess.run([tool.python, "-c", code] + tops, env=tool.import_env(),
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                       universal_newlines=True)
    try:
        return json.loads(p.stdout)
    except ValueError:
        return tops


def importtime_profile(tool, path, bed):
    """One extra, unmeasured run with -X importtime: what the path imports."""
    base = subprocess.run([tool.python, "-X", "importtime", "-c", "pass"],
                          env=tool.env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, universal_newlines=True)
    startup = {n for n, _, _, _ in parse_importtime(base.stderr)}
    r = run_once(bed, tool, path, ["-X", "importtime"])
    entries = parse_importtime(r["stderr"])
    names = [n for n, _, _, _ in entries if n not in startup]
    own = OURS_MODULE if isinstance(tool, Ours) else "igwn_robot_auth"
    tp = installed(tool, third_party(names, own))
    total_us = sum(c for n, _, c, d in entries if d == 0 and n not in startup)
    top = sorted(((c, n) for n, _, c, d in entries if n not in startup),
                 reverse=True)[:8]
    return {"rc": r["rc"], "modules_imported": len(names),
            "third_party_top_level": tp, "import_us_total": total_us,
            "largest_cumulative_us": [[n, c] for c, n in top]}


# -- what the libraries cost ----------------------------------------------------

# Each probe runs as `python -c` in ours' venv: the import timed in the process
# (perf_counter around the statement), the process's wall time and peak RSS.
IMPORT_PROBES = [
    ("pass", "pass"),
    ("ssl, http.client", "import ssl, http.client"),
    ("requests", "import requests"),
    ("gssapi", "import gssapi"),
    ("requests_gssapi", "import requests_gssapi"),
]
TIMED_IMPORT = "import time; t = time.perf_counter(); {0}; print(time.perf_counter() - t)"
# The comparisons: (what, against), with the figure it quotes.
IMPORT_DELTAS = [
    ("requests", "ssl, http.client", "about 80 ms and 7 MiB"),
    ("requests_gssapi", "gssapi", "about 150 ms and 14 MiB"),
]
# One process doing, step by step, what a cold run of ours does as a script
# (python compiles the whole script, runs the module's top, VaultClient imports
# requests and urllib3, the login gssapi then requests_gssapi): the peak RSS
# after each step, i.e. what each step adds to the peak of paths a, b and c.
# (name, label, statement); SCRIPT is ours' script.
IMPORT_CHAIN = [
    ("script_compile", "compile of igwn_robot_get.py (what running it as a script does)",
     "code = compile(open(SCRIPT).read(), SCRIPT, 'exec')"),
    ("script_top", "the module's top (its stdlib imports and definitions)",
     "import types; mod = types.ModuleType('igwn_robot_get'); mod.__file__ = SCRIPT; "
     "sys.modules['igwn_robot_get'] = mod; exec(code, mod.__dict__)"),
    ("ssl, http.client", "`import ssl, http.client`", "import ssl, http.client"),
    ("requests", "`import requests, urllib3`", "import requests, urllib3"),
    ("gssapi", "`import gssapi`", "import gssapi"),
    ("requests_gssapi", "`import requests_gssapi`", "import requests_gssapi"),
]
CHAIN_LABELS = dict([("start", "interpreter start")] + [(n, lb) for n, lb, _ in IMPORT_CHAIN])
# the chain's steps that each path goes through (the rest of its peak: the
# difference: network buffers, TLS handshakes, the Kerberos exchange, ...)
PATH_STEPS = {
    "a": ["start", "script_compile"],
    "b": ["start", "script_compile", "script_top", "ssl, http.client", "requests"],
    "c": ["start"] + [n for n, _, _ in IMPORT_CHAIN],
}
# Path a's own work, timed in the process: the script compiled and run as
# __main__ with ours' path-a arguments, os._exit wrapped to say how long the
# module's top and the fast path took (nothing printed: not the fast path).
FAST_PATH_CODE = """import os, sys, time
script = sys.argv[1]
src = open(script).read()
t0 = time.perf_counter()
code = compile(src, script, "exec")
t1 = time.perf_counter()
real_exit = os._exit
def _exit(status):
    t2 = time.perf_counter()
    sys.stdout.write("%r %r %d\\n" % (t1 - t0, t2 - t1, status))
    sys.stdout.flush()
    real_exit(status)
os._exit = _exit
sys.argv = sys.argv[1:]
exec(code, {"__name__": "__main__", "__file__": script, "__builtins__": __builtins__})
"""
# interpreter start and an exit like the fast path's (no teardown)
EXIT_CODE = "import os; os._exit(0)"
COMPILE_CODE = ("import time;s=open('igwn_robot_get.py').read();t=time.perf_counter();"
                "compile(s,'x','exec');print(time.perf_counter()-t)")


def chain_code():
    lines = ["import sys, time",
             "SCRIPT = sys.argv[1]",
             "def hwm():",
             "    with open('/proc/self/status') as f:",
             "        for line in f:",
             "            if line.startswith('VmHWM:'):",
             "                return int(line.split()[1])",
             "out = [('start', 0.0, hwm())]"]
    for name, _, stmt in IMPORT_CHAIN:
        lines += ["t = time.perf_counter()", stmt,
                  "out.append((%r, time.perf_counter() - t, hwm()))" % name]
    lines.append("for n, s, k in out: print('%s\\t%.6f\\t%d' % (n, s, k))")
    return "\n".join(lines) + "\n"


def float_out(res):
    """The float a probe printed, or None (probe failed)."""
    try:
        return float(res["stdout"].strip().splitlines()[-1]) if res["rc"] == 0 else None
    except (ValueError, IndexError):
        return None


def run_probe(tool, stmt):
    r = run_measured([tool.python, "-c", TIMED_IMPORT.format(stmt)], tool.env(), cwd=tool.dir)
    return {"import_s": float_out(r), "wall": r["wall"], "rss_kb": r["rss_kb"], "rc": r["rc"],
            "err": last_line(r["stderr"]) if r["rc"] else None}


def run_chain(tool):
    r = run_measured([tool.python, "-c", chain_code(), OURS_SCRIPT], tool.env(),
                     cwd=tool.dir)
    steps = {}
    if r["rc"] == 0:
        for ln in r["stdout"].splitlines():
            parts = ln.split("\t")
            if len(parts) == 3:
                steps[parts[0]] = {"import_s": float(parts[1]), "hwm_kb": int(parts[2])}
    return {"steps": steps, "rss_kb": r["rss_kb"], "rc": r["rc"],
            "err": last_line(r["stderr"]) if r["rc"] else None}


def run_compile(tool):
    r = run_measured([tool.python, "-c", COMPILE_CODE], tool.env(), cwd=REPO)
    return float_out(r)


def run_fast_path(tool):
    """(compile s, module top + fast path s) of one in-process run of path a,
    or None when the fast path did not answer."""
    r = run_measured([tool.python, "-c", FAST_PATH_CODE] + tool.cmd()[1:], tool.env(),
                     cwd=tool.dir)
    try:
        comp, rest, status = r["stdout"].split()
        return (float(comp), float(rest)) if r["rc"] == 0 and status == "0" else None
    except ValueError:
        return None


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise_costs(probe_runs, chain_runs):
    """Medians over the reps: probes by name, the chain's steps (import time
    and the peak RSS each step adds)."""
    probes = {}
    for name, _ in IMPORT_PROBES:
        rs = probe_runs.get(name, [])
        probes[name] = {
            "n": len(rs), "failed": sum(1 for r in rs if r["rc"] != 0),
            "import_ms": med([r["import_s"] * 1000 if r["import_s"] is not None else None
                              for r in rs]),
            "wall_ms": med([r["wall"] * 1000 for r in rs if r["rc"] == 0]),
            "peak_rss_kb": med([r["rss_kb"] for r in rs if r["rc"] == 0]),
            "errors": sorted({r["err"] for r in rs if r["err"]}),
        }
    def diff(a, b, key):
        return None if a.get(key) is None or b.get(key) is None else a[key] - b[key]

    deltas = []
    for what, against, quoted in IMPORT_DELTAS:
        a, b = probes.get(what, {}), probes.get(against, {})
        deltas.append({"what": what, "against": against, "issue_says": quoted,
                       "import_ms": diff(a, b, "import_ms"), "wall_ms": diff(a, b, "wall_ms"),
                       "peak_rss_kb": diff(a, b, "peak_rss_kb")})
    chain = []
    ok = [c for c in chain_runs if c["rc"] == 0 and len(c["steps"]) == len(IMPORT_CHAIN) + 1]
    names = ["start"] + [n for n, _, _ in IMPORT_CHAIN]
    for i, name in enumerate(names):
        adds = [c["steps"][name]["hwm_kb"] - (c["steps"][names[i - 1]]["hwm_kb"] if i else 0)
                for c in ok]
        chain.append({"step": name,
                      "import_ms": med([c["steps"][name]["import_s"] * 1000 for c in ok]),
                      "adds_kb": med(adds),
                      "hwm_kb": med([c["steps"][name]["hwm_kb"] for c in ok])})
    return {"probes": probes, "deltas": deltas, "chain": chain, "chain_runs_ok": len(ok),
            "chain_errors": sorted({c["err"] for c in chain_runs if c["err"]})}


def path_a_split(results):
    """Path a's wall time: interpreter start + compile of the script + the rest.
    The start is `python -c pass` (asked for) and, since the fast path leaves
    with os._exit and skips the interpreter's teardown, also `python -c
    'import os; os._exit(0)'`, from which the rest is reckoned."""
    o = results["paths"].get("a", {}).get("ours")
    sp = results.get("path_a_parts") or {}
    floor, comp = sp.get("floor_wall_ms"), sp.get("compile_ms")
    start = sp.get("exit_wall_ms", floor)
    if not o or floor is None or comp is None or start is None:
        return None
    wall = o["wall_s"]["median"] * 1000
    fast = sp.get("fast_path_ms")
    return {"wall_ms": wall, "floor_ms": floor, "start_ms": start, "compile_ms": comp,
            "fast_path_ms": fast, "fast_path_runs": sp.get("fast_path_runs"),
            "rest_ms": wall - start - comp - (fast or 0), "floor_rss_kb": sp.get("floor_rss_kb"),
            "script_lines": sp.get("script_lines"), "script_kib": sp.get("script_kib"),
}


def rss_splits(results):
    """Peak RSS of ours on paths a, b and c, by what accounts for it: the chain's
    steps that the path goes through, and the rest (the difference)."""
    chain = {c["step"]: c for c in ((results.get("costs") or {}).get("chain") or [])}
    out = {}
    for key, steps in PATH_STEPS.items():
        o = results["paths"].get(key, {}).get("ours")
        if not o or not o["peak_rss_kb"] or any(
                chain.get(st, {}).get("adds_kb") is None for st in steps):
            continue
        total = o["peak_rss_kb"]["median"]
        parts = [(st, chain[st]["adds_kb"]) for st in steps]
        out[key] = {"total_kb": total,
                    "parts_kb": parts + [("rest", total - sum(kb for _, kb in parts))]}
    return out


# -- image size -----------------------------------------------------------------

def image_report():
    podman = shutil.which("podman")
    if not podman:
        return {"available": False, "why": "podman not installed"}
    env = dict(os.environ)
    if os.path.exists(CONTAINERS_CONF):
        env["CONTAINERS_CONF"] = CONTAINERS_CONF

    def pod(*args):
        return subprocess.run([podman] + list(args), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True,
                              timeout=120)
    try:
        p = pod("image", "inspect", IMAGE)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"available": False, "why": "podman failed: %s" % exc}
    if p.returncode != 0:
        return {"available": False, "why": "no image %s has been built" % IMAGE}
    info = json.loads(p.stdout)[0]
    size = info.get("Size") or info.get("VirtualSize")
    labels = (info.get("Config") or {}).get("Labels") or info.get("Labels") or {}
    rep = {"available": True, "image": IMAGE, "id": info.get("Id", "")[:12],
           "size_bytes": size, "layers": len((info.get("RootFS") or {}).get("Layers") or [])}
    # which base: the OCI label, then the Dockerfile's last FROM (a base built
    # locally is named localhost/debian:..., which the short name finds)
    candidates = []
    if labels.get("org.opencontainers.image.base.name"):
        candidates.append(labels["org.opencontainers.image.base.name"])
    try:
        with open(os.path.join(REPO, "Dockerfile")) as f:
            froms = [ln.split()[1] for ln in f
                     if ln.strip().upper().startswith("FROM ") and len(ln.split()) > 1]
        if froms and "$" not in froms[-1]:
            candidates.append(froms[-1])
    except OSError:
        pass
    rep["base"] = candidates[0] if candidates else None
    for base in candidates:
        b = pod("image", "inspect", base)
        if b.returncode == 0:
            binfo = json.loads(b.stdout)[0]
            bsize = binfo.get("Size") or binfo.get("VirtualSize")
            rep["base"] = base
            rep["base_size_bytes"] = bsize
            rep["added_bytes"] = size - bsize
            rep["added_how"] = "image size minus base image size"
            return rep
    # base not available locally: sum the layers the history shows as ours
    h = pod("history", "--format", "json", IMAGE)
    if h.returncode == 0:
        try:
            hist = json.loads(h.stdout)
        except ValueError:
            hist = []
        added = 0
        for entry in hist:  # newest first; stop at the base's last layer
            created_by = entry.get("createdBy") or entry.get("CreatedBy") or ""
            comment = entry.get("comment") or entry.get("Comment") or ""
            if "FROM" in comment or entry.get("id", "") == "<missing>" and not created_by:
                break
            added += int(entry.get("size") or entry.get("Size") or 0)
        rep["added_bytes"] = added
        rep["added_how"] = "sum of the image's own layers (podman history)"
    return rep


# -- output -----------------------------------------------------------------------

def fmt_ms(s):
    ms = s * 1000
    return "%.0f" % ms if ms >= 100 else "%.1f" % ms


def fmt_mib(kb):
    return "%.1f" % (kb / 1024.0) if kb is not None else "?"


def fmt_num(x):
    return str(int(x)) if float(x).is_integer() else "%.2f" % x


def fmt_vault(per_run):
    if not per_run:
        return "0"
    total = sum(per_run.values())
    parts = ", ".join("%s %s" % (k, fmt_num(v)) for k, v in per_run.items())
    return "%s (%s)" % (fmt_num(total), parts)


def fmt_rcs(rcs):
    return ", ".join("%s×%d" % (k, v) for k, v in sorted(rcs.items()))


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def fmt_ratio(r):
    return "–" if r is None else ("%.3f" % r if r < 0.1 else "%.2f" % r)


def markdown(results):
    tools = results["tools"]
    lines = []
    lines.append("| Path | Tool | Wall median [min–max] ms | IQR ms | CPU ms | Peak RSS MiB | "
                 "Vault requests per run | KDC AS / TGS per run | Exit codes |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for key, title in PATHS:
        p = results["paths"].get(key)
        if not p:
            continue
        for tk in ("ours", "theirs"):
            s = p.get(tk)
            if s is None:
                continue
            w = s["wall_s"]
            lines.append("| %s %s | %s | **%s** [%s–%s] | %s–%s | %s | %s | %s | %s / %s | %s |" % (
                key, title, tools[tk]["label"], fmt_ms(w["median"]), fmt_ms(w["min"]),
                fmt_ms(w["max"]), fmt_ms(w["q1"]), fmt_ms(w["q3"]), fmt_ms(s["cpu_s"]["median"]),
                fmt_mib(s["peak_rss_kb"]["median"] if s["peak_rss_kb"] else None),
                fmt_vault(s["vault_requests_per_run"]),
                fmt_num(s["kdc_requests_per_run"]["AS"]),
                fmt_num(s["kdc_requests_per_run"]["TGS"]), fmt_rcs(s["exit_codes"])))
        r = p.get("ratio")
        if r:
            lines.append(("| %s | **ours / theirs** | **%s** | | %s | **%s** | %s / %s "
                          "| %s / %s | |") % (
                key, fmt_ratio(r["wall_median"]), fmt_ratio(r["cpu_median"]),
                fmt_ratio(r["peak_rss"]),
                fmt_num(p["ours"]["vault_requests_total_per_run"]),
                fmt_num(p["theirs"]["vault_requests_total_per_run"]),
                fmt_num(sum(p["ours"]["kdc_requests_per_run"].values())),
                fmt_num(sum(p["theirs"]["kdc_requests_per_run"].values()))))
    return "\n".join(lines)


def summary_table(results):
    """The compact table the README's Performance section shows."""
    P = results["paths"]
    lines = ["| Path | ours, median [min–max] | igwn-robot-get 0.3.3 | ours / theirs | "
             "CPU ms (ours / theirs) | Vault requests (ours / theirs) | "
             "KDC AS+TGS (ours / theirs) | Peak RSS MiB (ours / theirs) |",
             "|---|---|---|---|---|---|---|---|"]
    for key, title in PATHS:
        p = P.get(key, {})
        if "ours" not in p or "theirs" not in p:
            continue
        o, t = p["ours"], p["theirs"]

        def wall(x):
            w = x["wall_s"]
            return "%s ms [%s–%s]" % (fmt_ms(w["median"]), fmt_ms(w["min"]), fmt_ms(w["max"]))
        lines.append("| %s (%s) | %s | %s | %s | %s / %s | %s / %s | %s / %s | %s / %s |" % (
            key, title, wall(o), wall(t), fmt_ratio(p["ratio"]["wall_median"]),
            fmt_ms(o["cpu_s"]["median"]), fmt_ms(t["cpu_s"]["median"]),
            fmt_num(o["vault_requests_total_per_run"]), fmt_num(t["vault_requests_total_per_run"]),
            fmt_num(sum(o["kdc_requests_per_run"].values())),
            fmt_num(sum(t["kdc_requests_per_run"].values())),
            fmt_mib(o["peak_rss_kb"]["median"]), fmt_mib(t["peak_rss_kb"]["median"])))
    return "\n".join(lines) if len(lines) > 2 else ""


# What each path of ours must import (issue 11, items 1 and 9): third-party
# top-level packages that must / must not appear in its -X importtime profile.
KERBEROS_PACKAGES = ("gssapi", "requests_gssapi")
IMPORT_RULES = {
    "a": ("none", [], None),  # (said, must include, must exclude; None = nothing at all)
    "b": ("requests, no Kerberos import", ["requests"], list(KERBEROS_PACKAGES)),
    "c": ("requests, gssapi and requests_gssapi", ["requests"] + list(KERBEROS_PACKAGES), []),
    "d": ("none", [], None),
}


def imports_ok(key, tp):
    """None when not measured, else whether ``tp`` (third-party top-level names)
    follows IMPORT_RULES[key]."""
    if tp is None or key not in IMPORT_RULES:
        return None
    _, need, never = IMPORT_RULES[key]
    if never is None:
        return tp == []
    return all(n in tp for n in need) and not any(n in tp for n in never)


def fmt_tp(tp):
    return "?" if tp is None else ", ".join(tp) if tp else "none"


def goals(results):
    """Issue 11 item 9, as rows (goal, target, measured, met): figures, not
    assertions. met is None when a figure is missing (no anchor, ours failed)."""
    P = results["paths"]
    prof = results.get("import_profiles", {}).get("ours", {})
    out = []

    def both(k):
        return k in P and "ours" in P[k] and "theirs" in P[k] and P[k].get("ratio")

    def ours_ok(k):
        return k in P and "ours" in P[k] and list(P[k]["ours"]["exit_codes"]) == ["0"]

    def wall(k):
        o, t = P[k]["ours"]["wall_s"]["median"], P[k]["theirs"]["wall_s"]["median"]
        return "%s× (%s ms vs %s ms; CPU %s×)" % (
            fmt_ratio(P[k]["ratio"]["wall_median"]), fmt_ms(o), fmt_ms(t),
            fmt_ratio(P[k]["ratio"]["cpu_median"]))

    def reqs(k):
        o = P[k]["ours"]
        kdc = sum(o["kdc_requests_per_run"].values())
        return o["vault_requests_total_per_run"], kdc, "Vault %s, KDC %s" % (
            fmt_vault(o["vault_requests_per_run"]), fmt_num(kdc))

    if "a" in P:
        if ours_ok("a") and both("a"):
            v, kdc, said = reqs("a")
            r = P["a"]["ratio"]["wall_median"]
            out.append(("a: fresh token", "wall ≤ 0.1× the anchor, 0 requests",
                        "%s; %s" % (wall("a"), said), r <= 0.1 and v + kdc == 0))
        else:
            out.append(("a: fresh token", "wall ≤ 0.1× the anchor, 0 requests",
                        "not measured", None))
        tp = prof.get("a", {}).get("third_party_top_level")
        out.append(("a: fresh token imports", "no third-party package", fmt_tp(tp),
                    imports_ok("a", tp)))
    if "b" in P:
        tp = prof.get("b", {}).get("third_party_top_level")
        if ours_ok("b") and both("b"):
            v, kdc, said = reqs("b")
            r = P["b"]["ratio"]["wall_median"]
            kerb = [n for n in KERBEROS_PACKAGES if tp and n in tp]
            out.append(("b: renewal with a cached vault token",
                        "wall ≤ 0.7× the anchor, exactly 1 request, no Kerberos import",
                        "%s; %s; Kerberos import: %s" % (
                            wall("b"), said, "?" if tp is None else
                            ", ".join(kerb) if kerb else "none"),
                        r <= 0.7 and v == 1 and kdc == 0 and imports_ok("b", tp) is True))
        else:
            out.append(("b: renewal with a cached vault token",
                        "wall ≤ 0.7× the anchor, exactly 1 request, no Kerberos import",
                        "not measured", None))
    if "c" in P:
        if ours_ok("c") and both("c"):
            o, t = P["c"]["ours"], P["c"]["theirs"]
            v, tv = o["vault_requests_total_per_run"], t["vault_requests_total_per_run"]
            r = P["c"]["ratio"]["wall_median"]
            out.append(("c: cold run", "wall ≤ 1.0× the anchor, Vault requests ≤ the anchor's",
                        "%s; Vault %s vs the anchor's %s; KDC %s vs %s" % (
                            wall("c"), fmt_vault(o["vault_requests_per_run"]),
                            fmt_vault(t["vault_requests_per_run"]),
                            fmt_num(sum(o["kdc_requests_per_run"].values())),
                            fmt_num(sum(t["kdc_requests_per_run"].values()))),
                        r <= 1.0 and v <= tv))
        else:
            out.append(("c: cold run", "wall ≤ 1.0× the anchor, Vault requests ≤ the anchor's",
                        "not measured", None))
    for k, _ in PATHS:
        if k not in P:
            continue
        r = P[k]["ratio"].get("peak_rss") if both(k) else None
        if r is None:
            out.append(("%s: peak RSS" % k, "≤ 0.7× the anchor", "not measured", None))
            continue
        out.append(("%s: peak RSS" % k, "≤ 0.7× the anchor", "%s× (%s MiB vs %s MiB)" % (
            fmt_ratio(r), fmt_mib(P[k]["ours"]["peak_rss_kb"]["median"]),
            fmt_mib(P[k]["theirs"]["peak_rss_kb"]["median"])), r <= 0.7))
    return out


def imports_table(results):
    """Third-party packages per path, and whether ours imports what it must."""
    prof = results.get("import_profiles") or {}
    if not prof:
        return ""
    tools = results["tools"]

    def cell(pr):
        if pr is None:
            return "–"
        return "%d modules, %.0f ms import; third-party: %s" % (
            pr["modules_imported"], pr["import_us_total"] / 1000.0,
            fmt_tp(pr["third_party_top_level"]))
    others = [k for k in prof if k != "ours"]
    lines = ["Third-party packages imported per path (one extra run with `-X importtime`, "
             "beyond interpreter start-up; ours must import what the last columns say):\n",
             "| Path | %s | ours must import | ours |" % " | ".join(
                 tools[k]["label"] for k in ["ours"] + others if k in prof),
             "|---|%s---|---|" % ("---|" * len(prof))]
    for key, _ in PATHS:
        if not any(key in prof[k] for k in prof):
            continue
        pr = prof.get("ours", {}).get(key)
        ok = imports_ok(key, pr["third_party_top_level"] if pr else None)
        lines.append("| %s | %s | %s | %s |" % (
            key, " | ".join(cell(prof[k].get(key)) for k in ["ours"] + others if k in prof),
            IMPORT_RULES[key][0], fmt_met(ok)))
    return "\n".join(lines)


def fmt_met(ok):
    return "–" if ok is None else "pass" if ok else "**miss**"


def fmt_d(x, fmt="%+.1f"):
    return "?" if x is None else fmt % x


def costs_table(results):
    """What requests, gssapi and requests-gssapi cost (medians over the reps)."""
    c = results.get("costs")
    if not c:
        return ""
    n = max((p["n"] for p in c["probes"].values()), default=0)
    lines = ["What the libraries cost, in ours' venv (`python -c STATEMENT`, median of %d; "
             "import time measured in the process around the statement):\n" % n,
             "| `python -c` | Import ms | Process wall ms | Peak RSS MiB |",
             "|---|---|---|---|"]
    for name, stmt in IMPORT_PROBES:
        p = c["probes"][name]
        if p["failed"] == p["n"]:
            lines.append("| `%s` | failed: %s | | |" % (stmt, "; ".join(p["errors"])))
            continue
        lines.append("| `%s` | %s | %s | %s |" % (
            stmt, "–" if name == "pass" else fmt_d(p["import_ms"], "%.1f"),
            fmt_d(p["wall_ms"], "%.1f"), fmt_mib(p["peak_rss_kb"])))
    for d in c["deltas"]:
        lines.append("| `%s` minus `%s` (issue: %s) | **%s** | %s | **%s** |" % (
            d["what"], d["against"], d["issue_says"], fmt_d(d["import_ms"]),
            fmt_d(d["wall_ms"]), fmt_d(d["peak_rss_kb"] and d["peak_rss_kb"] / 1024.0)
            if d["peak_rss_kb"] is not None else "?"))
    ch = c.get("chain") or []
    if c.get("chain_runs_ok"):
        lines += ["", "What a run of ours loads, step by step in one process, in the order "
                  "a cold run as a script does it (median of %d):\n" % c["chain_runs_ok"],
                  "| Step | ms | Adds to peak RSS MiB | Peak RSS after MiB |",
                  "|---|---|---|---|"]
        for st in ch:
            lines.append("| %s | %s | %s | %s |" % (
                CHAIN_LABELS[st["step"]],
                "–" if st["step"] == "start" else fmt_d(st["import_ms"], "%.1f"),
                fmt_mib(st["adds_kb"]), fmt_mib(st["hwm_kb"])))
    elif c.get("chain_errors"):
        lines.append("\nImport chain failed: %s" % "; ".join(c["chain_errors"]))
    return "\n".join(lines)


def splits_text(results):
    """Path a's wall time and path c's peak RSS, split into their parts."""
    out = []
    a = results.get("path_a_split")
    if a:
        w = a["wall_ms"]

        def pc(x):
            return "%.0f%%" % (100.0 * x / w) if w else "?"
        fast = a.get("fast_path_ms")
        out.append(
            "Path a (ours, fresh token) wall time %s ms (medians over the same reps) = "
            "interpreter start %s ms (%s; `python -c pass` %s ms, which includes the "
            "interpreter's teardown; the start here is `python -c 'import os; os._exit(0)'`, "
            "as the fast path exits) + compile of igwn_robot_get.py (%s lines, %s KiB, "
            "in-process `compile()`) %s ms (%s) + the module's top and the fast path "
            "(timed in-process up to its os._exit) %s ms (%s) + unaccounted %s ms (%s)." % (
                fmt_ms(w / 1000), fmt_d(a["start_ms"], "%.1f"), pc(a["start_ms"]),
                fmt_d(a["floor_ms"], "%.1f"), a["script_lines"], a["script_kib"],
                fmt_d(a["compile_ms"], "%.1f"), pc(a["compile_ms"]),
                fmt_d(fast, "%.1f") if fast is not None else "? (the fast path did not "
                "answer in the probe)", pc(fast) if fast is not None else "?",
                fmt_d(a["rest_ms"], "%+.1f"), pc(a["rest_ms"])))
    sp = results.get("rss_splits") or {}
    if sp:
        keys = [k for k, _ in PATHS if k in sp]
        lines = ["Peak RSS of ours by what accounts for it (MiB; the steps of the table "
                 "above that each path goes through; the rest is the difference: buffers, "
                 "TLS, the Kerberos exchange):\n",
                 "| Part | %s |" % " | ".join("path %s" % k for k in keys),
                 "|---|%s" % ("---|" * len(keys))]
        for name in ["start"] + [n for n, _, _ in IMPORT_CHAIN] + ["rest"]:
            cells = []
            for k in keys:
                kb = dict(sp[k]["parts_kb"]).get(name)
                cells.append("–" if kb is None else "%s (%.0f%%)" % (
                    fmt_mib(kb), 100.0 * kb / sp[k]["total_kb"] if sp[k]["total_kb"] else 0))
            lines.append("| %s | %s |" % (CHAIN_LABELS.get(name, "the rest"), " | ".join(cells)))
        lines.append("| **peak RSS** | %s |" % " | ".join(
            "**%s**" % fmt_mib(sp[k]["total_kb"]) for k in keys))
        out.append("\n".join(lines))
    return "\n\n".join(out)


def console_table(results):
    """Ours through its console script, for comparison (not a goal)."""
    con = results.get("console") or {}
    if not con:
        return ""
    lines = ["For comparison, not a goal: ours run through the console script pip writes for "
             "`igwn-robot-get` (the module imported from its .pyc, so nothing compiled), "
             "same reps, right after each run of the script:\n",
             "| Path | Wall median [min–max] ms | / anchor | CPU ms | Peak RSS MiB | / anchor "
             "| Vault requests per run | KDC AS / TGS | Exit codes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, title in PATHS:
        sm = con.get(key)
        if not sm:
            continue
        w, r = sm["wall_s"], sm.get("ratio") or {}
        lines.append("| %s %s | %s [%s–%s] | %s | %s | %s | %s | %s | %s / %s | %s |" % (
            key, title, fmt_ms(w["median"]), fmt_ms(w["min"]), fmt_ms(w["max"]),
            fmt_ratio(r.get("wall_median")), fmt_ms(sm["cpu_s"]["median"]),
            fmt_mib(sm["peak_rss_kb"]["median"] if sm["peak_rss_kb"] else None),
            fmt_ratio(r.get("peak_rss")), fmt_vault(sm["vault_requests_per_run"]),
            fmt_num(sm["kdc_requests_per_run"]["AS"]), fmt_num(sm["kdc_requests_per_run"]["TGS"]),
            fmt_rcs(sm["exit_codes"])))
    return "\n".join(lines)


def goals_table(results):
    g = results.get("goals")
    if not g:
        return ""
    lines = ["Goals (issue 11 item 9; ratios of medians, ours / igwn-robot-get 0.3.3; "
             "figures, not assertions):\n",
             "| Goal | Target | Measured | Result |", "|---|---|---|---|"]
    for row in g:
        lines.append("| %s | %s | %s | %s |" % (row["goal"], row["target"], row["measured"],
                                                 fmt_met(row["met"])))
    return "\n".join(lines)


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    cpu = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = "%.0f GiB" % (int(f.readline().split()[1]) / 1024 / 1024)
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem,
            "kernel": platform.release(), "os": platform.platform()}


# -- main -----------------------------------------------------------------------

def wait_for_testbed(timeout):
    tb = os.path.join(REPO, "tests", "testbed.py")
    deadline = time.time() + timeout
    while not os.path.exists(tb):
        if time.time() > deadline:
            raise SystemExit("bench: %s does not exist" % tb)
        time.sleep(5)
    sys.path.insert(0, os.path.join(REPO, "tests"))
    import testbed  # tests/testbed.py
    return testbed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=9,
                    help="measured runs per tool and path (default 9)")
    ap.add_argument("--json", default=os.path.join(HERE, "results.json"),
                    help="write results here (default bench/results.json)")
    ap.add_argument("--paths", default="abcd", help="subset of abcd (default all)")
    ap.add_argument("--no-anchor", action="store_true",
                    help="skip igwn-robot-get 0.3.3 (ours only)")
    ap.add_argument("--require-anchor", action="store_true",
                    help="fail when igwn-robot-get 0.3.3 cannot be installed or run")
    ap.add_argument("--emulator", default=None,
                    help="Vault emulator script to run instead of tests/vault_emulator.py "
                         "(for experiments)")
    ap.add_argument("--wait-testbed", type=float, default=0,
                    help="seconds to wait for tests/testbed.py to appear")
    args = ap.parse_args(argv)
    if args.reps < 1:
        ap.error("--reps must be at least 1")
    started = time.time()

    if not os.path.exists(OURS_SCRIPT):
        log("%s does not exist" % OURS_SCRIPT)
        return 1
    notes = []
    theirs_py = None
    anchor_ver = None
    if not args.no_anchor:
        theirs_py, anchor_ver = ensure_anchor()
        if theirs_py is None:
            notes.append("igwn-robot-get 0.3.3 not measured: " + anchor_ver)
            log(notes[-1])
            if args.require_anchor:
                return 1
    testbed = wait_for_testbed(args.wait_testbed)

    workdir = tempfile.mkdtemp(prefix="igwn-bench-")
    if args.emulator:
        testbed.EMULATOR = os.path.abspath(args.emulator)
        notes.append("Vault emulator: %s" % testbed.EMULATOR)
    bed = testbed.Testbed(os.path.join(workdir, "bed"))
    # a SIGTERM (make's Ctrl-C, CI timeout) must still stop the KDC and emulator
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    bed.start()
    try:
        ours_py, why = ensure_ours()
        if why:
            notes.append(why)
        tools = {"ours": Ours("ours", "ours (igwn_robot_get.py)", ours_py, bed, workdir)}
        if theirs_py:
            tools["theirs"] = Theirs("theirs", "igwn-robot-get 0.3.3", theirs_py, bed, workdir)
        results = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": "make bench  (.venv/bin/python bench/bench.py --reps %d)" % args.reps,
            "reps": args.reps,
            "machine": machine(),
            "python": {"ours": ours_py, "theirs": theirs_py,
                       "version": platform.python_version()},
            "anchor_versions": anchor_ver if theirs_py else None,
            "ours_versions": anchor_version(ours_py, OURS_DISTS),
            "tools": {k: {"label": t.label, "cmd": t.cmd()} for k, t in tools.items()},
            "paths": {},
            "notes": notes,
        }
        # warm-up: one cold fetch per tool (not measured): page cache, .pyc,
        # and the state path a starts from
        broken = set()
        for k, t in tools.items():
            why = warm_up(bed, t)
            if why:
                notes.append("%s: %s" % (t.label, why))
                log(notes[-1])
                broken.add(k)
        ok_tools = [k for k in tools if k not in broken]
        runs = {}
        floor = {}
        a_floor, a_exit, a_compile, a_fast = [], [], [], []
        console = {}
        results["emulator_rtt_ms"] = emulator_rtt(bed)
        if "ours" in ok_tools:  # the console script's .pyc, written once (not measured)
            run_once(bed, tools["ours"], "a", console=True)
        for key, title in PATHS:
            if key not in args.paths:
                continue
            log("path %s (%s): %d reps" % (key, title, args.reps))
            for k in ok_tools:
                runs[(key, k)] = []
            for rep in range(args.reps):
                order = ok_tools if rep % 2 == 0 else list(reversed(ok_tools))
                for k in order:
                    if key == "d":  # the interpreter's own floor, same env
                        floor.setdefault(k, []).append(
                            run_measured([tools[k].python, "-c", "pass"],
                                         tools[k].import_env(), cwd=tools[k].dir))
                    if key == "a" and k == "ours":  # path a's split, same rep
                        a_floor.append(run_measured([tools[k].python, "-c", "pass"],
                                                    tools[k].env(), cwd=tools[k].dir))
                        a_exit.append(run_measured([tools[k].python, "-c", EXIT_CODE],
                                                   tools[k].env(), cwd=tools[k].dir))
                        a_compile.append(run_compile(tools[k]))
                        a_fast.append(run_fast_path(tools[k]))
                    r = run_once(bed, tools[k], key)
                    if r["rc"] != 0:
                        log("%s path %s rep %d: exit %s: %s" % (
                            tools[k].label, key, rep, r["rc"], last_line(r["stderr"])))
                    runs[(key, k)].append(r)
                    if key in ("a", "b", "c") and r["rc"] != 0:
                        warm_up(bed, tools[k])  # restore the state for the next rep
                    if key in ("a", "b", "c") and k == "ours":  # for comparison only
                        r = run_once(bed, tools[k], key, console=True)
                        console.setdefault(key, []).append(r)
                        if r["rc"] != 0:
                            warm_up(bed, tools[k])
            summ = {k: summarise(runs[(key, k)]) for k in ok_tools}
            if "ours" in summ and "theirs" in summ:
                o, t = summ["ours"], summ["theirs"]
                summ["ratio"] = {
                    "wall_median": ratio(o["wall_s"]["median"], t["wall_s"]["median"]),
                    "cpu_median": ratio(o["cpu_s"]["median"], t["cpu_s"]["median"]),
                    "peak_rss": ratio(o["peak_rss_kb"] and o["peak_rss_kb"]["median"],
                                      t["peak_rss_kb"] and t["peak_rss_kb"]["median"]),
                    "vault_requests": ratio(o["vault_requests_total_per_run"],
                                            t["vault_requests_total_per_run"]),
                }
            results["paths"][key] = summ
        if a_floor:
            with open(OURS_SCRIPT, "rb") as f:
                src = f.read()
            results["path_a_parts"] = {
                "floor_wall_ms": med([r["wall"] * 1000 for r in a_floor]),
                "floor_rss_kb": med([r["rss_kb"] for r in a_floor]),
                "exit_wall_ms": med([r["wall"] * 1000 for r in a_exit]),
                "fast_path_ms": med([f[1] * 1000 for f in a_fast if f]),
                "fast_path_runs": sum(1 for f in a_fast if f),
                "compile_ms": med([c * 1000 if c is not None else None for c in a_compile]),
                "script_lines": src.count(b"\n"), "script_kib": round(len(src) / 1024.0, 1)}
        results["console"] = {}
        for key, rs in console.items():
            sm = summarise(rs)
            t = results["paths"][key].get("theirs")
            if t:
                sm["ratio"] = {
                    "wall_median": ratio(sm["wall_s"]["median"], t["wall_s"]["median"]),
                    "cpu_median": ratio(sm["cpu_s"]["median"], t["cpu_s"]["median"]),
                    "peak_rss": ratio(sm["peak_rss_kb"] and sm["peak_rss_kb"]["median"],
                                      t["peak_rss_kb"] and t["peak_rss_kb"]["median"])}
            results["console"][key] = sm
        # what requests, gssapi and requests-gssapi cost, in ours' venv
        if "ours" in ok_tools:
            log("import costs in ours' venv: %d reps" % args.reps)
            probe_runs, chain_runs = {}, []
            for rep in range(args.reps):
                order = IMPORT_PROBES if rep % 2 == 0 else list(reversed(IMPORT_PROBES))
                for name, stmt in order:
                    probe_runs.setdefault(name, []).append(run_probe(tools["ours"], stmt))
                chain_runs.append(run_chain(tools["ours"]))
            results["costs"] = summarise_costs(probe_runs, chain_runs)
        results["floor"] = {k: {"wall_median_s": statistics.median(r["wall"] for r in v),
                                "peak_rss_kb": statistics.median(r["rss_kb"] or 0 for r in v)}
                            for k, v in floor.items()}
        # what each path imports (one extra run each, with -X importtime)
        profiles = {}
        for k in ok_tools:
            profiles[k] = {}
            for key, _ in PATHS:
                if key in args.paths:
                    if key == "a" and token_secs_left(tools[k].outfile) is None:
                        warm_up(bed, tools[k])
                    profiles[k][key] = importtime_profile(tools[k], key, bed)
        results["import_profiles"] = profiles
        results["notes"] = notes
    finally:
        bed.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    results["image"] = image_report()
    results["goals"] = [{"goal": g, "target": t, "measured": m, "met": ok}
                        for g, t, m, ok in goals(results)]
    results["path_a_split"] = path_a_split(results)
    results["rss_splits"] = rss_splits(results)
    results["elapsed_s"] = round(time.time() - started, 1)

    # -- report
    m = results["machine"]
    print("## igwn-robot-get benchmark: ours vs igwn-robot-get 0.3.3\n")
    print("%s, %s, %s cores, %s RAM, Linux %s, Python %s; %d reps per tool and path, "
          "interleaved; one MIT KDC + Vault emulator (TLS) on 127.0.0.1.\n" % (
              results["date"], m["cpu"], m["cores"], m["memory"], m["kernel"],
              results["python"]["version"], args.reps))
    print("Ours from %s (%s); the anchor from %s (%s).\n" % (
        os.path.relpath(results["python"]["ours"], REPO), results["ours_versions"],
        os.path.relpath(results["python"]["theirs"], REPO) if results["python"]["theirs"]
        else "–", results["anchor_versions"] or "not measured"))
    print(markdown(results))
    print()
    summ = summary_table(results)
    if summ:
        print("Summary (the README's Performance table):\n")
        print(summ)
        print()
    fl = results.get("floor") or {}
    if fl:
        print("Interpreter floor (`python -c pass` in each venv, same Python): %s.\n" % "; ".join(
            "%s %s ms, %s MiB" % (tools[k].label, fmt_ms(v["wall_median_s"]),
                                  fmt_mib(v["peak_rss_kb"])) for k, v in fl.items()))
    rtt = results["emulator_rtt_ms"]
    print("Emulator round trip (one request on a kept-alive HTTPS connection, median of 7): "
          "%s ms%s\n" % (rtt, "." if rtt < 20 else
                          ": the emulator stalls each response (no TCP_NODELAY: Nagle's algorithm "
                          "meets delayed ACK); every Vault request of both tools pays this, "
                          "which a real Vault server (Go sets TCP_NODELAY) does not charge."))
    for part in (imports_table(results), costs_table(results), splits_text(results),
                 console_table(results), goals_table(results)):
        if part:
            print(part)
            print()
    img = results["image"]
    if img.get("available"):
        print("Image %s: %.1f MB%s." % (
            img["image"], img["size_bytes"] / 1e6,
            "; adds %.1f MB on top of its base %s (%s)" % (
                img["added_bytes"] / 1e6, img.get("base") or "?", img["added_how"])
            if img.get("added_bytes") is not None else ""))
    else:
        print("Image: not reported (%s)." % img.get("why"))
    for key, _ in PATHS:
        for k in ("ours", "theirs"):
            sm = results["paths"].get(key, {}).get(k)
            if sm and list(sm["exit_codes"]) != ["0"]:
                print("Note: %s, path %s: exit codes %s; last stderr line: %s" % (
                    tools[k].label, key, fmt_rcs(sm["exit_codes"]),
                    " / ".join(sm["stderr_last"]) or "(none)"))
            if sm and sm["problems"]:
                print("Note: %s, path %s: %s" % (tools[k].label, key, "; ".join(sm["problems"])))
    for key, sm in sorted((results.get("console") or {}).items()):
        if list(sm["exit_codes"]) != ["0"]:
            print("Note: ours through its console script, path %s: exit codes %s; last stderr "
                  "line: %s" % (key, fmt_rcs(sm["exit_codes"]),
                                " / ".join(sm["stderr_last"]) or "(none)"))
    for n in results["notes"]:
        print("Note: " + n)
    print("\nElapsed %.0f s; JSON: %s" % (results["elapsed_s"], args.json))

    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
        f.write("\n")

    # a benchmark, not a test: fail only when ours cannot do its job
    ours_bad = "ours" in broken or any(
        list(results["paths"].get(k, {}).get("ours", {}).get("exit_codes", {"0": 1})) != ["0"]
        for k in "abcd") or any(
        list(sm["exit_codes"]) != ["0"] for sm in (results.get("console") or {}).values())
    return 1 if ours_bad else 0


if __name__ == "__main__":
    sys.exit(main())
