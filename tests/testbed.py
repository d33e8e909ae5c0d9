"""A local Kerberos KDC and Vault emulator for testing igwn_robot_get.py.

`Testbed(workdir)` starts, on loopback only and on free ports:

- a real MIT KDC (Debian's krb5kdc) for realm LIGO.ORG, with the robot
  robot/ci.ligo.org (keytab `.robot_keytab`), a second robot other/ci.ligo.org
  (keytab `.other_keytab`, no refresh token stored in Vault) and the Vault
  service principals host/localhost, host/127.0.0.1 and host/vault.proxied.test
  (keytab `.service_keytab`);
- a test CA and a server certificate for localhost, vault.proxied.test,
  127.0.0.1 and ::1;
- the Vault emulator (vault_emulator.py) over TLS, driven through `.emu`, with
  a real Kerberos replay cache (`.rcache`, a file in the bed's directory) and a
  standby listener (`.standby_url`: https://127.0.0.1:<port>, every /v1/ call
  answered 307 to https://localhost:<vault_port>; `.emu.standby(...)`);
- a CONNECT proxy (connect_proxy.py, in this process; `.proxy_url`,
  `.proxy_connects()`) that alone resolves vault.proxied.test to 127.0.0.1
  (`.proxied_vault_url`).

Use it as a context manager, or from a shell:
`python3 tests/testbed.py up DIR` writes DIR/env.sh and DIR/testbed.json and
stays up until SIGTERM or SIGINT.
"""

import argparse
import base64
import datetime
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TOOL = os.path.join(REPO, "igwn_robot_get.py")
EMULATOR = os.path.join(HERE, "vault_emulator.py")

UTC = datetime.timezone(datetime.timedelta(0))
REALM = "LIGO.ORG"
ROBOT = "robot/ci.ligo.org"
OTHER = "other/ci.ligo.org"
SERVICE = "host/localhost"
PROXIED_HOST = "vault.proxied.test"  # resolved by the test proxy only
SERVICES = (SERVICE, "host/127.0.0.1", "host/" + PROXIED_HOST)
KRB5_SBIN = "/usr/sbin"

__all__ = ["MALFORMED_JWTS", "OTHER", "PROXIED_HOST", "REALM", "REPO", "ROBOT", "TOOL",
           "EmuClient", "Testbed", "jwt_claims", "leaked_secrets", "make_jwt"]


# ---------------------------------------------------------------- helpers

def _free_port():
    """Return a port free for both TCP and UDP on 127.0.0.1."""
    for _ in range(50):
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            udp.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            tcp.close()
            udp.close()
    raise RuntimeError("no free port for the KDC")


