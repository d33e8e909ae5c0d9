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
(one extra run with -X importtime) and the image size when one is built.
Prints markdown tables and writes JSON.  It is a benchmark, not a test: it
exits non-zero only when our tool fails a run (or cannot run at all).

igwn-robot-auth==0.3.3 is installed from PyPI once into bench/.venv-anchor,
with the interpreter running this script, so both tools use one Python.
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
OURS_REQ = "gssapi"
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


def ensure_venv(directory, requirement):
    """Create ``directory`` as a venv holding ``requirement`` (cached by a stamp).

    The venv's python is the interpreter running us (venv resolves it to its base
    interpreter), so every tool runs on one Python. Returns (python, None) or
    (None, reason).
    """
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
             "--no-input", requirement],
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
    """bench/.venv-ours: what a copy-in host has for this tool (python-gssapi
    only), so that ours is not measured inside the development venv with its
    test packages. Falls back to this interpreter."""
    py, reason = ensure_venv(OURS_DIR, OURS_REQ)
    if py is None:
        log("using %s for ours: %s" % (sys.executable, reason.splitlines()[0]))
        return sys.executable
    return py


def anchor_version(py):
    out = subprocess.run(
        [py, "-c", "import importlib.metadata as m; print(' '.join("
         "'%s %s' % (d, m.version(d)) for d in ('igwn-robot-auth', "
         "'igwn-auth-utils', 'htgettoken', 'gssapi', 'requests')))"],
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


def run_once(bed, tool, path, extra_python_args=()):
    problem = prepare(path, tool)
    if path == "d":
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


def goals(results):
    """Issue #7 item 2, as figures (not assertions)."""
    P = results["paths"]
    out = []

    def have(k):
        return k in P and "ours" in P[k] and "theirs" in P[k] and P[k].get("ratio")

    def ours_ok(k):
        return k in P and "ours" in P[k] and list(P[k]["ours"]["exit_codes"]) == ["0"]

    prof = results.get("import_profiles", {})
    if ours_ok("a"):
        o = P["a"]["ours"]
        net = o["vault_requests_total_per_run"] + sum(o["kdc_requests_per_run"].values())
        tp = prof.get("ours", {}).get("a", {}).get("third_party_top_level")
        r = P["a"]["ratio"]["wall_median"] if have("a") else None
        ok = None if r is None else (r <= 0.1 and net == 0 and tp == [])
        out.append(("a: ≥10× faster, zero network, no third-party import",
                    "ratio %s, %s network requests, third-party imports: %s" % (
                        fmt_ratio(r), fmt_num(net), ", ".join(tp) if tp else "none"
                        if tp is not None else "?"), ok))
    if ours_ok("b"):
        o = P["b"]["ours"]
        v = o["vault_requests_total_per_run"]
        k = sum(o["kdc_requests_per_run"].values())
        out.append(("b: exactly one Vault request, no KDC traffic",
                    "%s Vault (%s), %s KDC" % (fmt_num(v), fmt_vault(o["vault_requests_per_run"]),
                                               fmt_num(k)), v == 1 and k == 0))
    if ours_ok("c") and have("c"):
        o, t = P["c"]["ours"], P["c"]["theirs"]
        ov, tv = o["vault_requests_total_per_run"], t["vault_requests_total_per_run"]
        ok_ = sum(o["kdc_requests_per_run"].values())
        tk_ = sum(t["kdc_requests_per_run"].values())
        r = P["c"]["ratio"]["wall_median"]
        out.append(("c: no more Vault/KDC requests than igwn-robot-get, and faster",
                    "Vault %s vs %s, KDC %s vs %s, time ratio %s" % (
                        fmt_num(ov), fmt_num(tv), fmt_num(ok_), fmt_num(tk_), fmt_ratio(r)),
                    ov <= tv and ok_ <= tk_ and r < 1))
    if "d" in P and "ours" in P["d"]:
        tp = prof.get("ours", {}).get("d", {}).get("third_party_top_level")
        out.append(("d: importing the module imports no third-party package",
                    "third-party: %s" % (", ".join(tp) if tp else "none" if tp is not None
                                         else "?"), tp == []))
    rs = [(k, P[k]["ratio"]["peak_rss"]) for k, _ in PATHS if have(k)
          and P[k]["ratio"].get("peak_rss") is not None]
    if rs:
        out.append(("peak RSS under half of igwn-robot-get's on every path",
                    ", ".join("%s %s" % (k, fmt_ratio(r)) for k, r in rs),
                    all(r < 0.5 for _, r in rs)))
    return out


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
        ours_py = ensure_ours()
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
        results["emulator_rtt_ms"] = emulator_rtt(bed)
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
                    r = run_once(bed, tools[k], key)
                    if r["rc"] != 0:
                        log("%s path %s rep %d: exit %s: %s" % (
                            tools[k].label, key, rep, r["rc"], last_line(r["stderr"])))
                    runs[(key, k)].append(r)
                    if key in ("a", "b", "c") and r["rc"] != 0:
                        warm_up(bed, tools[k])  # restore the state for the next rep
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
    results["goals"] = [{"goal": g, "figures": f, "met": ok} for g, f, ok in goals(results)]
    results["elapsed_s"] = round(time.time() - started, 1)

    # -- report
    m = results["machine"]
    print("## igwn-robot-get benchmark: ours vs igwn-robot-get 0.3.3\n")
    print("%s, %s, %s cores, %s RAM, Linux %s, Python %s; %d reps per tool and path, "
          "interleaved; one MIT KDC + Vault emulator (TLS) on 127.0.0.1.\n" % (
              results["date"], m["cpu"], m["cores"], m["memory"], m["kernel"],
              results["python"]["version"], args.reps))
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
    prof = results["import_profiles"]
    if prof:
        print("Third-party packages imported per path (from `-X importtime`, "
              "beyond interpreter start-up):\n")
        print("| Path | %s |" % " | ".join(tools[k].label for k in prof))
        print("|---|%s" % ("---|" * len(prof)))
        for key, _ in PATHS:
            cells = []
            for k in prof:
                pr = prof[k].get(key)
                if pr is None:
                    cells.append("–")
                    continue
                tp = pr["third_party_top_level"]
                cells.append("%d modules, %.0f ms import; third-party: %s" % (
                    pr["modules_imported"], pr["import_us_total"] / 1000.0,
                    ", ".join(tp) if tp else "none"))
            print("| %s | %s |" % (key, " | ".join(cells)))
        print()
    if results["goals"]:
        print("Goals (issue #7 item 2; figures, not assertions):\n")
        print("| Goal | Figures | Met |")
        print("|---|---|---|")
        for g in results["goals"]:
            print("| %s | %s | %s |" % (g["goal"], g["figures"], "–" if g["met"] is None
                                         else "yes" if g["met"] else "**no**"))
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
        for k in "abcd")
    return 1 if ours_bad else 0


if __name__ == "__main__":
    sys.exit(main())