def _with_parent_death(cmd):
    """Prefix cmd so the child gets SIGTERM when the process that started it dies."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] + cmd if setpriv else cmd


def _write(path, text, mode=0o644):
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)


def _wait_for(predicate, timeout, what, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        time.sleep(0.02)
    raise RuntimeError(f"{what}: not ready after {timeout} s")


def _run_admin(cmd, env, stdin=""):
    """Run a Kerberos admin command; raise with its output when it fails."""
    done = subprocess.run(cmd, input=stdin, text=True, env=env, capture_output=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed ({done.returncode}): "
                           f"{done.stderr.strip() or done.stdout.strip()}")
    return done


def _stop_process(proc, grace=3.0):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------- tokens

def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims=None, lifetime=10800, **extra):
    """A SciToken-shaped JWT (unsigned signature bytes) for seeding token files.

    lifetime: seconds until exp (negative: already expired; None: no exp).
    """
    now = int(time.time())
    body = {"iss": "https://cilogon.org/igwn", "sub": ROBOT, "aud": "ANY",
            "scope": "gwdatafind.read read:/frames", "iat": now, "nbf": now,
            "ver": "scitoken:2.0", "jti": "seed-" + secrets.token_hex(8)}
    if lifetime is not None:
        body["exp"] = now + lifetime
    body.update(claims or {}, **extra)
    header = {"alg": "RS256", "typ": "JWT", "kid": "seed"}
    return ".".join([_b64url(json.dumps(header).encode()), _b64url(json.dumps(body).encode()),
                     _b64url(secrets.token_bytes(64))])


MALFORMED_JWTS = {
    "empty": "",
    "one_part": "not-a-jwt",
    "bad_base64": "eyJhbGciOiJSUzI1NiJ9.%%%%.sig",
    "not_json": "eyJhbGciOiJSUzI1NiJ9." + _b64url(b"not json") + ".sig",
    "exp_string": "eyJhbGciOiJSUzI1NiJ9." + _b64url(b'{"exp": "soon"}') + ".sig",
}


def jwt_claims(token):
    """Decode a JWT payload by hand (no signature check)."""
    payload = token.strip().split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def leaked_secrets(text, secret_values):
    """Return the secrets (or JWT signatures) that appear in text."""
    found = []
    for value in secret_values:
        parts = [value] + ([value.rsplit(".", 1)[1]] if value.count(".") == 2 else [])
        if any(len(p) >= 16 and p in text for p in parts):
            found.append(value[:12] + "...")
    return found


# ---------------------------------------------------------------- TLS

def closed_port():
    """A 127.0.0.1 TCP port with nothing listening on it (for "Vault unreachable")."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def scan_output(bed, text, extra_secrets=(), figures=None):
    """Assert that no token the emulator issued (nor any extra one) and no traceback
    is in ``text``; count the scan in ``figures["leak_scans"]`` when given."""
    if figures is not None:
        figures["leak_scans"] = figures.get("leak_scans", 0) + 1
    leaks = leaked_secrets(text, list(bed.emu.secrets()) + list(extra_secrets))
    assert not leaks, "secrets in the output: %s\n%s" % (leaks, text[-3000:])
    assert "Traceback" not in text, text[-3000:]


def run_scanned(bed, args, env=None, timeout=90, umask=None, verbose=True, vault=None,
                extra_secrets=(), figures=None):
    """Run the tool as a process (at -vvv by default) and scan its output with
    scan_output(); ``vault`` replaces the test bed's Vault URL."""
    cmd = [os.environ.get("IGWN_TOOL_PYTHON") or sys.executable, TOOL]
    cmd += ["-a", vault, "--cafile", bed.ca_file] if vault else bed.tool_args()
    cmd += (["-vvv"] if verbose else []) + [str(a) for a in args]
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    started = time.monotonic()
    proc = subprocess.run(cmd, env=bed.tool_env() if env is None else env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=preexec)
    proc.elapsed = time.monotonic() - started
    scan_output(bed, proc.stdout + proc.stderr, extra_secrets, figures)
    return proc


def make_tls_files(directory):
    """Write a test CA (ca.pem) and a localhost server cert/key; return paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(common_name):
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "igwn-robot-get tests"),
                          x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def builder(subject, issuer, public_key):
        now = datetime.datetime.now(UTC)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=30)))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("igwn-robot-get test CA")
    ca_cert = (builder(ca_name, ca_name, ca_key.public_key())
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                            False, False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                              critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName("localhost"), x509.DNSName(PROXIED_HOST),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (builder(name("localhost"), ca_name, key.public_key())
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = {n: os.path.join(directory, n) for n in ("ca.pem", "server.pem", "server.key")}
    _write(paths["ca.pem"], ca_cert.public_bytes(pem).decode())
    _write(paths["server.pem"], cert.public_bytes(pem).decode())
    _write(paths["server.key"], key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(), 0o600)
    return paths


# ---------------------------------------------------------------- Kerberos

KRB5_CONF = """\
[libdefaults]
    default_realm = {realm}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    default_ccache_name = FILE:{ccache}
    udp_preference_limit = 1465

[realms]
    {realm} = {{
        kdc = 127.0.0.1:{port}
    }}

[domain_realm]
    localhost = {realm}
    127.0.0.1 = {realm}
    .proxied.test = {realm}
    .ligo.org = {realm}
"""

KDC_CONF = """\
[kdcdefaults]
    kdc_listen = 127.0.0.1:{port}
    kdc_tcp_listen = 127.0.0.1:{port}

[realms]
    {realm} = {{
        database_name = {db}/principal
        key_stash_file = {db}/stash
        acl_file = {db}/kadm5.acl
        kdc_listen = 127.0.0.1:{port}
        kdc_tcp_listen = 127.0.0.1:{port}
        max_life = 1d
        max_renewable_life = 7d
        default_principal_flags = +preauth
        master_key_type = aes256-cts-hmac-sha1-96
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
    }}

[logging]
    kdc = FILE:{log}
    admin_server = FILE:{db}/kadmin.log
    default = FILE:{db}/krb5lib.log
"""


class Testbed:
    """A KDC, a test CA and the Vault emulator, all on loopback."""

    realm = REALM
    robot = ROBOT
    other = OTHER
    robot_principal = f"{ROBOT}@{REALM}"
    other_principal = f"{OTHER}@{REALM}"
    service_principal = f"{SERVICE}@{REALM}"

    def __init__(self, workdir):
        self.workdir = os.path.abspath(workdir)
        self.db_dir = os.path.join(self.workdir, "kdc")
        self.home = os.path.join(self.workdir, "home")
        self.krb5_conf = os.path.join(self.workdir, "krb5.conf")
        self.kdc_conf = os.path.join(self.workdir, "kdc.conf")
        self.kdc_log = os.path.join(self.workdir, "kdc.log")
        self.default_ccache = os.path.join(self.workdir, "krb5cc_default")
        self.robot_keytab = os.path.join(self.workdir, "robot.keytab")
        self.other_keytab = os.path.join(self.workdir, "other.keytab")
        self.service_keytab = os.path.join(self.workdir, "service.keytab")
        self.emulator_log = os.path.join(self.workdir, "emulator.log")
        self.rcache = os.path.join(self.workdir, "emulator.rcache2")
        self.ca_file = self.server_cert = self.server_key = None
        self.kdc_port = self.vault_port = self.standby_port = None
        self.vault_url = self.standby_url = self.standby_localhost_url = None
        self.proxied_vault_url = None
        self.emu = None
        self.proxy = None
        self.silent_krb5_conf = self.silent_kdc_port = None
        self._kdc = self._emulator = None
        self._silent_socks = []

    # -- lifecycle

    def start(self):
        if not os.path.exists(os.path.join(KRB5_SBIN, "krb5kdc")):
            raise RuntimeError("krb5kdc not found: install Debian's krb5-kdc and "
                               "krb5-admin-server (scripts/bootstrap.sh does)")
        try:
            self._prepare_dirs()
            self._start_kdc()
            tls = make_tls_files(self.workdir)
            self.ca_file, self.server_cert, self.server_key = (
                tls["ca.pem"], tls["server.pem"], tls["server.key"])
            self._start_emulator()
            self._start_proxy()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        _stop_process(self._emulator)
        _stop_process(self._kdc)
        self._emulator = self._kdc = None
        for sock in self._silent_socks:
            sock.close()
        self._silent_socks = []
        self.silent_krb5_conf = self.silent_kdc_port = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _prepare_dirs(self):
        """Create the directories; a previous bed's database and logs are removed."""
        shutil.rmtree(self.db_dir, ignore_errors=True)
        for path in (self.kdc_log, self.emulator_log, self.rcache):
            if os.path.exists(path):
                os.unlink(path)
        for path in (self.workdir, self.db_dir, self.home):
            os.makedirs(path, exist_ok=True)
        # traversable by unprivileged uids (tests that run the tool as nobody)
        os.chmod(self.workdir, 0o755)  # noqa: S103 -- test files only, no secrets listed
        os.chmod(self.home, 0o755)  # noqa: S103
        os.chmod(self.db_dir, 0o700)

    # -- KDC

    def _kdc_env(self):
        env = dict(os.environ, KRB5_CONFIG=self.krb5_conf, KRB5_KDC_PROFILE=self.kdc_conf)
        env.pop("KRB5_KTNAME", None)
        return env

    def _write_kdc_config(self):
        self.kdc_port = _free_port()
        _write(self.krb5_conf, KRB5_CONF.format(realm=REALM, port=self.kdc_port,
                                                ccache=self.default_ccache))
        _write(self.kdc_conf, KDC_CONF.format(realm=REALM, port=self.kdc_port,
                                              db=self.db_dir, log=self.kdc_log))
        _write(os.path.join(self.db_dir, "kadm5.acl"), "")

    def _create_database(self):
        env = self._kdc_env()
        _run_admin([os.path.join(KRB5_SBIN, "kdb5_util"), "-r", REALM, "create", "-s",
                    "-P", "testbed-master-password"], env)
        for keytab in (self.robot_keytab, self.other_keytab, self.service_keytab):
            if os.path.exists(keytab):
                os.unlink(keytab)
        script = "".join(
            f"addprinc -randkey {princ}\nktadd -k {keytab} {princ}\n"
            for princ, keytab in ((ROBOT, self.robot_keytab), (OTHER, self.other_keytab))
            + tuple((service, self.service_keytab) for service in SERVICES))
        _run_admin([os.path.join(KRB5_SBIN, "kadmin.local"), "-r", REALM], env, script)
        for keytab in (self.robot_keytab, self.other_keytab, self.service_keytab):
            os.chmod(keytab, 0o600)

    def _start_kdc(self, attempts=3):
        for attempt in range(attempts):
            self._write_kdc_config()
            if attempt == 0:
                self._create_database()
            self._kdc = subprocess.Popen(
                _with_parent_death([os.path.join(KRB5_SBIN, "krb5kdc"), "-n", "-r", REALM,
                                    "-P", os.path.join(self.db_dir, "krb5kdc.pid")]),
                env=self._kdc_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                _wait_for(self._kdc_listening, 10, "krb5kdc", self._kdc)
                return
            except RuntimeError:  # most likely its port was taken meanwhile: try another
                _stop_process(self._kdc)
                if attempt == attempts - 1:
                    raise

    def _kdc_listening(self):
        try:
            with open(self.kdc_log) as handle:
                if "commencing operation" not in handle.read():
                    return False
            socket.create_connection(("127.0.0.1", self.kdc_port), 0.2).close()
            return True
        except OSError:
            return False

    def kdc_requests(self):
        """Count the AS and TGS requests the KDC has logged so far."""
        counts = {"AS": 0, "TGS": 0}
        try:
            with open(self.kdc_log, errors="replace") as handle:
                for line in handle:
                    match = re.search(r"\b(AS|TGS)_REQ\b", line)
                    if match:
                        counts[match.group(1)] += 1
        except FileNotFoundError:
            pass
        return counts

    def silent_kdc_env(self, **extra):
        """tool_env() with a krb5.conf whose KDC is a socket that never answers."""
        if self.silent_krb5_conf is None:
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind(("127.0.0.1", port))
            tcp.listen(1)  # the kernel completes handshakes; nobody ever reads
            self._silent_socks = [udp, tcp]
            self.silent_kdc_port = port
            path = os.path.join(self.workdir, "krb5-silent.conf")
            _write(path, KRB5_CONF.format(realm=REALM, port=port, ccache=self.default_ccache))
            self.silent_krb5_conf = path
        return self.tool_env(KRB5_CONFIG=self.silent_krb5_conf, **extra)

    def silent_kdc_contacts(self):
        """Datagrams and TCP connections the silent KDC has received since the last
        call (each call drains them): {"udp": n, "tcp": n}; None before silent_kdc_env()."""
        if not self._silent_socks:
            return None
        udp, tcp = self._silent_socks
        counts = {"udp": 0, "tcp": 0}
        udp.setblocking(False)
        tcp.setblocking(False)
        try:
            while True:
                udp.recvfrom(65536)
                counts["udp"] += 1
        except (BlockingIOError, InterruptedError):
            pass
        try:
            while True:
                conn, _ = tcp.accept()
                conn.close()
                counts["tcp"] += 1
        except (BlockingIOError, InterruptedError):
            pass
        return counts

    # -- Vault emulator

    def _start_emulator(self):
        ready = os.path.join(self.workdir, "emulator.port")
        if os.path.exists(ready):
            os.unlink(ready)
        env = dict(os.environ, KRB5_CONFIG=self.krb5_conf)
        for name in ("KRB5_KTNAME", "KRB5RCACHETYPE", "KRB5RCACHENAME", "KRB5RCACHEDIR"):
            env.pop(name, None)
        cmd = [sys.executable, EMULATOR, "--port", "0", "--cert", self.server_cert,
               "--key", self.server_key, "--service-keytab", self.service_keytab,
               "--krb5-config", self.krb5_conf, "--ready-file", ready,
               "--log-file", self.emulator_log, "--rcache", self.rcache,
               "--standby-port", "0"]
        self._emulator = subprocess.Popen(
            _with_parent_death(cmd), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            start_new_session=True)
        _wait_for(lambda: os.path.exists(ready), 15, "vault emulator", self._emulator)
        with open(ready) as handle:
            ports = [int(p) for p in handle.read().split()]
        self.vault_port = ports[0]
        self.standby_port = ports[1] if len(ports) > 1 else None
        self.vault_url = f"https://localhost:{self.vault_port}"
        if self.standby_port:
            self.standby_url = f"https://127.0.0.1:{self.standby_port}"
            self.standby_localhost_url = f"https://localhost:{self.standby_port}"
        self.proxied_vault_url = f"https://{PROXIED_HOST}:{self.vault_port}"
        self.emu = EmuClient(self.vault_url, self.ca_file)

    # -- CONNECT proxy

    def _start_proxy(self):
        if HERE not in sys.path:
            sys.path.insert(0, HERE)
        from connect_proxy import ConnectProxy
        self.proxy = ConnectProxy({PROXIED_HOST: "127.0.0.1"}).start()

    @property
    def proxy_url(self):
        """The CONNECT proxy, http://127.0.0.1:PORT (no credentials)."""
        return self.proxy.url

    @property
    def proxy_url_with_credentials(self):
        """http://USER:PASSWORD@127.0.0.1:PORT; the password is `.proxy.password`."""
        return self.proxy.url_with_credentials

    def proxy_connects(self):
        """The proxy's CONNECT requests since the last proxy_reset(): a list of
        {"target": "host:port", "status": 200, "credentials": bool, "auth_ok": bool, ...}."""
        return self.proxy.connects()

    def proxy_reset(self, require_auth=False):
        """Forget the recorded CONNECTs; require_auth: 407 without the right credentials."""
        self.proxy.reset()
        self.proxy.require_auth = require_auth

    # -- running the tool

    def tool_env(self, **extra):
        """Environment for the tool: PATH, HOME, KRB5_CONFIG, KRB5_KTNAME.

        Keyword arguments add variables; a value of None removes one.
        """
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.home,
               "LANG": "C.UTF-8", "KRB5_CONFIG": self.krb5_conf,
               "KRB5_KTNAME": self.robot_keytab}
        for key, value in extra.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = str(value)
        return env

    def tool_args(self):
        return ["-a", self.vault_url, "--cafile", self.ca_file]

    def tool_command(self, args, python=None, script=None):
        """The tool's command line; IGWN_TOOL_PYTHON picks the interpreter
        (the old- and newest-Python runs of `make test`)."""
        python = python or os.environ.get("IGWN_TOOL_PYTHON") or sys.executable
        return [python, script or TOOL] + self.tool_args() + [str(a) for a in args]

    def run_tool(self, args, env=None, timeout=60, tty=False, python=None, script=None,
                 **popen_kw):
        """Run the tool to completion; return a text CompletedProcess.

        tty=False: stdin is /dev/null, stdout and stderr are pipes (no terminal).
        tty=True: stdin, stdout and stderr share one pseudo-terminal; the output
        is in .stdout (stderr is empty). python: the interpreter (default: this
        one). script: a copy of the tool to run instead of the checkout's (for a
        user who cannot read the checkout). Extra keyword arguments (user=, group=,
        cwd=, ...) go to subprocess.
        """
        env = self.tool_env() if env is None else env
        if tty:
            return self._run_tty(args, env, timeout)
        return subprocess.run(self.tool_command(args, python, script), env=env,
                              stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=False,
                              **popen_kw)

    def spawn_tool(self, args, env=None, timeout=60):
        """Start the tool on a pseudo-terminal; return the pexpect child."""
        import pexpect
        cmd = self.tool_command(args)
        return pexpect.spawn(cmd[0], cmd[1:], env=self.tool_env() if env is None else env,
                             timeout=timeout, encoding="utf-8", dimensions=(40, 200))

    def _run_tty(self, args, env, timeout):
        import pexpect
        child = self.spawn_tool(args, env, timeout)
        try:
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        code = child.exitstatus if child.exitstatus is not None else -child.signalstatus
        return subprocess.CompletedProcess(child.args, code, stdout=child.before, stderr="")

    # -- description for shells and other tools

    def describe(self):
        return {
            "workdir": self.workdir, "realm": REALM, "kdc_port": self.kdc_port,
            "kdc_log": self.kdc_log, "krb5_conf": self.krb5_conf,
            "silent_krb5_conf": self.silent_krb5_conf,
            "robot_principal": self.robot_principal, "robot_keytab": self.robot_keytab,
            "other_principal": self.other_principal, "other_keytab": self.other_keytab,
            "service_principal": self.service_principal,
            "service_keytab": self.service_keytab, "vault_url": self.vault_url,
            "vault_port": self.vault_port, "ca_file": self.ca_file,
            "emulator_log": self.emulator_log, "home": self.home,
            "rcache": self.rcache, "standby_port": self.standby_port,
            "standby_url": self.standby_url, "proxied_vault_url": self.proxied_vault_url,
            "proxy_url": self.proxy.url if self.proxy else None,
            "kdc_pid": self._kdc.pid if self._kdc else None,
            "emulator_pid": self._emulator.pid if self._emulator else None,
        }


class EmuClient:
    """Client for the emulator's /_emu/ control API."""

    ENDPOINTS = ("kerberos_login", "token_create", "lookup_self", "creds_read", "sts_read",
                 "creds_write", "auth_url", "poll")

    def __init__(self, url, ca_file):
        self.url = url.rstrip("/")
        self._ctx = ssl.create_default_context(cafile=ca_file)

    def _call(self, method, path, payload=None):
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + "/_emu/" + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=self._ctx, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def counters(self):
        """Requests per endpoint since the last reset (every endpoint listed)."""
        return self._call("GET", "counters")

    def total(self):
        return sum(self.counters().values())

    def reset(self):
        return self._call("POST", "reset", {})

    def config(self, **settings):
        """Set faults, token_kind, token_lifetime, credentials, device, vault_token_ttl."""
        return self._call("POST", "config", settings)

    def fault(self, endpoint, **fault):
        """Queue a fault for endpoint (see vault_emulator.py's docstring): e.g.
        close=True, drop_reply=True, status=503 (retry_after=S, retry_after_date=S,
        processed=True), oversized="length"|"chunked"|"close" (size=N), drip=0.5
        (drip_headers=True), delay=S; count=N (default 1)."""
        return self.config(faults=[dict(fault, endpoint=endpoint)])

    def credentials(self, key, state):
        return self.config(credentials={key: state})

    def secrets(self):
        """Every token, refresh token and vault token issued or stored so far."""
        return self._call("GET", "secrets")

    def state(self):
        """Stored credentials and live vault tokens (no secret values)."""
        return self._call("GET", "state")

    def standby(self, mode="redirect", host="localhost", status=307):
        """How the standby answers /v1/: "redirect" (307 to https://HOST:<vault port>,
        same path and query), "http" (the same to http://), "loop" (307 to itself),
        "serve" (answers like the active node). Reset by reset()."""
        return self.config(standby={"mode": mode, "host": host, "status": status})

    def standby_requests(self):
        """The /v1/ requests the standby redirected: method, path, host, location,
        vault_token and authorization (whether those headers came)."""
        return self.state()["standby_requests"]

    def kerberos_accepted(self):
        """Logins whose Negotiate token the acceptor took: user, target (the service
        principal of the ticket), host (of the request's Host header)."""
        return self.state()["kerberos_accepted"]

    def kerberos_refused(self):
        """Logins refused with 401: host and reason (e.g. "... Request is a replay")."""
        return self.state()["kerberos_refused"]

    def replays(self):
        """The refused logins whose reason was a replayed authenticator."""
        return [r for r in self.kerberos_refused() if "replay" in r["reason"].lower()]

    def dropped_replies(self):
        """The requests processed whose reply a drop_reply fault withheld."""
        return self.state()["dropped_replies"]


# ---------------------------------------------------------------- CLI

def _write_env_sh(bed, directory):
    lines = ["# source me: environment for the igwn-robot-get test bed"]
    for key, value in (("KRB5_CONFIG", bed.krb5_conf), ("KRB5_KTNAME", bed.robot_keytab),
                       ("VAULT_URL", bed.vault_url), ("CA_FILE", bed.ca_file),
                       ("TESTBED_DIR", bed.workdir), ("STANDBY_URL", bed.standby_url),
                       ("PROXY_URL", bed.proxy_url),
                       ("PROXIED_VAULT_URL", bed.proxied_vault_url)):
        lines.append(f"export {key}={value}")
    _write(os.path.join(directory, "env.sh"), "\n".join(lines) + "\n")


def _write_json(bed, directory):
    path = os.path.join(directory, "testbed.json")
    _write(path + ".tmp", json.dumps(bed.describe(), indent=2) + "\n")
    os.replace(path + ".tmp", path)


def cmd_up(directory):
    stop = []

    def on_signal(signum, _frame):
        stop.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    bed = Testbed(directory)
    started = time.monotonic()
    with bed:
        bed.silent_kdc_env()
        _write_env_sh(bed, directory)
        _write_json(bed, directory)
        elapsed = time.monotonic() - started
        print(f"testbed up in {elapsed:.2f} s: {bed.vault_url} (KDC 127.0.0.1:{bed.kdc_port});"
              f" source {directory}/env.sh", flush=True)
        while not stop:
            time.sleep(0.2)
    return 0


def _reexec_in_venv():
    """Run again with the project's venv when this interpreter lacks the bed's modules."""
    try:
        import cryptography  # noqa: F401
        import gssapi  # noqa: F401
    except ImportError:
        venv = os.path.join(REPO, ".venv")
        venv_python = os.path.join(venv, "bin", "python")
        if os.path.exists(venv_python) and not os.environ.get("IGWN_TESTBED_REEXEC") \
                and os.path.realpath(sys.prefix) != os.path.realpath(venv):
            os.environ["IGWN_TESTBED_REEXEC"] = "1"
            os.execv(venv_python, [venv_python] + sys.argv)  # noqa: S606
        raise


def main(argv=None):
    _reexec_in_venv()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the test bed in DIR and stay in the foreground")
    up.add_argument("directory")
    opts = parser.parse_args(argv)
    if opts.command == "up":
        return cmd_up(opts.directory)
    return 2


if __name__ == "__main__":
    sys.exit(main())
