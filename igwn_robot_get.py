#!/usr/bin/env python3
# Copyright (c) 2026 the igwn-robot-get authors
# SPDX-License-Identifier: MIT
"""Keep a fresh SciToken on disk for an IGWN robot, from its Kerberos keytab.

One run, in the order this file reads:

1. options: the command line (a drop-in for igwn-robot-get 0.3.3), parsed once
   by argparse into a ``Config`` that nothing changes afterwards;
2. local token check: the bearer token file is read through the one trust
   rule (``read_trusted``) and its JWT payload decoded by hand; a token with
   ``--minsecs`` left ends the run with no network at all.  The fast path
   (``fast_path``) answers that common case before anything else is imported:
   it reads a subset of the options and of JSON exactly as argparse and json
   do, and leaves everything else to the full run;
3. keytab: a safe keytab file (or a Kubernetes Secret directory holding one)
   and the robot's principal;
4. Kerberos: requests-gssapi makes the login's Negotiate header from a ticket
   got from the keytab into a memory credential cache, with a watchdog on the
   KDC (``--kdc-timeout``);
5. Vault: one ``requests.Session`` per run; the robot's cached vault token
   first (one request), else a Kerberos login and the bearer token read; on a
   robot's first use, the OIDC device flow with a human at a terminal, or one
   line saying that a human must;
6. writer: the token file is replaced atomically (temporary file, mode, fsync,
   ``os.replace``), so readers never see a missing or partial file and a
   failure keeps the old one;
7. CLI: ``main()`` maps every failure to one line and one exit code.

HTTP goes through requests and SPNEGO through requests-gssapi; both are
imported only on the paths that use the network, so a fresh-token run imports
no third-party package.  The module runs on Python 3.6 and later.  Public
names are listed in ``__all__``.
"""

import errno
import os
import stat
import sys

__version__ = "1.1.0"

PROG = "igwn-robot-get"


# -- errors ----------------------------------------------------------------------
# One family; main() maps each to its exit code and one line.

class RobotGetError(Exception):
    """A failure the operator can act on: one line, one exit code."""

    exit_code = 1
    kind = "internal"


class UsageError(RobotGetError):
    exit_code, kind = 2, "usage"


class KeytabError(RobotGetError):
    exit_code, kind = 3, "keytab"


class KerberosError(RobotGetError):
    exit_code, kind = 4, "kerberos"


class VaultUnreachable(RobotGetError):
    exit_code, kind = 5, "vault_unreachable"


class VaultRefused(RobotGetError):
    exit_code, kind = 6, "vault_refused"


class NeedsHuman(RobotGetError):
    exit_code, kind = 7, "needs_human"


class OutputError(RobotGetError):
    exit_code, kind = 8, "output"


class UntrustedFile(OutputError):
    """A file at one of our paths that we must not believe: not a regular
    file, not ours, or writable by others.  ``ours`` is True for our own
    regular file with a bad mode (which a renewal may replace)."""

    def __init__(self, path, what, problem, fix, ours=False):
        OutputError.__init__(self, "refusing the {} {}: {}; {}".format(
            what, path, problem, fix))
        self.path, self.problem, self.ours = path, problem, ours


class UnusableToken(RobotGetError):
    exit_code, kind = 9, "unusable_token"


class OidcFailed(RobotGetError):
    exit_code, kind = 10, "oidc_failed"


class TokenNotFresh(RobotGetError):
    exit_code, kind = 11, "token_not_fresh"


class CondorError(RobotGetError):
    exit_code, kind = 12, "condor"


class HookFailed(RobotGetError):
    exit_code, kind = 13, "hook_failed"


class MissingPackage(RobotGetError):
    exit_code, kind = 14, "missing_package"


class Interrupted(RobotGetError):
    exit_code, kind = 130, "interrupted"


class Terminated(RobotGetError):
    exit_code, kind = 143, "terminated"


EXIT_CODES = [
    (0, "success: the token is fresh, or was renewed"),
    (1, "internal error (a bug; please report it)"),
    (UsageError.exit_code, "usage error: a bad option or option value"),
    (KeytabError.exit_code,
     "keytab problem: unset, missing, a directory, unreadable, unsafe mode"),
    (KerberosError.exit_code,
     "Kerberos failure: KDC silent or unreachable, principal unknown, ..."),
    (VaultUnreachable.exit_code,
     "Vault unreachable: DNS, TCP, proxy, TLS, timeout or an unreadable "
     "reply, after retries"),
    (VaultRefused.exit_code,
     "Vault refused the login or the token read, or kept failing"),
    (NeedsHuman.exit_code,
     "first use needs a human: no refresh token in Vault and no terminal"),
    (OutputError.exit_code,
     "output not writable, or a file at our path we must not trust"),
    (UnusableToken.exit_code,
     "Vault returned an unusable token (not a JWT, no exp, expired)"),
    (OidcFailed.exit_code, "OIDC login denied, expired or timed out"),
    (TokenNotFresh.exit_code,
     "--show: token missing, unreadable or with less than --minsecs left"),
    (CondorError.exit_code, "--condor: HTCondor hand-off failed or unavailable"),
    (HookFailed.exit_code,
     "--on-change command failed (the new token was kept)"),
    (MissingPackage.exit_code,
     "a Python package the tool needs (requests, requests-gssapi, gssapi) "
     "is missing"),
    (Interrupted.exit_code, "interrupted (Ctrl-C); 143 on SIGTERM"),
]


# -- options ---------------------------------------------------------------------
# The converters below are argparse's types and the fast path's checks alike:
# each rule about an option value is written here once.

DEFAULT_VAULTSERVER = "vault.ligo.org"
DEFAULT_ISSUER = "igwn"
DEFAULT_REALM = "LIGO.ORG"
DEFAULT_MINSECS = 3600
DEFAULT_VAULTTOKENTTL = "7d"
DEFAULT_VAULTTOKENMINTTL = "24h"
DEFAULT_TIMEOUT = 60.0
DEFAULT_KDC_TIMEOUT = 15.0
DEFAULT_OIDC_TIMEOUT = 600.0
DEFAULT_MODE = 0o600
TOKEN_MODES = (0o600, 0o640, 0o400, 0o440)
MAX_DURATION = 10 * 366 * 86400   # ten years: anything longer is a typo
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DIGITS = "0123456789"


def parse_duration(text, what="duration"):
    """``90``, ``90s``, ``15m``, ``1.5h`` or ``7d`` as seconds (a float)."""
    value = str(text).strip()
    unit = value[-1:] if value[-1:] in ("s", "m", "h", "d") else ""
    number = value[:len(value) - len(unit)].strip()
    whole, dot, fraction = number.partition(".")
    if (not whole or whole.strip(_DIGITS) or fraction.strip(_DIGITS)
            or (dot and not fraction) or len(whole) > 12):
        raise UsageError(
            "{}: {!r} is not a number optionally followed by s, m, h or d"
            .format(what, text))
    seconds = float(number) * _UNITS[unit]
    if seconds > MAX_DURATION:
        raise UsageError("{}: {!r} is over ten years; check the value".format(
            what, text))
    return seconds


def vault_url(server):
    """``--vaultserver`` as ``https://host:port``; a bare host gets :8200."""
    text = str(server).strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "https", text
    if scheme.lower() != "https":
        raise UsageError("--vaultserver {!r}: Vault is reached over https only"
                         .format(server))
    hostport = rest.split("/", 1)[0]
    if hostport.startswith("["):
        host, bracket, port = hostport[1:].partition("]")
        ok = (bracket and ":" in host
              and not host.strip("0123456789abcdefABCDEF:."))
        port = port[1:] if port.startswith(":") else (port or None)
        display = "[" + host + "]"
    else:
        host, colon, port = hostport.partition(":")
        port = port if colon else None
        labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
        ok = host and len(host) <= 253 and all(
            label and len(label) <= 63 and not label.startswith("-")
            and not label.endswith("-") and not label.lower().strip(
                "abcdefghijklmnopqrstuvwxyz0123456789-_") for label in labels)
        display = host
    if not ok:
        raise UsageError("--vaultserver {!r}: {!r} is not a host name or "
                         "address".format(server, host))
    if port is None:
        port = "8200"
    if not port or port.strip(_DIGITS) or not 0 < int(port) < 65536:
        raise UsageError("--vaultserver {!r}: {!r} is not a port number"
                         .format(server, port))
    return "https://{}:{}".format(display, int(port))


def parse_mode(text):
    """``--mode``: the token file's mode, one that no other user can write."""
    value = str(text).strip()
    digits = value[2:] if value.lower().startswith("0o") else value
    mode = int(digits, 8) if digits and not digits.strip("01234567") and \
        len(digits) <= 4 else None
    if mode not in TOKEN_MODES:
        raise UsageError(
            "--mode {!r}: use 0600 (the default), 0640, 0400 or 0440; a token "
            "must never be readable by others nor writable by its group"
            .format(text))
    return mode


def default_bearer_token_file(environ=None, uid=None):
    """WLCG bearer token discovery: where the token file lives."""
    environ = os.environ if environ is None else environ
    uid = os.geteuid() if uid is None else uid
    if environ.get("BEARER_TOKEN_FILE"):
        return environ["BEARER_TOKEN_FILE"]
    if environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(environ["XDG_RUNTIME_DIR"], "bt_u{}".format(uid))
    return "/tmp/bt_u{}".format(uid)


def default_vault_token_file(credkey, role, uid=None):
    """The robot's own vault token cache, as condor_vault_storer keeps one per
    service: ``/tmp/vt_u<uid>-<credkey>-<role>``, every character outside
    ``[A-Za-z0-9._]`` written ``%XX``, so that robots under one uid never
    evict each other's token."""
    uid = os.geteuid() if uid is None else uid

    def safe(text):
        return "".join(c if c.isalnum() and ord(c) < 128 or c in "._" else
                       "".join("%{:02X}".format(b) for b in c.encode("utf-8"))
                       for c in text)
    return "/tmp/vt_u{}-{}-{}".format(uid, safe(credkey), safe(role))


def is_dev_file(path):
    """Streams such as /dev/stdout are written directly, never replaced."""
    return path.startswith("/dev/std") or path.startswith("/dev/fd/")


# The options the fast path reads, by their argparse dest; _CONVERTERS checks
# the values argparse checks (the others take any text).  create_parser()
# defines every option; anything not listed here sends the run to the full path.
_FAST_VALUES = {
    "-o": "outfile", "--outfile": "outfile", "--bearertokenfile": "outfile",
    "-m": "minsecs", "--minsecs": "minsecs",
    "-a": "vaultserver", "--vaultserver": "vaultserver",
    "--mode": "mode",
    "-k": "keytab", "--keytab": "keytab", "--kerberos-keytab": "keytab",
    "-c": "ccache", "--ccache": "ccache", "--kerberos-ccache": "ccache",
    "-i": "issuer", "--issuer": "issuer", "-r": "role", "--role": "role",
    "--credkey": "credkey", "--vaulttokenfile": "vaulttokenfile",
    "--cafile": "cafile", "--capath": "capath",
    "--timeout": "timeout", "--kdc-timeout": "kdc_timeout",
    "--oidc-timeout": "oidc_timeout", "--jitter": "jitter",
}
_FAST_FLAGS = {"-q": "quiet", "--quiet": "quiet", "--nooidc": "nooidc",
               "--no-browser": "no_browser", "--verbose": "verbose"}


def positive_duration(option):
    def convert(text):
        seconds = parse_duration(text, option)
        if seconds <= 0:
            raise UsageError("{} must be more than 0".format(option))
        return seconds
    return convert


_CONVERTERS = {
    "minsecs": lambda text: parse_duration(text, "--minsecs"),
    "vaultserver": lambda text: vault_url(text) and text,
    "mode": parse_mode,
    "timeout": positive_duration("--timeout"),
    "kdc_timeout": positive_duration("--kdc-timeout"),
    "oidc_timeout": lambda text: parse_duration(text, "--oidc-timeout"),
    "jitter": lambda text: parse_duration(text, "--jitter"),
}


def create_parser():
    """The one option parser (argparse, imported only for the full run)."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise UsageError("{}; see {} --help".format(message, PROG))

    class LogFormat(argparse.Action):
        """--log-format takes effect as soon as it is read, so that a usage
        error later on the command line is reported in its format."""

        def __call__(self, parser, namespace, values, option_string=None):
            setattr(namespace, self.dest, values)
            _LOG_STATE["json"] = values == "json"

    def typed(convert):
        def check(text):
            try:
                return convert(text)
            except UsageError as exc:
                raise argparse.ArgumentTypeError(str(exc))
        return check

    def duration(option):
        return typed(lambda text: parse_duration(text, option))

    parser = Parser(
        prog=PROG,
        description="Keep a fresh SciToken (bearer token) on disk for an IGWN "
                    "robot, from its Kerberos keytab, through Vault. A drop-in "
                    "for igwn-robot-get 0.3.3.",
        epilog="exit codes:\n" + "\n".join(
            "  {:>3}  {}".format(code, text) for code, text in EXIT_CODES),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("principal", nargs="?",
        help="Kerberos principal of the robot; default: the first in the "
             "keytab; realm {} is added when missing".format(DEFAULT_REALM))
    add("-v", "--verbose", action="count", default=0,
        help="say more: -v what happens, -vv details, -vvv the HTTP exchanges "
             "(tokens are always redacted)")
    add("-q", "--quiet", action="store_true", help="print errors only")
    add("-V", "--version", action="version",
        version="%(prog)s {}".format(__version__))
    krb = parser.add_argument_group("Kerberos options")
    krb.add_argument("-k", "--keytab", "--kerberos-keytab",
                     default=os.environ.get("KRB5_KTNAME") or None,
                     help="the robot's keytab, or a directory holding exactly "
                          "one (a Kubernetes Secret volume); default: "
                          "$KRB5_KTNAME")
    krb.add_argument("-c", "--ccache", "--kerberos-ccache",
                     help="keep the Kerberos ticket in this credential cache "
                          "(default: in memory only, nothing on disk)")
    krb.add_argument("--kdc-timeout", type=typed(_CONVERTERS["kdc_timeout"]),
                     default=DEFAULT_KDC_TIMEOUT,
                     help="give up on a silent KDC after this long "
                          "(default: 15s)")
    tok = parser.add_argument_group("token options")
    tok.add_argument("-a", "--vaultserver", default=DEFAULT_VAULTSERVER,
                     type=typed(_CONVERTERS["vaultserver"]),
                     help="Vault server name or URL; https and port 8200 are "
                          "added when absent (default: %(default)s)")
    tok.add_argument("-i", "--issuer", default=DEFAULT_ISSUER,
                     help="token issuer name (default: %(default)s)")
    tok.add_argument("--credkey",
                     help="Vault credential key (default: the principal "
                          "without its realm)")
    tok.add_argument("-r", "--role",
                     help="Vault role (default: the principal up to its "
                          "first '/')")
    tok.add_argument("-m", "--minsecs", type=typed(_CONVERTERS["minsecs"]),
                     default=float(DEFAULT_MINSECS),
                     help="renew the token when it has less than this many "
                          "seconds left (default: %(default)d)")
    tok.add_argument("-o", "--outfile", "--bearertokenfile",
                     help="bearer token file (default: $BEARER_TOKEN_FILE, "
                          "else $XDG_RUNTIME_DIR/bt_u<uid>, else "
                          "/tmp/bt_u<uid>)")
    tok.add_argument("--mode", type=typed(_CONVERTERS["mode"]),
                     default=DEFAULT_MODE,
                     help="mode of the token file: 0600 (default), 0640, "
                          "0400 or 0440; a group-readable token gets its "
                          "directory's group (readers of another uid in the "
                          "writer's group)")
    tok.add_argument("--audience", action="append",
                     help="narrow the token to these audiences (comma list or "
                          "repeated); reads Vault's sts path")
    tok.add_argument("--scopes", action="append",
                     help="narrow the token to these scopes (comma or space "
                          "list, or repeated); reads Vault's sts path")
    tok.add_argument("--vaulttokenfile",
                     help="vault token cache (default: one per robot, "
                          "/tmp/vt_u<uid>-<credkey>-<role>; 'none' to keep no "
                          "vault token)")
    tok.add_argument("--vaulttokenttl", type=duration("--vaulttokenttl"),
                     default=parse_duration(DEFAULT_VAULTTOKENTTL),
                     help="lifetime of a new cached vault token (default: 7d)")
    tok.add_argument("--vaulttokenminttl",
                     type=duration("--vaulttokenminttl"),
                     default=parse_duration(DEFAULT_VAULTTOKENMINTTL),
                     help="log in again when the cached vault token has less "
                          "than this left (default: 24h)")
    tok.add_argument("--cafile",
                     help="CA bundle to trust (default: the system bundle, "
                          "honouring $SSL_CERT_FILE)")
    tok.add_argument("--capath",
                     help="CA directory to trust (default: $X509_CERT_DIR or "
                          "/etc/grid-security/certificates when present)")
    tok.add_argument("--timeout", type=typed(_CONVERTERS["timeout"]),
                     default=DEFAULT_TIMEOUT,
                     help="total time budget for talking to Vault, retries "
                          "included (default: 60s)")
    tok.add_argument("--jitter", type=typed(_CONVERTERS["jitter"]),
                     default=0.0,
                     help="wait a random time up to this long before "
                          "contacting Vault, for fleets of cron jobs (not "
                          "when the token is fresh)")
    oidc = parser.add_argument_group("first use (OIDC login by a human)")
    oidc.add_argument("--nooidc", action="store_true",
                      help="never start an OIDC login, even at a terminal")
    oidc.add_argument("--oidc-timeout", type=typed(_CONVERTERS["oidc_timeout"]),
                      default=DEFAULT_OIDC_TIMEOUT,
                      help="time for the human to log in (default: 10m)")
    oidc.add_argument("--no-browser", action="store_true",
                      help="do not try to open a web browser")
    oidc.add_argument("--web-open-command",
                      help="command that opens the login URL (default: "
                           "xdg-open with a display, open on macOS, none over "
                           "SSH)")
    ops = parser.add_argument_group("operations")
    ops.add_argument("--show", action="store_true",
                     help="print the token's claims and time left, never "
                          "fetch; exit 0 when at least --minsecs is left, "
                          "else 11 (a health check)")
    ops.add_argument("--check", action="store_true",
                     help="check the keytab, the token file and the way to "
                          "Vault, one line each, and exit with the first "
                          "failure's code; never fetch (a Kubernetes "
                          "initContainer)")
    ops.add_argument("--json", action="store_true",
                     help="with --show: print one JSON object")
    ops.add_argument("--log-format", choices=("text", "json"), default="text",
                     action=LogFormat,
                     help="text (default) or one JSON object per line on "
                          "stderr")
    ops.add_argument("--status-file",
                     help="after every run, write a JSON status document here")
    ops.add_argument("--metrics-file",
                     help="after every run, write Prometheus metrics here "
                          "(node_exporter textfile collector, *.prom)")
    ops.add_argument("--on-change",
                     help="run this command (no shell) after the token was "
                          "replaced; $IGWN_ROBOT_GET_TOKEN_FILE names the "
                          "token")
    condor = parser.add_argument_group("HTCondor")
    condor.add_argument("--condor", action="store_true",
                        help="hand the token to HTCondor with "
                             "condor_vault_storer instead of writing a file")
    return parser


class Config(object):
    """The options of one run, made once from argparse's namespace; nothing
    changes it afterwards."""

    def __init__(self, namespace, argv):
        self.__dict__.update(vars(namespace))
        self.argv = list(argv)
        self.outfile_given = bool(namespace.outfile)
        self.outfile = namespace.outfile or default_bearer_token_file()
        self.credkey_given = bool(namespace.credkey)
        self.vaulturl = vault_url(namespace.vaultserver)
        given = namespace.vaulttokenfile
        self.vaulttoken_default = given is None
        self.vaulttokenfile = None if given is not None and given.lower() in (
            "", "none", "/dev/null") else given
        self.scopes = split_list(namespace.scopes)
        self.audience = split_list(namespace.audience)
        self.verbose = 0 if namespace.quiet else namespace.verbose
        if namespace.json and not namespace.show:
            raise UsageError("--json goes with --show; see {} --help".format(PROG))
        if sum((namespace.show, namespace.check, namespace.condor)) > 1:
            raise UsageError("--show, --check and --condor do not go together; "
                             "see {} --help".format(PROG))
        if namespace.vaulttokenminttl >= namespace.vaulttokenttl:
            raise UsageError(
                "--vaulttokenminttl ({}) must be less than --vaulttokenttl ({})"
                .format(format_duration(namespace.vaulttokenminttl),
                        format_duration(namespace.vaulttokenttl)))


def parse_args(argv):
    """The command line as a Config; UsageError for anything wrong."""
    return Config(create_parser().parse_args(argv), argv)


def split_list(values):
    """``--scopes a,b --scopes c`` -> ``['a', 'b', 'c']``."""
    out = []
    for value in values or ():
        out.extend(v for v in value.replace(",", " ").split() if v)
    return out


def format_duration(seconds):
    """Render seconds as ``2h03m04s`` style text for humans."""
    seconds = int(seconds)
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return "{}{}d{:02d}h{:02d}m".format(sign, days, hours, minutes)
    if hours:
        return "{}{}h{:02d}m{:02d}s".format(sign, hours, minutes, secs)
    if minutes:
        return "{}{}m{:02d}s".format(sign, minutes, secs)
    return "{}{}s".format(sign, secs)


# -- local token check ---------------------------------------------------------------
# The one trust rule for the files the tool reads, then the token's exp.

READ_LIMIT = 65536


def open_trusted(path, what, fix, private=False, limit=READ_LIMIT,
                 reader=False):
    """(content, stat) of a file we may believe, or (None, None) if absent.

    The file is opened without following a symbolic link and without
    blocking (a FIFO or a device planted at our path cannot hang the run),
    and believed only if the descriptor is a regular file that belongs to us
    and that nobody else can write (with ``private``, nor read).  A
    ``reader`` (``--show`` in an application that only reads the token) also
    believes a file of another uid that only its owner can write, when it
    cannot write the directory itself (a read-only mount): the robot always
    can write its own, so its health check never vouches for a file its runs
    refuse.  Anything else raises UntrustedFile; at most ``limit`` bytes are
    read.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None, None
        problem = ("it is a symbolic link, which someone else may have "
                   "planted" if exc.errno == errno.ELOOP else
                   "cannot open it: " + exc.strerror)
        raise UntrustedFile(path, what, problem, fix)
    try:
        info = os.fstat(fd)
        mode = stat.S_IMODE(info.st_mode)
        if not stat.S_ISREG(info.st_mode):
            kind = ("a directory" if stat.S_ISDIR(info.st_mode) else
                    "a FIFO" if stat.S_ISFIFO(info.st_mode) else
                    "a device" if stat.S_ISCHR(info.st_mode) or
                    stat.S_ISBLK(info.st_mode) else "not a regular file")
            raise UntrustedFile(path, what, "it is " + kind, fix)
        if info.st_uid != os.geteuid() and not (reader and not os.access(
                os.path.dirname(os.path.abspath(path)), os.W_OK)):
            raise UntrustedFile(path, what, "it belongs to uid {}, not to us "
                                "(uid {}), so someone else may have planted "
                                "it".format(info.st_uid, os.geteuid()), fix)
        if mode & (0o066 if private else 0o022):
            raise UntrustedFile(
                path, what, "it is {} by its group or others (mode {:04o})"
                .format("readable or writable" if private else "writable",
                        mode), "run chmod 600 {}".format(path), ours=True)
        return os.read(fd, limit), info
    finally:
        os.close(fd)


def read_trusted(path, what="token file", private=False, limit=READ_LIMIT):
    """The bytes of the file at ``path`` (None when absent), by the rule of
    open_trusted()."""
    return open_trusted(path, what, "remove it, or choose another path",
                        private, limit)[0]


def token_text(data):
    """A token file's content as the token (whitespace trimmed), or None."""
    try:
        return data.decode("ascii").strip() or None
    except (AttributeError, UnicodeDecodeError):
        return None


_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def jwt_payload(token):
    """The decoded (but not parsed) payload of a compact JWT."""
    import binascii
    parts = token.strip().split(".")
    if len(parts) != 3 or not parts[1]:
        raise UnusableToken(
            "not a JWT (expected header.payload.signature, found {} part{})"
            .format(len(parts), "" if len(parts) == 1 else "s"))
    payload = parts[1]
    if payload.strip(_B64URL):
        raise UnusableToken("not a JWT (payload is not base64url)")
    padded = payload.replace("-", "+").replace("_", "/") + "=" * (
        -len(payload) % 4)
    try:
        return binascii.a2b_base64(padded.encode("ascii"))
    except (binascii.Error, ValueError):
        raise UnusableToken("not a JWT (payload is not base64url)")


def usable_exp(exp):
    """True when ``exp`` is a NumericDate we can compute with."""
    return (isinstance(exp, (int, float)) and not isinstance(exp, bool)
            and -1e12 < exp < 1e12)


def fresh_message(path, left, minsecs):
    return "token {} is fresh: {} left (--minsecs {})".format(
        path, format_duration(left), int(minsecs))


# The fast path.  Most runs find the token still fresh; this answers them
# before anything else is imported.  It reads only the options in
# _FAST_VALUES and _FAST_FLAGS, each at most once, and a payload only where
# it reads exactly as json.loads would: one object of strings (escapes in
# values only), integers, true/false/null and flat arrays of those, with one
# integer "exp".  Anything else, and any doubt, goes to the full run.

_WS = b" \t\n\r"


def _skip_ws(raw, i):
    while i < len(raw) and raw[i] in _WS:
        i += 1
    return i


def _fast_string(raw, i):
    """(content, end) of a JSON string at raw[i]; (None, i) if unsure."""
    if i >= len(raw) or raw[i] != 0x22:
        return None, i
    j = i + 1
    while j < len(raw):
        c = raw[j]
        if c == 0x22:
            return raw[i + 1:j], j + 1
        if c < 0x20 or c >= 0x7F:
            return None, i
        if c == 0x5C:
            escape = raw[j + 1:j + 2]
            if escape and escape in b'"\\/bfnrt':
                j += 2
                continue
            hexdigits = raw[j + 2:j + 6]
            if escape != b"u" or len(hexdigits) != 4 or hexdigits.strip(
                    b"0123456789abcdefABCDEF"):
                return None, i
            j += 6
            continue
        j += 1
    return None, i


def _fast_int(raw, i):
    """(value, end) of a JSON integer at raw[i]; (None, i) if unsure."""
    j = i + 1 if raw[i:i + 1] == b"-" else i
    k = j
    while k < len(raw) and 0x30 <= raw[k] <= 0x39:
        k += 1
    digits = raw[j:k]
    if not digits or len(digits) > 15 or (len(digits) > 1 and digits[:1] ==
                                          b"0") or raw[k:k + 1] in b".eE":
        return None, i
    return int(raw[i:k]), k


def _fast_value(raw, i, nested=False):
    """The end of a JSON value at raw[i] in the fast subset; None if not."""
    head = raw[i:i + 1]
    if head == b'"':
        content, end = _fast_string(raw, i)
        return None if content is None else end
    if head == b"-" or head.isdigit():
        value, end = _fast_int(raw, i)
        return None if value is None else end
    for word in (b"true", b"false", b"null"):
        if raw.startswith(word, i):
            return i + len(word)
    if head == b"[" and not nested:
        i = _skip_ws(raw, i + 1)
        if raw[i:i + 1] == b"]":
            return i + 1
        while True:
            i = _fast_value(raw, i, nested=True)
            if i is None:
                return None
            i = _skip_ws(raw, i)
            if raw[i:i + 1] == b"]":
                return i + 1
            if raw[i:i + 1] != b",":
                return None
            i = _skip_ws(raw, i + 1)
    return None


def fast_exp(raw):
    """The payload's exp where the fast subset reads it exactly; else None."""
    i = _skip_ws(raw, 0)
    if raw[i:i + 1] != b"{":
        return None
    i = _skip_ws(raw, i + 1)
    exp = None
    while True:
        key, i = _fast_string(raw, i)
        if key is None or b"\\" in key:
            return None
        i = _skip_ws(raw, i)
        if raw[i:i + 1] != b":":
            return None
        i = _skip_ws(raw, i + 1)
        if key == b"exp":
            if exp is not None:
                return None
            exp, i = _fast_int(raw, i)
            if exp is None:
                return None
        else:
            i = _fast_value(raw, i)
            if i is None:
                return None
        i = _skip_ws(raw, i)
        if raw[i:i + 1] == b"}":
            break
        if raw[i:i + 1] != b",":
            return None
        i = _skip_ws(raw, i + 1)
    if _skip_ws(raw, i + 1) != len(raw) or not usable_exp(exp):
        return None
    return exp


def _fast_options(argv):
    """{name: value} of a command line the fast path reads exactly, or None."""
    found, verbose = {}, 0
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=") if arg.startswith("--") else (
            arg, "", "")
        if arg[:1] == "-" and len(arg) > 1 and arg.strip("v") != "-":
            if name in _FAST_FLAGS and not eq:
                key = _FAST_FLAGS[name]
                if key == "verbose":
                    verbose += 1
                    continue
            elif name in _FAST_VALUES:
                key = _FAST_VALUES[name]
                if not eq:
                    if not args:
                        return None
                    value = args.pop(0)
                if not value or value.startswith("-"):
                    return None
                convert = _CONVERTERS.get(key)
                try:
                    value = convert(value) if convert else value
                except UsageError:
                    return None
            else:
                return None
        elif arg[:2] == "-v":
            verbose += len(arg) - 1
            continue
        elif arg.startswith("-") or "principal" in found:
            return None
        else:
            key = "principal"
        if key in found:
            return None
        found[key] = value
    found["verbose"] = 0 if "quiet" in found else verbose
    return found if found["verbose"] < 2 else None


def fast_path(argv):
    """True when the token is fresh, said and done without the full run."""
    options = _fast_options(argv)
    if options is None:
        return False
    path = options.get("outfile") or default_bearer_token_file()
    if is_dev_file(path) or not path.isprintable():
        return False
    try:
        token = token_text(read_trusted(path))
        exp = fast_exp(jwt_payload(token)) if token else None
    except (RobotGetError, OSError):
        return False
    if exp is None:
        return False
    import time
    left = exp - time.time()
    minsecs = options.get("minsecs", DEFAULT_MINSECS)
    if left < minsecs:
        return False
    if options["verbose"]:
        sys.stderr.write("{}: {}\n".format(PROG, fresh_message(path, left,
                                                               minsecs)))
    return True


def _is_command():
    """True when this process is the tool itself: the script, ``python -m``,
    or the ``igwn-robot-get`` console script importing us (never when another
    program imports the module)."""
    if __name__ == "__main__":
        return True
    main_file = getattr(sys.modules.get("__main__"), "__file__", None) or ""
    return os.path.basename(main_file) == "igwn-robot-get"


if _is_command() and fast_path(sys.argv[1:]):
    sys.stderr.flush()
    os._exit(0)  # nothing to clean up: skip the interpreter's teardown

import contextlib
import fcntl
import json
import logging
import random
import re
import secrets
import shlex
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from datetime import datetime, timezone

__all__ = [
    "main", "fast_path", "parse_args", "Config", "RobotGetError", "UsageError",
    "KeytabError", "KerberosError", "MissingPackage", "VaultUnreachable",
    "VaultRefused", "NeedsHuman", "OutputError", "UntrustedFile",
    "UnusableToken", "OidcFailed", "TokenNotFresh", "CondorError",
    "HookFailed", "read_trusted", "decode_jwt_payload", "token_expiry",
    "extract_access_token", "write_atomically", "redact",
]

log = logging.getLogger(PROG)
HOOK_TIMEOUT = 60.0


# -- redaction ------------------------------------------------------------------------

_SECRETS = set()
_SECRET_PATTERNS = re.compile(
    r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"   # JWTs
    r"|\bhv[sbr]\.[A-Za-z0-9_-]{8,}"                        # vault tokens
    r"|\bs\.[A-Za-z0-9]{20,}"                               # old vault tokens
    r"|(?<=Negotiate )[A-Za-z0-9+/=]{8,}"                   # Kerberos header
    r"|\bYII[A-Za-z0-9+/]{40,}={0,2}"                       # bare Kerberos
)


def remember_secret(value):
    """Make sure ``value`` is redacted from every log line from now on."""
    if isinstance(value, str) and len(value) >= 6:
        _SECRETS.add(value)
    return value


def redact(text):
    """Return ``text`` with anything token-like replaced by ``<redacted>``."""
    text = str(text)
    for value in sorted(_SECRETS, key=len, reverse=True):
        if value in text:
            text = text.replace(value, "<redacted>")
    return _SECRET_PATTERNS.sub("<redacted>", text)


def printable(text, newlines=False):
    """``text`` with control characters (a server's ANSI escapes, carriage
    returns, newlines unless allowed) shown as ``?``, so nobody else's text
    can drive the terminal or add lines to ours."""
    return "".join(c if c.isprintable() or (newlines and c == "\n") else "?"
                   for c in str(text))


# -- local token check (the full run) -----------------------------------------------

def decode_jwt_payload(token):
    """Decode a JWT's payload by hand (no signature check) into a dict."""
    if not isinstance(token, str):
        raise UnusableToken("token is not text")
    raw = jwt_payload(token)
    try:
        claims = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise UnusableToken("not a JWT (payload is not base64url JSON)")
    if not isinstance(claims, dict):
        raise UnusableToken("not a JWT (payload is not a JSON object)")
    return claims


def token_expiry(token):
    """The ``exp`` claim of a JWT, as a number of seconds since the epoch."""
    exp = decode_jwt_payload(token).get("exp")
    if not usable_exp(exp):
        raise UnusableToken("token has no usable numeric 'exp' claim")
    return exp


def time_left(token, now=None):
    """Seconds until the token expires; None when it cannot be decoded."""
    try:
        return token_expiry(token) - (time.time() if now is None else now)
    except UnusableToken:
        return None


def stored_time_left(path, warn=True):
    """Seconds left of the token in our file at ``path``: None when there is
    no usable token.  A file we must not touch raises UntrustedFile; our own
    file with a bad mode is not believed, and will be replaced."""
    if is_dev_file(path):
        return None
    try:
        token = token_text(read_trusted(path))
    except UntrustedFile as exc:
        if not exc.ours:
            raise
        if warn:
            log.warning("not trusting the token file %s: %s; renewing it",
                        path, exc.problem)
        return None
    return time_left(token) if token else None


# -- keytab ------------------------------------------------------------------------------

def keytab_path(name):
    """Strip the FILE:/WRFILE: prefix of a keytab name."""
    for prefix in ("FILE:", "WRFILE:"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _read_keytab_bytes(path):
    """A keytab's bytes, opened without blocking (path may be a FIFO)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise KeytabError("keytab {} is not a regular file; pass the keytab "
                              "file".format(path))
        return os.read(fd, 1 << 20)
    finally:
        os.close(fd)


def _is_keytab(path):
    try:
        return _read_keytab_bytes(path)[:2] in (b"\x05\x01", b"\x05\x02")
    except (OSError, KeytabError):
        return False


def find_keytab(name):
    """The keytab file ``name`` stands for: itself, or the one keytab inside a
    directory (a Kubernetes Secret volume: ``..data`` and the timestamped
    directory aside)."""
    if not name:
        raise KeytabError(
            "no keytab: KRB5_KTNAME is not set and -k/--keytab was not given; "
            "pass -k /path/to/robot.keytab or set KRB5_KTNAME")
    path = keytab_path(name)
    if not os.path.isdir(path):
        return path
    try:
        inside = sorted(n for n in os.listdir(path) if not n.startswith(".."))
    except OSError as exc:
        raise KeytabError("keytab directory {}: {}".format(path, exc.strerror))
    if not inside:
        raise KeytabError(
            "keytab {} is a directory: the host path given to docker -v did "
            "not exist, so docker created an empty directory; pass the keytab "
            "file".format(path))
    # An entry we cannot read may be the keytab: check_keytab() says why.
    keytabs = [n for n in inside if _is_keytab(os.path.join(path, n))
               or not os.access(os.path.join(path, n), os.R_OK)]
    if len(inside) == 1:
        keytabs = inside
    if len(keytabs) != 1:
        raise KeytabError(
            "keytab {} is a directory holding {} ({}); point KRB5_KTNAME (or "
            "-k) at the keytab file inside it".format(
                path, "several keytabs" if keytabs else "no keytab",
                ", ".join((keytabs or inside)[:5])))
    found = os.path.join(path, keytabs[0])
    log.info("keytab %s is a directory; using the keytab %s in it", path, found)
    return found


def check_keytab(name):
    """The keytab's path, refused when missing, unreadable or unsafe.

    Safe: nobody else may read or write it, and its group may not write it.
    Group-read is accepted only in the case Kubernetes creates for a Secret
    with an ``fsGroup`` (kubernetes/kubernetes#57923): the file belongs to
    another user (root) and its group is one of ours.
    """
    path = find_keytab(name)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise KeytabError(
            "keytab {} not found; check the path (in a container: the -v "
            "mount and KRB5_KTNAME)".format(path))
    except OSError as exc:
        raise KeytabError("keytab {}: {}; check the path and its parent "
                          "directories' permissions".format(path, exc.strerror))
    if not stat.S_ISREG(info.st_mode):
        raise KeytabError("keytab {} is not a regular file; pass the keytab "
                          "file".format(path))
    mode = stat.S_IMODE(info.st_mode)
    describe = "mode {:04o}, owner {}:{}, we are {}:{}".format(
        mode, info.st_uid, info.st_gid, os.geteuid(), os.getegid())
    chmod = "on the host: chmod 600 /path/to/robot.keytab" if os.environ.get(
        "IGWN_ROBOT_GET_IMAGE") else "run chmod 600 " + path
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise KeytabError("keytab {} is readable or writable by others ({}); "
                          "{}".format(path, describe, chmod))
    if mode & stat.S_IWGRP:
        raise KeytabError("keytab {} is writable by its group ({}); {}".format(
            path, describe, chmod))
    if mode & stat.S_IRGRP:
        if info.st_uid == os.geteuid() or info.st_gid not in our_groups():
            raise KeytabError(
                "keytab {} is readable by its group ({}); {} (group-read is "
                "accepted only for a Kubernetes Secret with fsGroup: owned by "
                "root, group one of ours)".format(path, describe, chmod))
        log.info("keytab %s is group-readable (%s): accepted as a Kubernetes "
                 "Secret mounted with fsGroup", path, describe)
    if not os.access(path, os.R_OK):
        raise KeytabError(
            "keytab {} is not readable by us ({}); make it readable by this "
            "user (chown it, or run with --user matching its owner)"
            .format(path, describe))
    return path


def our_groups():
    return set(os.getgroups()) | {os.getegid()}


def keytab_principals(path):
    """The principals in an MIT keytab file, in file order (parsed by hand)."""
    try:
        data = _read_keytab_bytes(path)
    except OSError as exc:
        raise KeytabError("cannot read keytab {}: {}".format(path, exc.strerror))
    if len(data) < 2 or data[0] != 5 or data[1] not in (1, 2):
        raise KeytabError("{} is not a Kerberos keytab (bad header); export "
                          "it again with ktutil or kadmin".format(path))
    endian = ">" if data[1] == 2 else "="
    principals, pos = [], 2
    try:
        while pos + 4 <= len(data):
            (size,) = struct.unpack_from(endian + "i", data, pos)
            pos += 4
            if size <= 0:
                pos += -size
                continue
            entry, pos = data[pos:pos + size], pos + size
            principal = _keytab_entry_principal(entry, endian, data[1])
            if principal not in principals:
                principals.append(principal)
    except (struct.error, UnicodeDecodeError, IndexError):
        raise KeytabError("keytab {} is corrupt; export it again".format(path))
    if not principals:
        raise KeytabError("keytab {} holds no keys; export the robot's keys "
                          "into it".format(path))
    return principals


def _keytab_entry_principal(entry, endian, version):
    (count,) = struct.unpack_from(endian + "H", entry, 0)
    if version == 1:
        count -= 1
    pos = 2

    def counted():
        nonlocal pos
        (length,) = struct.unpack_from(endian + "H", entry, pos)
        value = entry[pos + 2:pos + 2 + length].decode("utf-8")
        pos += 2 + length
        return value

    realm = counted()
    components = [counted() for _ in range(count)]
    return "/".join(components) + "@" + realm


class Robot(object):
    """Who this run is for: keytab, principal, credkey, role, and where its
    vault token is cached (None: nowhere)."""

    def __init__(self, config):
        self.keytab = check_keytab(config.keytab)
        if config.principal:
            principal = config.principal
            if "@" not in principal:
                principal += "@" + DEFAULT_REALM
        else:
            principals = keytab_principals(self.keytab)
            principal = principals[0]
            if len(principals) > 1:
                log.info("keytab %s holds %d principals; using the first, %s "
                         "(pass the principal to choose)", self.keytab,
                         len(principals), principal)
        self.principal = principal
        self.realm = principal.rsplit("@", 1)[-1]
        self.credkey = config.credkey or principal.split("@", 1)[0]
        self.role = config.role or principal.split("/", 1)[0]
        self.vaulttokenfile = default_vault_token_file(
            self.credkey, self.role) if config.vaulttoken_default else \
            config.vaulttokenfile
        log.debug("principal %s, credkey %s, role %s, issuer %s, vault token "
                  "cache %s", principal, self.credkey, self.role,
                  config.issuer, self.vaulttokenfile or "none")


# -- Kerberos ---------------------------------------------------------------------------
# In this process: requests-gssapi builds the login's Negotiate header, and
# its GSS-API calls run in a worker thread (python-gssapi releases the GIL in
# them) that the run waits for at most --kdc-timeout.  A child process would
# import requests and gssapi a second time; handing credentials over would
# still need gssapi here.  The ticket lives in a memory credential cache, so
# nothing Kerberos-related reaches the disk, even when the run is killed.

KRB5_MECH = (1, 2, 840, 113554, 1, 2, 2)   # raw krb5, as htgettoken sends it
MEMORY_CCACHE = "MEMORY:igwn-robot-get"


def import_kerberos():
    """(gssapi, requests_gssapi), imported when a login needs them."""
    try:
        import gssapi
        import requests_gssapi
    except ImportError as exc:
        raise MissingPackage(
            "the Python package {} is missing ({}); install requests-gssapi "
            "(python3 -m pip install requests-gssapi, or your distribution's "
            "python3-requests-gssapi package)".format(
                getattr(exc, "name", None) or "requests-gssapi", exc))
    return gssapi, requests_gssapi


@contextlib.contextmanager
def kerberos_config():
    """``rdns = false`` for the Kerberos library during the block, as
    htgettoken sets it (Vault is reached through DNS aliases)."""
    tmpdir = tempfile.mkdtemp(prefix="igwn-robot-get-")
    path = os.path.join(tmpdir, "krb5-rdns.conf")
    with open(path, "w") as handle:
        handle.write("[libdefaults]\n    rdns = false\n")
    old = os.environ.get("KRB5_CONFIG")
    os.environ["KRB5_CONFIG"] = path + ":" + (old or "/etc/krb5.conf")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("KRB5_CONFIG", None)
        else:
            os.environ["KRB5_CONFIG"] = old
        shutil.rmtree(tmpdir, ignore_errors=True)


def within_kdc_timeout(work, robot, timeout):
    """work() in a worker thread, waited for at most ``timeout`` seconds."""
    result = {}

    def target():
        try:
            result["value"] = work()
        except BaseException as exc:  # handed to the waiting thread
            result["error"] = exc

    worker = threading.Thread(target=target, name="kerberos")
    worker.daemon = True
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise KerberosError(
            "no answer from the KDC for realm {} ({}) within {}; check that "
            "the KDC is up and that its port (88 unless krb5.conf says "
            "otherwise) is reachable over UDP and TCP from here".format(
                robot.realm, ", ".join(kdc_names(robot.realm)) or
                "found through DNS", format_duration(timeout)))
    if "error" in result:
        raise result["error"]
    return result["value"]


def robot_credentials(gssapi, robot, ccache):
    """The robot's initiator credentials, from its keytab, into ``ccache``."""
    return gssapi.Credentials(
        name=gssapi.Name(robot.principal, gssapi.NameType.kerberos_principal),
        usage="initiate",
        store={"client_keytab": robot.keytab, "ccache": ccache or MEMORY_CCACHE})


def negotiate_auth(robot, config):
    """requests-gssapi's auth for a Vault login: for every request a new GSS
    context (a new authenticator) for ``host@<the request's host>``, the raw
    krb5 mechanism, sent at once, no mutual authentication (Vault sends no
    reply token); each GSS-API step bounded by --kdc-timeout."""
    gssapi, requests_gssapi = import_kerberos()
    from requests_gssapi.exceptions import SPNEGOExchangeError
    base = requests_gssapi.HTTPSPNEGOAuth

    class Auth(base):
        def generate_request_header(self, response, host, is_preemptive=False):
            def step():
                if self.creds is None:
                    self.creds = robot_credentials(gssapi, robot, config.ccache)
                return base.generate_request_header(self, response, host,
                                                    is_preemptive)
            try:
                header = within_kdc_timeout(step, robot, config.kdc_timeout)
            except SPNEGOExchangeError as exc:
                raise kerberos_error(str(exc), robot)
            except gssapi.exceptions.GSSError as exc:
                raise kerberos_error(gss_text(exc), robot)
            remember_secret(header.split(" ", 1)[-1])
            log.info("got a Kerberos ticket for %s; logging in to %s",
                     robot.principal, host)
            return header

    return Auth(mutual_authentication=requests_gssapi.DISABLED,
                target_name="host", opportunistic_auth=True,
                mech=gssapi.OID.from_int_seq(KRB5_MECH))


def kerberos_ticket(robot, config, ccache):
    """A ticket in ``ccache`` for a program that needs one (--condor)."""
    gssapi, _ = import_kerberos()
    host = url_host(config.vaulturl)

    def step():
        creds = robot_credentials(gssapi, robot, ccache)
        target = gssapi.Name("host@" + host, gssapi.NameType.hostbased_service)
        gssapi.SecurityContext(name=target, creds=creds, usage="initiate",
                               mech=gssapi.OID.from_int_seq(KRB5_MECH)).step()
    with kerberos_config():
        try:
            within_kdc_timeout(step, robot, config.kdc_timeout)
        except gssapi.exceptions.GSSError as exc:
            raise kerberos_error(gss_text(exc), robot)


def kdc_names(realm, environ=None):
    """The KDCs krb5.conf lists for ``realm`` (for error messages only)."""
    environ = os.environ if environ is None else environ
    kdcs = []
    for name in (environ.get("KRB5_CONFIG") or "/etc/krb5.conf").split(":"):
        try:
            with open(name) as handle:
                text = handle.read(1 << 20)
        except (OSError, UnicodeDecodeError):
            continue
        block = re.search(r"^\s*" + re.escape(realm) + r"\s*=\s*\{(.*?)\}",
                          text, re.M | re.S)
        if block:
            kdcs.extend(re.findall(r"^\s*kdc\s*=\s*(\S+)", block.group(1),
                                   re.M))
    return kdcs


def kerberos_error(text, robot):
    """A KerberosError whose fix matches the GSS-API message ``text``."""
    low = text.lower()
    if "server not found" in low or ("not found in kerberos database" in low
                                     and "host/" in low):
        fix = ("the Vault server's host principal is unknown to the KDC; check "
               "--vaultserver (the Kerberos service is host@<vault host>)")
    elif "not found in kerberos database" in low or "client not found" in low:
        fix = ("the KDC does not know {}; check the principal and the "
               "realm".format(robot.principal))
    elif "cannot contact any kdc" in low or "cannot find kdc" in low:
        fix = ("cannot reach a KDC for realm {} ({}); check krb5.conf "
               "(KRB5_CONFIG) and the network".format(
                   robot.realm, ", ".join(kdc_names(robot.realm)) or
                   "none configured"))
    elif "clock skew" in low:
        fix = "this host's clock is wrong; synchronise it (NTP)"
    elif ("no key table entry" in low or "key table" in low
          or "preauthentication failed" in low or "decrypt integrity" in low):
        fix = ("the keytab {} has no valid key for {}; export a fresh keytab "
               "or pass the principal it holds".format(robot.keytab,
                                                       robot.principal))
    elif "expired" in low:
        fix = "the password or keys of {} expired; renew them".format(
            robot.principal)
    else:
        fix = "check the keytab, the principal and krb5.conf"
    return KerberosError("Kerberos failed for {}: {}; {}".format(
        robot.principal, redact(" ".join(text.split())), fix))


def gss_text(exc):
    gen = getattr(exc, "gen_message", None)
    if gen is not None:
        try:
            return " ".join(str(gen()).split())
        except Exception:  # noqa: S110 - the message is best effort
            pass
    return " ".join(str(exc).split()) or type(exc).__name__


# -- Vault client -----------------------------------------------------------------------

MAX_BODY = 1 << 20
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
MAX_REDIRECTS = 3
RETRY_STATUSES = (429, 500, 502, 503, 504)


def url_host(url):
    """The host of an https://host:port URL, without brackets."""
    hostport = url.split("://", 1)[1].split("/", 1)[0]
    if hostport.startswith("["):
        return hostport[1:hostport.index("]")]
    return hostport.rsplit(":", 1)[0]


def ca_locations(cafile=None, capath=None, environ=None):
    """The CAs htgettoken trusts: a bundle file plus a grid CA directory."""
    import ssl
    environ = os.environ if environ is None else environ
    if not cafile:
        paths = ssl.get_default_verify_paths()
        for candidate in (environ.get("SSL_CERT_FILE"), paths.cafile,
                          "/etc/pki/tls/cert.pem",
                          "/etc/ssl/certs/ca-certificates.crt"):
            if candidate and os.path.isfile(candidate):
                cafile = candidate
                break
    if not capath:
        for candidate in (environ.get("X509_CERT_DIR"),
                          "/etc/grid-security/certificates"):
            if candidate and os.path.isdir(candidate):
                capath = candidate
                break
    return cafile, capath


class Response(object):
    """What the Vault client hands back: status, body, parsed JSON (or None)."""

    def __init__(self, status, body, headers):
        self.status = status
        self.body = body
        self.headers = headers
        try:
            self.json = json.loads(body.decode("utf-8")) if body else None
        except (ValueError, UnicodeDecodeError, RecursionError):
            self.json = None

    def errors(self):
        """Vault's ``errors`` (and ``warnings``) as one printable line."""
        data = self.json if isinstance(self.json, dict) else {}
        items = []
        for key in ("errors", "warnings"):
            value = data.get(key)
            if isinstance(value, list):
                items.extend(str(v) for v in value if v)
        if not items and self.body and self.json is None:
            items.append(self.body[:200].decode("utf-8", "replace"))
        return printable(redact("; ".join(" ".join(i.split()) for i in items)))


class _DeadlinePassed(BaseException):
    """Raised by SIGALRM inside an HTTP exchange that outlived the run's
    deadline (a BaseException, so that no library turns it into a retry)."""


@contextlib.contextmanager
def deadline_alarm(seconds):
    """Interrupt the block after ``seconds`` (main thread only; elsewhere
    the per-read timeouts alone bound it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise _DeadlinePassed()
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(0.01, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class VaultClient(object):
    """The one place that speaks HTTP: one requests.Session for the run,
    proxies from the environment as requests reads them, redirects and
    retries within the run's deadline, capped reply bodies, redacted logs."""

    def __init__(self, config, deadline):
        try:
            import requests
            import urllib3
        except ImportError as exc:
            raise MissingPackage(
                "the Python package requests is missing ({}); install it: "
                "python3 -m pip install requests, or your distribution's "
                "python3-requests package".format(exc))
        self.requests, self.urllib3 = requests, urllib3
        self.url = config.vaulturl
        self.deadline = deadline
        self.requests_made = 0
        cafile, capath = ca_locations(config.cafile, config.capath)
        log.debug("trusting CA file %s and CA directory %s", cafile, capath)
        self.verify = cafile or True
        self.session = requests.Session()
        self.session.headers.update({
            "User-Agent": "{}/{}".format(PROG, __version__),
            "Accept-Encoding": "identity"})
        self.session.mount("https://", _adapter(requests, tls_context(
            cafile, capath)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.session.close()
        log.debug("%d HTTP request(s) to Vault", self.requests_made)

    def call(self, method, path, what, token=None, body=None, params=None,
             auth=None, headers=None, retry=True):
        """One API call: 307/308 followed, transient failures retried with
        backoff and jitter until the deadline; a Response for any other
        status.  A login (``auth``) makes a new Negotiate header, hence a new
        authenticator, for every attempt and every host."""
        requests = self.requests
        url = self.url + path
        headers = dict(headers or {}, **({"X-Vault-Token": token} if token
                                         else {}))
        data = json.dumps(body) if body is not None else None
        attempt = redirects = 0
        last = None
        while True:
            if self.deadline - time.monotonic() <= 0:
                raise given_up(last, attempt) or self.timed_out(what, url)
            attempt += 1
            prepared = self.session.prepare_request(requests.Request(
                method, url, headers=headers, data=data, params=params,
                auth=auth))
            if auth is not None:  # our loop, not requests-gssapi's, retries
                prepared.deregister_hook("response", auth.handle_response)
            settings = self.session.merge_environment_settings(
                prepared.url, {}, True, self.verify, None)
            proxy = requests.utils.select_proxy(prepared.url, settings["proxies"])
            retry_after = None
            try:
                status, reply_headers, content = self.send(
                    prepared, settings, proxy, what)
            except _DeadlinePassed:
                raise given_up(last, attempt) or self.timed_out(what, url,
                                                                proxy)
            except requests.exceptions.SSLError as exc:
                raise VaultUnreachable(
                    "TLS with {} failed: {}; check --cafile/--capath (the CA "
                    "that signed Vault's certificate) and the host name"
                    .format(url_origin(url), describe_failure(exc)))
            except (requests.exceptions.RequestException,
                    self.urllib3.exceptions.HTTPError, OSError) as exc:
                failure = self.connection_failure(exc, url, proxy)
            else:
                if status in (307, 308):
                    url, params = self.redirect(url, reply_headers, what,
                                                redirects)
                    redirects += 1
                    continue
                if 300 <= status < 400:
                    raise VaultRefused(
                        "{} answered the {} with HTTP {}, a redirect Vault "
                        "never sends (a proxy or a login portal?); check "
                        "--vaultserver".format(url_origin(url), what, status))
                if not (retry and status in RETRY_STATUSES):
                    return Response(status, content, reply_headers)
                failure = VaultRefused(
                    "Vault at {} answered HTTP {} ({}) to the {}".format(
                        url_origin(url), status, Response(
                            status, content, reply_headers).errors() or
                        "no reason given", what))
                failure.hint = ("Vault may be sealed, overloaded or failing: "
                                "try again later or tell its operators")
                retry_after = reply_headers.get("Retry-After")
            last = failure
            delay = self.backoff(attempt, retry_after)
            if not retry or getattr(failure, "final", False) or \
                    delay >= self.deadline - time.monotonic() - 0.1:
                raise given_up(failure, attempt)
            log.info("%s; retrying in %.1fs", failure, delay,
                     extra={"event": "retry"})
            time.sleep(delay)

    def send(self, prepared, settings, proxy, what):
        """Send one request and read its body, all before the deadline."""
        remaining = self.deadline - time.monotonic()
        log.debug("HTTP %s %s%s", prepared.method, prepared.url.split("?")[0],
                  " via proxy " + url_origin(proxy) if proxy else "")
        _log_http_headers(">", prepared.headers)
        self.requests_made += 1
        started = time.monotonic()
        with deadline_alarm(remaining):
            reply = self.session.send(
                prepared, allow_redirects=False,
                timeout=(min(CONNECT_TIMEOUT, remaining),
                         min(READ_TIMEOUT, remaining)), **settings)
            try:
                length = reply.headers.get("Content-Length", "")
                if length.strip().isdigit() and int(length) > MAX_BODY:
                    raise self.too_large(what, "it announces {} bytes".format(
                        int(length)))
                content = reply.raw.read(MAX_BODY + 1)
                if len(content) > MAX_BODY:
                    raise self.too_large(what, "it goes on past {} bytes"
                                         .format(MAX_BODY))
            finally:
                reply.close()
        log.debug("HTTP %d from %s in %.3fs", reply.status_code, what,
                  time.monotonic() - started)
        _log_http_headers("<", reply.headers)
        if log.isEnabledFor(logging.DEBUG - 5):
            log.log(logging.DEBUG - 5, "body: %s", redact_body(
                Response(reply.status_code, content, reply.headers)))
        return reply.status_code, reply.headers, content

    def too_large(self, what, how):
        return VaultUnreachable(
            "the reply to the {} from {} is too large ({}; a Vault answer is "
            "under {} bytes): something between us and Vault, such as a proxy "
            "or a captive portal, may be answering; check --vaultserver and "
            "the network".format(what, url_origin(self.url), how, MAX_BODY))

    def timed_out(self, what, url, proxy=None):
        return VaultUnreachable(
            "no answer from Vault at {}{} to the {} within --timeout; check "
            "the network, or raise --timeout".format(
                url_origin(url), " through the proxy " + url_origin(proxy)
                if proxy else "", what))

    def connection_failure(self, exc, url, proxy):
        """The VaultUnreachable for a failed exchange, ``final`` when asking
        again cannot help: the proxy said no (407, 403), or a name that does
        not resolve with no proxy to resolve it."""
        import socket
        reason = describe_failure(exc)
        where = url_origin(url)
        if proxy:
            words = reason.split()
            error = VaultUnreachable(
                "cannot reach Vault at {} through the proxy {} ({}); check "
                "HTTPS_PROXY/NO_PROXY and that the proxy allows CONNECT to {}"
                "{}".format(where, url_origin(proxy), reason, where,
                            " and which credentials it wants (in HTTPS_PROXY "
                            "as http://user:password@host:port)" if "407" in
                            words else ""))
            error.final = "407" in words or "403" in words
            return error
        error = VaultUnreachable(
            "cannot reach Vault at {} ({}); check --vaultserver, the network "
            "and DNS of this host (or container), and that outbound HTTPS to "
            "port {} is allowed".format(where, reason, where.rsplit(":", 1)[1]))
        root = root_cause(exc)
        error.final = isinstance(root, socket.gaierror) and root.errno != \
            getattr(socket, "EAI_AGAIN", None)
        return error

    def redirect(self, url, headers, what, redirects):
        """The URL a standby's 307/308 sends us to: https only, 3 at most."""
        from urllib.parse import urljoin
        location = headers.get("Location")
        target = urljoin(url, location) if location else ""
        if not target.lower().startswith("https://"):
            raise VaultRefused(
                "Vault at {} redirected the {} to {!r}, which is not https; "
                "refusing to send credentials there: check --vaultserver"
                .format(url_origin(url), what, printable(target)))
        if redirects >= MAX_REDIRECTS:
            raise VaultRefused(
                "Vault at {} redirected the {} more than {} times in a row; "
                "check --vaultserver and the Vault cluster's HA settings"
                .format(url_origin(url), what, MAX_REDIRECTS))
        log.info("Vault at %s redirected the %s to %s", url_origin(url), what,
                 url_origin(target))
        return target, None

    def backoff(self, attempt, retry_after):
        """Full jitter, at least what Retry-After (seconds or a date) asks."""
        delay = random.uniform(0, min(8.0, 0.5 * 2 ** (attempt - 1)))
        wait = parse_retry_after(retry_after)
        return max(delay, wait) if wait is not None else delay


def given_up(failure, attempts):
    """The last failure of a call, as the error that ends the run: the same
    class (so the same exit code) whenever the same failure repeats."""
    if failure is None:
        return None
    hint = getattr(failure, "hint", None)
    return type(failure)("{} ({} attempt{} within --timeout){}".format(
        failure, attempts, "" if attempts == 1 else "s",
        "; " + hint if hint else ""))


def _adapter(requests, context):
    """requests' HTTPS adapter with our TLS context, for Vault and for the
    tunnel through a proxy alike."""
    class Adapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            kwargs["ssl_context"] = context
            return requests.adapters.HTTPAdapter.init_poolmanager(
                self, *args, **kwargs)

        def proxy_manager_for(self, proxy, **kwargs):
            kwargs["ssl_context"] = context
            return requests.adapters.HTTPAdapter.proxy_manager_for(
                self, proxy, **kwargs)
    return Adapter()


def tls_context(cafile, capath):
    import ssl
    try:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError("cannot load CA certificates ({} {}): {}; check "
                         "--cafile/--capath".format(cafile, capath, exc))


def parse_retry_after(value):
    """Retry-After in seconds, from a number or an HTTP date; None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - time.time())


def url_origin(url):
    """scheme://host:port of a URL, without credentials or path."""
    from urllib.parse import urlsplit
    parts = urlsplit(url or "")
    host = parts.hostname or ""
    if ":" in host:
        host = "[" + host + "]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return "{}://{}{}".format(parts.scheme, host, ":{}".format(port)
                              if port else "")


def root_cause(exc):
    """The innermost exception behind a requests/urllib3 one."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException):
            inner = exc.__cause__ or exc.__context__
        if inner is None and exc.args and isinstance(exc.args[0], BaseException):
            inner = exc.args[0]
        if inner is None:
            break
        exc = inner
    return exc


def describe_failure(exc):
    """One short line for a connection, proxy or TLS failure."""
    import socket
    root = root_cause(exc)
    if isinstance(root, socket.gaierror):
        return "DNS: cannot resolve the name: {}".format(root.strerror or root)
    if isinstance(root, socket.timeout) or "timed out" in str(root).lower():
        return "timeout: no answer within the time allowed"
    text = getattr(root, "verify_message", None) or getattr(
        root, "strerror", None) or str(root)
    if isinstance(root, OSError) and root.errno and "[Errno" not in str(text):
        text = "[Errno {}] {}".format(root.errno, text)
    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>:?\s*", "", str(text))
    return redact(" ".join(text.split()) or type(root).__name__)[:300]


_PUBLIC_TOKEN_FIELDS = {"token_type", "token_policies", "type", "token_ttl",
                        "token_num_uses", "token_bound_cidrs"}


def redact_fields(value):
    """A JSON value with every credential-bearing field's value redacted:
    any key naming a token, a secret or an accessor, whatever its shape."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            low = str(key).lower()
            if (("token" in low or "secret" in low or "accessor" in low
                 or "password" in low) and low not in _PUBLIC_TOKEN_FIELDS
                    and isinstance(item, str) and item):
                out[key] = "<redacted>"
            else:
                out[key] = redact_fields(item)
        return out
    if isinstance(value, list):
        return [redact_fields(item) for item in value]
    return value


def redact_body(response):
    """A response body for the -vvv log, with credentials removed."""
    if response.json is not None:
        return redact(json.dumps(redact_fields(response.json), sort_keys=True))
    if not response.body:
        return "(empty)"
    return "({} bytes, not JSON: not shown)".format(len(response.body))


def _log_http_headers(direction, headers):
    if not log.isEnabledFor(logging.DEBUG - 5):
        return
    for key, value in sorted(dict(headers).items(), key=lambda kv: kv[0].lower()):
        if key.lower() in ("x-vault-token", "authorization", "cookie",
                           "set-cookie", "proxy-authorization"):
            value = "<redacted>"
        log.log(logging.DEBUG - 5, "%s %s: %s", direction, key, redact(value))


# -- Vault protocol ----------------------------------------------------------------------

def extract_access_token(body, now=None):
    """The bearer token from a creds/sts read; UnusableToken if it is bad."""
    try:
        data = json.loads(body.decode("utf-8") if isinstance(body, bytes)
                          else body)
    except (ValueError, UnicodeDecodeError, RecursionError, AttributeError,
            TypeError):
        raise UnusableToken("Vault's answer is not JSON")
    if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
        raise UnusableToken("Vault's answer has no 'data' object")
    token = data["data"].get("access_token")
    if not isinstance(token, str) or not token.strip():
        raise UnusableToken("Vault's answer has no 'access_token'")
    token = remember_secret(token.strip())
    if not re.match(r"^[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]*$",
                    token):
        raise UnusableToken("the access token Vault returned is not a JWT")
    left = token_expiry(token) - (time.time() if now is None else now)
    if left <= 0:
        raise UnusableToken("the access token Vault returned expired {} ago"
                            .format(format_duration(-left)))
    return token


def _auth_field(resp, what):
    data = resp.json if isinstance(resp.json, dict) else {}
    auth = data.get("auth")
    metadata = auth.get("metadata") if isinstance(auth, dict) else None
    if isinstance(metadata, dict):
        remember_secret(metadata.get("oauth2_refresh_token"))
    if not isinstance(auth, dict) or not isinstance(
            auth.get("client_token"), str) or not auth["client_token"]:
        raise VaultRefused("Vault's {} answer has no auth.client_token; is "
                           "this a Vault server?".format(what))
    remember_secret(auth["client_token"])
    return auth


class NoRefreshToken(Exception):
    """Vault holds no usable refresh token for this robot."""

    def __init__(self, reason):
        Exception.__init__(self, reason)
        self.reason = reason


class TokenRejected(Exception):
    """The vault token was refused (403): try another way in."""


class Vault(object):
    """The htvault-config protocol (vault-protocol.md section 3) on top of
    a VaultClient."""

    def __init__(self, client, config, robot):
        self.client = client
        self.config = config
        self.robot = robot
        self.issuer = config.issuer

    @property
    def secret_path(self):
        kind = "sts" if (self.config.scopes or self.config.audience) else "creds"
        return "/v1/secret/oauth/{}/{}/{}:{}".format(
            kind, self.issuer, self.robot.credkey, self.robot.role)

    def read_bearer(self, vault_token):
        """GET creds/sts with ``minimum_seconds``; the access token."""
        params = {"minimum_seconds": int(self.config.minsecs)}
        if self.config.scopes:
            params["scopes"] = ",".join(self.config.scopes)
        if self.config.audience:
            params["audiences"] = ",".join(self.config.audience)
        resp = self.client.call("GET", self.secret_path, "bearer token read",
                                token=vault_token, params=params)
        if resp.status == 200:
            return extract_access_token(resp.body)
        errors = resp.errors()
        low = errors.lower()
        who = "{}:{}".format(self.robot.credkey, self.robot.role)
        if resp.status == 403:
            raise TokenRejected(errors or "permission denied")
        if resp.status == 404:
            raise NoRefreshToken(
                "Vault holds no refresh token for {} yet (first use)".format(who))
        if resp.status == 400 and ("invalid_grant" in low
                                   or "refresh failed" in low):
            raise NoRefreshToken(
                "the refresh token Vault holds for {} was rejected by the "
                "issuer ({}): it expired or was revoked".format(who, errors))
        if resp.status == 400 and "token expired" in low:
            raise VaultRefused(
                "Vault cannot give a token with {} left ({}); lower --minsecs "
                "below the issuer's token lifetime".format(
                    format_duration(self.config.minsecs), errors))
        raise VaultRefused("Vault refused the bearer token read at {} (HTTP "
                           "{}: {}); check --issuer, --role and --credkey"
                           .format(self.secret_path, resp.status,
                                   errors or "no reason given"))

    def kerberos_login(self):
        """Section 3.3, with requests-gssapi's Negotiate header."""
        path = "/v1/auth/kerberos-{}_{}/login".format(self.issuer,
                                                       self.robot.role)
        with kerberos_config():
            resp = self.client.call(
                "POST", path, "Kerberos login",
                auth=negotiate_auth(self.robot, self.config),
                headers={"Content-Type": "application/x-www-form-urlencoded"})
        if resp.status != 200:
            raise VaultRefused(
                "Vault refused the Kerberos login at {} (HTTP {}: {}); check "
                "that --issuer {} and --role {} are right and that the robot "
                "is registered for them".format(
                    path, resp.status, resp.errors() or "no reason given",
                    self.issuer, self.robot.role))
        return _auth_field(resp, "Kerberos login")

    def exchange(self, auth, ttl):
        """Swap a login token for one of ``ttl`` seconds (section 3.4)."""
        policies = [p for p in auth.get("policies") or []
                    if isinstance(p, str)]
        ssh = [p for p in policies if p.startswith("sshregister")]
        duration = auth.get("lease_duration")
        if isinstance(duration, int) and 0 < duration <= ttl and not ssh:
            return auth["client_token"], duration
        body = {"ttl": "{}s".format(int(ttl)), "renewable": "false"}
        if ssh:
            body["policies"] = [p for p in policies if p not in ssh]
        resp = self.client.call("POST", "/v1/auth/token/create",
                                "vault token exchange",
                                token=auth["client_token"], body=body)
        if resp.status != 200:
            raise VaultRefused("Vault refused to create a {} vault token (HTTP "
                               "{}: {}); try a shorter --vaulttokenttl".format(
                                   format_duration(ttl), resp.status,
                                   resp.errors() or "no reason given"))
        new = _auth_field(resp, "token exchange")
        duration = new.get("lease_duration")
        return new["client_token"], (
            duration if isinstance(duration, int) and duration > 0 else ttl)

    def oidc_start(self, nonce):
        path = "/v1/auth/oidc-{}/oidc/auth_url".format(self.issuer)
        body = {"role": self.robot.role, "client_nonce": nonce,
                "redirect_uri": "{}/v1/auth/oidc-{}/oidc/callback".format(
                    self.client.url, self.issuer)}
        resp = self.client.call("POST", path, "OIDC login start", body=body)
        data = resp.json.get("data") if isinstance(resp.json, dict) else None
        if resp.status != 200 or not isinstance(data, dict) or not data.get(
                "auth_url"):
            raise VaultRefused("Vault could not start the OIDC login at {} "
                               "(HTTP {}: {}); check --issuer and --role".format(
                                   path, resp.status,
                                   resp.errors() or "no auth_url"))
        return data

    def oidc_poll(self, state, nonce):
        """One poll: the auth dict, or a string error code from Vault."""
        path = "/v1/auth/oidc-{}/oidc/poll".format(self.issuer)
        resp = self.client.call("POST", path, "OIDC poll",
                                body={"state": state, "client_nonce": nonce})
        if resp.status == 200:
            return _auth_field(resp, "OIDC poll")
        errors = resp.errors()
        if resp.status == 400 and errors in ("authorization_pending",
                                              "slow_down"):
            return errors
        raise OidcFailed("the OIDC login failed: {}".format(
            errors or "HTTP {}".format(resp.status)))

    def store_refresh_token(self, vault_token, refresh_token):
        path = "/v1/secret/oauth/creds/{}/{}:{}".format(
            self.issuer, self.robot.credkey, self.robot.role)
        resp = self.client.call(
            "POST", path, "refresh token store", token=vault_token,
            body={"server": self.issuer, "refresh_token": refresh_token})
        if resp.status not in (200, 204):
            raise VaultRefused(
                "Vault refused to store the refresh token at {} (HTTP {}: "
                "{}); the login's identity may not own credkey {}".format(
                    path, resp.status, resp.errors() or "no reason given",
                    self.robot.credkey))


# -- renewal: cached vault token, Kerberos login, first use ---------------------------

class Outcome(object):
    """What a run did, for logs, the status file, metrics and hooks."""

    def __init__(self):
        self.renewed = False
        self.how = None

    def succeeded(self, code):
        """The token is good: the run exited 0, or renewed it and only the
        --on-change command failed."""
        return code == 0 or (code == HookFailed.exit_code and self.renewed)


def renew(config, robot, outcome):
    """A new bearer token from Vault: the network part of a run."""
    deadline = time.monotonic() + config.timeout
    with VaultClient(config, deadline) as client:
        vault = Vault(client, config, robot)
        cached = cached_vault_token(config, robot)
        if cached:
            try:
                token = vault.read_bearer(cached)
                outcome.how = "cached vault token"
                return token
            except TokenRejected as exc:
                log.info("Vault refused the cached vault token (%s); "
                         "forgetting it and logging in with Kerberos", exc)
                forget_vault_token(robot)
            except NoRefreshToken as exc:
                return first_use(vault, config, robot, outcome, exc.reason)
        auth = vault.kerberos_login()
        vault_token, lifetime = auth["client_token"], None
        if robot.vaulttokenfile:
            vault_token, lifetime = vault.exchange(auth, config.vaulttokenttl)
        try:
            token = vault.read_bearer(vault_token)
        except TokenRejected as exc:
            raise VaultRefused(
                "Vault refused the token read for {}:{} right after the "
                "Kerberos login ({}); check --credkey and --role for this "
                "robot".format(robot.credkey, robot.role, exc))
        except NoRefreshToken as exc:
            return first_use(vault, config, robot, outcome, exc.reason)
        save_vault_token(config, robot, vault_token, lifetime)
        outcome.how = "Kerberos login"
        return token


def cached_vault_token(config, robot):
    """The robot's cached vault token if it is trustworthy and young enough.

    Its remaining life is estimated from the file's age and the TTL we ask
    for, which spares htgettoken's lookup-self request; a token that turns
    out to be dead costs one refused read, then a Kerberos login.
    """
    path = robot.vaulttokenfile
    if not path:
        return None
    try:
        data, info = open_trusted(path, "vault token cache",
                                  "remove it, or choose another "
                                  "--vaulttokenfile", private=True)
    except UntrustedFile as exc:
        log.warning("%s; logging in with Kerberos instead", exc)
        return None
    token = token_text(data) if data else None
    if not token:
        return None
    remember_secret(token)
    left = config.vaulttokenttl - (time.time() - info.st_mtime)
    if left < config.vaulttokenminttl:
        log.info("cached vault token %s has about %s left, under "
                 "--vaulttokenminttl; logging in again", path,
                 format_duration(left))
        return None
    log.debug("using cached vault token %s (about %s left)", path,
              format_duration(left))
    return token


def forget_vault_token(robot):
    """A vault token Vault refused is never presented again."""
    try:
        if os.lstat(robot.vaulttokenfile).st_uid == os.geteuid():
            os.unlink(robot.vaulttokenfile)
    except OSError:
        pass


def save_vault_token(config, robot, vault_token, lifetime):
    """Cache the vault token for the next run; a failure here costs only a
    Kerberos login next time, so it is a warning, not an error.

    The file's modification time is set to the token's expiry minus
    --vaulttokenttl, so that cached_vault_token() estimates its life right
    even when Vault granted less than we asked for.
    """
    path = robot.vaulttokenfile
    if not path:
        return
    try:
        replaceable(path, "vault token cache")
        write_atomically(path, vault_token + "\n")
        if lifetime and lifetime < config.vaulttokenttl:
            stamp = time.time() + lifetime - config.vaulttokenttl
            os.utime(path, (stamp, stamp))
        log.debug("stored the vault token in %s", path)
    except (OSError, OutputError) as exc:
        log.warning("not caching the vault token: %s", exc)


def interactive():
    """A human may answer: a terminal on stdin, stdout or stderr."""
    return any(_isatty(stream) for stream in (sys.stdin, sys.stdout, sys.stderr))


def needs_human_message(config, reason):
    image = os.environ.get("IGWN_ROBOT_GET_IMAGE")
    args = [a for a in config.argv if a not in ("-q", "--quiet", "--nooidc")]
    if image:
        command = ("docker run --rm -it --user $(id -u):$(id -g) -v "
                   "/path/to/tokens:/tokens -v /path/to/robot.keytab:/keytab:ro "
                   "-e KRB5_KTNAME=/keytab")
        if os.environ.get("BEARER_TOKEN_FILE"):
            command += " -e BEARER_TOKEN_FILE=" + shlex.quote(
                os.environ["BEARER_TOKEN_FILE"])
        command += " " + image
    else:
        command = PROG
    if args:
        command += " " + " ".join(shlex.quote(a) for a in args)
    why = "OIDC was disabled by --nooidc" if config.nooidc else \
        "there is no terminal to log in from"
    return ("{}; {}: a human must run this once from an interactive terminal "
            "to log in through a web browser, then later runs are unattended: "
            "{}".format(reason, why, command))


def first_use(vault, config, robot, outcome, reason):
    """No refresh token in Vault: the OIDC device flow, with a human."""
    if config.nooidc or not interactive():
        raise NeedsHuman(needs_human_message(config, reason))
    log.warning("%s: starting the OIDC login", reason)
    auth = device_flow(vault, config)
    metadata = auth.get("metadata") if isinstance(auth.get("metadata"),
                                                  dict) else {}
    refresh = metadata.get("oauth2_refresh_token")
    if not refresh:
        raise OidcFailed("the OIDC login returned no refresh token; check "
                         "that the Vault role is set up for robots")
    vault_token, lifetime = auth["client_token"], None
    if robot.vaulttokenfile:
        vault_token, lifetime = vault.exchange(auth, config.vaulttokenttl)
    vault.store_refresh_token(vault_token, refresh)
    if metadata.get("credkey") and not config.credkey_given:
        save_credkey(config, robot, str(metadata["credkey"]))
    try:
        token = vault.read_bearer(vault_token)
    except (TokenRejected, NoRefreshToken) as exc:
        raise VaultRefused(
            "Vault took the refresh token but then gave no bearer token for "
            "{}:{} ({}); check that the OIDC login was done as the robot's "
            "owner, and --credkey".format(robot.credkey, robot.role, exc))
    save_vault_token(config, robot, vault_token, lifetime)
    log.warning("OIDC login complete: Vault now holds a refresh token for "
                "%s:%s; later runs will be unattended", robot.credkey,
                robot.role)
    outcome.how = "OIDC login"
    return token


def save_credkey(config, robot, credkey):
    """Keep htgettoken's credkey file in step, so both tools agree; only in
    a directory that is ours and that nobody else can write."""
    home = os.environ.get("HOME") or os.path.expanduser("~")
    directory = os.path.join(home, ".config", "htgettoken")
    path = os.path.join(directory, "credkey-{}-{}".format(config.issuer,
                                                          robot.role))
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or \
                info.st_mode & 0o022:
            raise OutputError("{} is not a directory of ours that only we can "
                              "write".format(directory))
        replaceable(path, "credkey file")
        write_atomically(path, credkey + "\n")
        log.info("saved credkey %s in %s", credkey, path)
    except (OSError, OutputError) as exc:
        log.warning("could not save the credkey in %s: %s", path, exc)


def device_flow(vault, config):
    """Sections 3.5 and 3.6: show URL and code, open a browser, poll."""
    nonce = secrets.token_urlsafe(24)
    data = vault.oidc_start(nonce)
    url = printable(data.get("auth_url") or "")
    code, state = data.get("user_code"), data.get("state")
    if not state:
        raise OidcFailed("Vault's OIDC answer has no 'state' (a legacy "
                         "server?); use htgettoken for this first login")
    try:
        interval = max(0.2, float(data.get("poll_interval") or 5))
    except (TypeError, ValueError):
        interval = 5.0
    banner = ["", "=" * 72,
              "First use: log in as the robot's owner to give Vault a refresh "
              "token.",
              "Open this URL in a web browser:", "",
              "    " + url, ""]
    if code:
        banner += ["and enter the code:  {}".format(printable(code)), ""]
    banner.append("=" * 72)
    say_block(banner, event="oidc_prompt")
    open_browser(config, url)
    status = StatusLine(config.oidc_timeout)
    try:
        while True:
            if status.left() <= 0:
                raise OidcFailed(
                    "the OIDC login was not completed within {}; run again "
                    "and complete it in time (--oidc-timeout)".format(
                        format_duration(config.oidc_timeout)))
            status.wait(min(interval, status.left()))
            answer = vault.oidc_poll(state, nonce)
            if answer == "slow_down":
                interval *= 2
                log.debug("Vault asked to slow down: polling every %.1fs",
                          interval)
            elif isinstance(answer, dict):
                return answer
    finally:
        status.done()


def open_browser(config, url):
    """Open an https URL, and only where a graphical browser can work."""
    if config.no_browser or not url:
        return
    if not url.lower().startswith("https://"):
        log.warning("not opening the login URL in a browser: it is not https")
        return
    command = config.web_open_command
    if command is None:
        if os.environ.get("SSH_CLIENT") or os.environ.get("SSH_CONNECTION"):
            return
        if sys.platform == "darwin":
            command = "open"
        elif os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
            command = "xdg-open"
        else:
            return
    if not command:
        return
    env = dict(os.environ)
    env.setdefault("BROWSER", "x-www-browser:firefox:chromium:google-chrome")
    try:
        subprocess.Popen(shlex.split(command) + [url], env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
        log.info("opened the URL with %s", command)
    except (OSError, ValueError) as exc:
        log.info("could not open a browser with %r (%s); open the URL by "
                 "hand", command, exc)


class StatusLine(object):
    """One live line while a human logs in; plain lines off a terminal."""

    def __init__(self, budget):
        self.start = time.monotonic()
        self.budget = budget
        self.tty = _isatty(sys.stderr) and not _LOG_STATE["json"]
        self.last_plain = self.start

    def left(self):
        return self.budget - (time.monotonic() - self.start)

    def wait(self, seconds):
        end = time.monotonic() + seconds
        while True:
            self.show()
            now = time.monotonic()
            if now >= end:
                return
            time.sleep(min(1.0, end - now))

    def show(self):
        elapsed = time.monotonic() - self.start
        text = "waiting for the login: {} elapsed, {} left (Ctrl-C to " \
               "cancel)".format(format_duration(elapsed),
                                format_duration(max(0, self.left())))
        if self.tty:
            sys.stderr.write("\r\033[K" + text)
            sys.stderr.flush()
        elif time.monotonic() - self.last_plain >= 30:
            self.last_plain = time.monotonic()
            log.warning("%s", text, extra={"event": "oidc_waiting"})

    def done(self):
        if self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def say_block(lines, event):
    """Print lines for a human on stderr, through the log in JSON mode."""
    if _LOG_STATE["json"]:
        log.warning("%s", "\n".join(lines).strip("=\n "),
                    extra={"event": event})
        return
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


# -- token writer -------------------------------------------------------------------------

def replaceable(path, what):
    """Refuse to replace what is at ``path`` unless it is our own regular
    file (or nothing): never another user's file, a link, a FIFO, a device
    or a directory."""
    try:
        open_trusted(path, what, "remove it, or choose another path",
                     limit=0)
    except UntrustedFile as exc:
        if not exc.ours:
            raise


def check_output_target(config):
    """Fail fast, before the keytab and the network, when the token cannot
    be written; the group a group-readable token will get."""
    path = config.outfile
    if is_dev_file(path):
        return None
    replaceable(path, "token file")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        dinfo = os.stat(directory)
    except OSError as exc:
        raise OutputError(
            "cannot write {}: directory {} {}; create it or choose another "
            "--outfile".format(path, directory, "does not exist" if
                               exc.errno == errno.ENOENT else
                               "is not usable: " + exc.strerror))
    if not stat.S_ISDIR(dinfo.st_mode):
        raise OutputError("cannot write {}: {} is not a directory".format(
            path, directory))
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(
            "cannot write {}: directory {} is not writable by us (owner {}:{}, "
            "mode {:04o}, we are {}:{}); chown the directory, or run as its "
            "owner (docker: --user $(id -u):$(id -g))".format(
                path, directory, dinfo.st_uid, dinfo.st_gid,
                stat.S_IMODE(dinfo.st_mode), os.geteuid(), os.getegid()))
    if not config.mode & 0o040:
        return None
    if os.geteuid() != 0 and dinfo.st_gid not in our_groups():
        raise OutputError(
            "--mode {:04o}: {} would get the group {} of its directory {}, "
            "which we are not in; run with that group (docker: --group-add "
            "{}), or use --mode 0600".format(config.mode, path, dinfo.st_gid,
                                             directory, dinfo.st_gid))
    return dinfo.st_gid


def write_atomically(path, data, mode=0o600, group=None):
    """Replace ``path`` with ``data`` so readers see the old or the new file.

    A temporary file is created exclusively in the same directory with
    ``mode`` (whatever the umask) and ``group``, written, fsynced and renamed
    over the target.  The old file is never deleted first; on any failure
    the temporary file is removed and the target is left as it was.
    """
    if is_dev_file(path):
        try:
            with open(path, "w") as handle:
                handle.write(data)
        except OSError as exc:
            raise OutputError("cannot write {}: {}".format(path, exc.strerror))
        return
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                                   suffix=".tmp", dir=directory)
        try:
            if group is not None and os.fstat(fd).st_gid != group:
                os.fchown(fd, -1, group)
            os.fchmod(fd, mode)
            payload = data.encode("utf-8")
            while payload:
                payload = payload[os.write(fd, payload):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OutputError("cannot write {}: {}; check the directory's space "
                          "and permissions".format(path, exc.strerror))
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


class FileLock(object):
    """An exclusive ``fcntl.flock`` on ``<target>.lock`` (ours, mode 0600)."""

    def __init__(self, target, timeout):
        self.path = target + ".lock"
        self.timeout = timeout
        self.fd = None

    def __enter__(self):
        flags = (os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                 | os.O_NOCTTY)
        try:
            self.fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise OutputError("cannot open lock file {}: {}; remove it if it "
                              "is not ours".format(self.path, exc.strerror))
        info = os.fstat(self.fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            os.close(self.fd)
            raise OutputError(
                "lock file {} is not a file of ours (uid {}); remove it".format(
                    self.path, info.st_uid))
        if stat.S_IMODE(info.st_mode) != 0o600:
            os.fchmod(self.fd, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise OutputError("cannot lock {}: {}".format(
                        self.path, exc.strerror))
            if time.monotonic() > deadline:
                os.close(self.fd)
                raise OutputError(
                    "another igwn-robot-get run has held {} for over {}; "
                    "check for a stuck run".format(
                        self.path, format_duration(self.timeout)))
            log.debug("waiting for another run holding %s", self.path)
            time.sleep(0.05)

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# -- operators: --show, --check, status and metrics files, hooks ------------------------

def token_summary(token, now=None):
    """The claims worth showing and the time left (None if undecodable)."""
    try:
        claims = decode_jwt_payload(token)
    except UnusableToken:
        return None
    return {"claims": claims, "time_left": time_left(token, now)}


def format_claim(name, value, now):
    if name in ("exp", "iat", "nbf") and usable_exp(value):
        try:
            when = datetime.fromtimestamp(value, timezone.utc)
        except (OverflowError, OSError, ValueError):
            return str(value)
        delta = value - now
        rel = "in " + format_duration(delta) if delta >= 0 else \
            format_duration(-delta) + " ago"
        return "{} ({}, {})".format(value, when.strftime(
            "%Y-%m-%d %H:%M:%S UTC"), rel)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return printable(value)


def json_safe(value):
    """``value`` with NaN and infinities as strings, so the JSON is valid."""
    if isinstance(value, float) and not -1e308 < value < 1e308:
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def show(config):
    """``--show``: print the managed token's claims; never fetch."""
    if not config.outfile_given and os.environ.get("BEARER_TOKEN", "").strip():
        source, token = "$BEARER_TOKEN", os.environ["BEARER_TOKEN"].strip()
    else:
        source = config.outfile
        token = None if is_dev_file(source) else token_text(open_trusted(
            source, "token file", "remove it, or choose another path",
            reader=True)[0])
    now = time.time()
    summary = token_summary(token, now) if token else None
    left = summary["time_left"] if summary else None
    if config.json:
        if not config.quiet:
            print(json.dumps({
                "source": source, "minsecs": config.minsecs,
                "claims": json_safe(summary["claims"]) if summary else None,
                "time_left": left,
                "fresh": left is not None and left >= config.minsecs},
                sort_keys=True))
    elif summary and not config.quiet:
        print("token: {}".format(source))
        for name in sorted(summary["claims"]):
            print("  {:<9} {}".format(name + ":", format_claim(
                name, summary["claims"][name], now)))
        if left is not None:
            print("time left: {}".format(format_duration(left) if left > 0
                                         else "none (expired)"))
    if token is None:
        raise TokenNotFresh("no token at {}; run {} to fetch one".format(
            source, PROG))
    if summary is None:
        raise TokenNotFresh("the token at {} is not a JWT; run {} to replace "
                            "it".format(source, PROG))
    if left is None:
        raise TokenNotFresh("the token at {} has no usable 'exp' claim".format(
            source))
    if left < config.minsecs:
        raise TokenNotFresh(
            "the token at {} has {} left, under --minsecs {}; run {} to renew "
            "it".format(source, format_duration(max(0, left)),
                        int(config.minsecs), PROG))


def run_checks(config):
    """``--check``: one line per check on stdout; the first failure's code."""
    first = 0

    def report(name, check):
        nonlocal first
        try:
            text, code = check(), 0
        except RobotGetError as exc:
            text, code = str(exc), exc.exit_code
            first = first or code
        print("{:<5} {:<12} {}{}".format("ok" if code == 0 else "FAIL", name,
                                        printable(redact(text)),
                                        " (exit {})".format(code) if code
                                        else ""), flush=True)

    def keytab():
        robot = Robot(config)
        info = os.stat(robot.keytab)
        return "keytab {} readable (mode {:04o}, owner {}:{}); principal {}" \
            .format(robot.keytab, stat.S_IMODE(info.st_mode), info.st_uid,
                    info.st_gid, robot.principal)

    def token_file():
        check_output_target(config)
        if is_dev_file(config.outfile):
            return "the token goes to {}".format(config.outfile)
        left = stored_time_left(config.outfile)
        state = "no usable token yet" if left is None else \
            "token has {} left".format(format_duration(max(0, left)))
        return "{} can be written ({})".format(config.outfile, state)

    def vault():
        with VaultClient(config, time.monotonic() + min(
                config.timeout, 10.0)) as client:
            resp = client.call("GET", "/v1/sys/health", "health check",
                               retry=False)
            proxy = client.requests.utils.select_proxy(
                client.url, client.session.merge_environment_settings(
                    client.url, {}, True, client.verify, None)["proxies"])
        return "Vault {} answered HTTP {} over verified TLS{}".format(
            client.url, resp.status, " through the proxy " + url_origin(proxy)
            if proxy else "")

    report("keytab", keytab)
    report("token_file", token_file)
    report("vault", vault)
    return first


def _previous(path, what):
    """The previous content of a status or metrics file: "" when there is
    none or it is not to be believed; None when it must not be replaced."""
    try:
        data = read_trusted(path, what)
    except UntrustedFile as exc:
        if not exc.ours:
            log.warning("%s; not writing it", exc)
            return None
        return ""
    return (data or b"").decode("utf-8", "replace")


def token_facts(path):
    """exp, sub, scope, aud and time left of the token now on disk."""
    try:
        token = None if is_dev_file(path) else token_text(read_trusted(path))
    except UntrustedFile:
        token = None
    summary = token_summary(token) if token else None
    if not summary:
        return None
    facts = {k: summary["claims"].get(k) for k in ("exp", "sub", "scope", "aud")}
    facts["time_left"] = summary["time_left"]
    return facts


def write_status(config, code, error, outcome, started):
    """``--status-file``: one JSON document about the last run."""
    text = _previous(config.status_file, "status file")
    if text is None:
        return
    try:
        previous = json.loads(text) if text else {}
    except ValueError:
        previous = {}
    previous = previous if isinstance(previous, dict) else {}
    now = time.time()
    ok = outcome.succeeded(code)
    doc = {
        "version": 1,
        "tool": PROG,
        "tool_version": __version__,
        "attempt_time": _iso(started),
        "attempt_timestamp": round(started, 3),
        "duration_seconds": round(now - started, 3),
        "outcome": ("renewed" if outcome.renewed else "fresh") if ok
        else "failed",
        "exit_code": code,
        "error": None if error is None else printable(redact(error)),
        "error_class": None if error is None else getattr(
            error, "kind", "internal"),
        "last_success_time": _iso(now) if ok else previous.get(
            "last_success_time"),
        "last_success_timestamp": round(now, 3) if ok else previous.get(
            "last_success_timestamp"),
        "token_file": config.outfile,
        "token": token_facts(config.outfile),
    }
    write_atomically(config.status_file, json.dumps(
        doc, indent=2, sort_keys=True) + "\n", mode=0o644)


def write_metrics(config, code, outcome):
    """``--metrics-file``: the same facts for node_exporter's textfile
    collector."""
    text = _previous(config.metrics_file, "metrics file")
    if text is None:
        return
    prefix = "igwn_robot_get_"
    previous = {}
    for line in text.splitlines():
        match = re.match(r"^(" + prefix + r"\w+)(?:\{[^}]*\})?\s+(\S+)", line)
        if match:
            try:
                previous[match.group(1)] = float(match.group(2))
            except ValueError:
                pass
    now = time.time()
    ok = outcome.succeeded(code)
    facts = token_facts(config.outfile) or {}
    values = [
        ("token_expiry_timestamp_seconds", "gauge",
         "Expiry time of the bearer token on disk.",
         facts.get("exp") if usable_exp(facts.get("exp")) else None),
        ("last_run_timestamp_seconds", "gauge", "Time of the last run.", now),
        ("last_success_timestamp_seconds", "gauge",
         "Time of the last successful run.",
         now if ok else previous.get(prefix + "last_success_timestamp_seconds")),
        ("last_run_exit_code", "gauge",
         "Exit code of the last run (0 is success).", code),
        ("runs_total", "counter", "Runs recorded in this file.",
         previous.get(prefix + "runs_total", 0) + 1),
        ("failures_total", "counter", "Failed runs recorded in this file.",
         previous.get(prefix + "failures_total", 0) + (0 if ok else 1)),
        ("renewals_total", "counter", "Runs that replaced the token.",
         previous.get(prefix + "renewals_total", 0)
         + (1 if outcome.renewed else 0)),
    ]
    lines = []
    label = str(config.outfile).replace("\\", "\\\\").replace(
        '"', '\\"').replace("\n", "\\n")
    for name, kind, helptext, value in values:
        if value is None or value != value or value in (float("inf"),
                                                        float("-inf")):
            continue
        value = float(value)
        lines.append("# HELP {}{} {}".format(prefix, name, helptext))
        lines.append("# TYPE {}{} {}".format(prefix, name, kind))
        lines.append("{}{}{{token_file=\"{}\"}} {}".format(
            prefix, name, label, int(value) if value.is_integer() else
            repr(value)))
    write_atomically(config.metrics_file, "\n".join(lines) + "\n", mode=0o644)


def _iso(timestamp):
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def run_hook(config):
    """``--on-change``: tell an application the token was replaced."""
    try:
        argv = shlex.split(config.on_change)
    except ValueError as exc:
        raise HookFailed("--on-change {!r} cannot be split: {}".format(
            config.on_change, exc))
    target = os.path.abspath(config.outfile)
    env = dict(os.environ, IGWN_ROBOT_GET_TOKEN_FILE=target,
               BEARER_TOKEN_FILE=target)
    log.info("running --on-change command %s", argv[0] if argv else "")
    try:
        result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                                timeout=HOOK_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise HookFailed("--on-change command {} did not finish within {}; "
                         "the new token was kept".format(
                             argv[0], format_duration(HOOK_TIMEOUT)))
    except (OSError, IndexError) as exc:
        raise HookFailed("--on-change command {!r} could not run: {}; the new "
                         "token was kept".format(config.on_change, getattr(
                             exc, "strerror", None) or exc))
    if result.returncode != 0:
        raise HookFailed("--on-change command {} exited with {}; the new "
                         "token was kept".format(argv[0], result.returncode))


# -- HTCondor ----------------------------------------------------------------------------

def condor_handoff(config):
    """``--condor``: hand the token to HTCondor's credd via
    condor_vault_storer, as igwn-robot-get does."""
    if os.environ.get("IGWN_ROBOT_GET_IMAGE"):
        raise CondorError(
            "--condor does not work in the container image (it has no "
            "HTCondor); install igwn-robot-get and HTCondor on the host and "
            "run it there")
    robot = Robot(config)
    storer = shutil.which("condor_vault_storer")
    if not storer:
        raise CondorError(
            "condor_vault_storer not found on PATH; install HTCondor's "
            "credd tools (Debian/RHEL package 'condor', which provides "
            "condor_vault_storer) or drop --condor")
    wanted = ["--credkey={}".format(robot.credkey),
              "--role={}".format(robot.role),
              "--vaultserver={}".format(config.vaultserver)]
    found = condor_param("SEC_CREDENTIAL_GETTOKEN_OPTS")
    if set(shlex.split(found or "")) != set(wanted):
        name = os.path.basename(condor_param("USER_CONFIG_FILE") or
                                "user_config")
        raise CondorError(
            "HTCondor's SEC_CREDENTIAL_GETTOKEN_OPTS is {!r}, not this run's "
            "options; put this line in {}: SEC_CREDENTIAL_GETTOKEN_OPTS = {}"
            .format(found or "", os.path.join(os.path.expanduser("~"),
                                              ".condor", name),
                    " ".join(wanted)))
    ccache_dir = tempfile.mkdtemp(prefix="igwn-robot-get-")
    try:
        ccache = config.ccache or "FILE:" + os.path.join(ccache_dir, "ccache")
        kerberos_ticket(robot, config, ccache)
        command = [storer] + (["-v"] if config.verbose else []) + [config.issuer]
        log.info("running %s", " ".join(command))
        try:
            code = subprocess.call(command, env=dict(os.environ,
                                                     KRB5CCNAME=ccache))
        except OSError as exc:
            raise CondorError("cannot run {}: {}".format(storer, exc.strerror))
        if code != 0:
            raise CondorError("{} failed with exit code {}; see its output "
                              "above".format(storer, code))
    finally:
        shutil.rmtree(ccache_dir, ignore_errors=True)


def condor_param(name):
    """One HTCondor configuration value, read with condor_config_val."""
    tool = shutil.which("condor_config_val")
    if not tool:
        return None
    try:
        out = subprocess.check_output([tool, name], stderr=subprocess.DEVNULL,
                                      universal_newlines=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip() or None


# -- one run ------------------------------------------------------------------------------

def run(config, outcome):
    """Everything between the options and the exit code, in flow order."""
    if config.show:
        return show(config)
    if config.condor:
        return condor_handoff(config)
    if token_is_fresh(config):
        return None
    group = check_output_target(config)
    robot = Robot(config)
    if config.jitter > 0:
        pause = random.uniform(0, config.jitter)
        log.info("waiting %.1fs (--jitter) before contacting Vault", pause)
        time.sleep(pause)
    if is_dev_file(config.outfile):
        token = renew(config, robot, outcome)
        write_atomically(config.outfile, token + "\n")
    else:
        with FileLock(config.outfile, config.timeout + config.kdc_timeout + 30):
            if token_is_fresh(config, after_wait=True):
                return None
            token = renew(config, robot, outcome)
            replaceable(config.outfile, "token file")
            write_atomically(config.outfile, token + "\n", config.mode, group)
    outcome.renewed = True
    log.info("stored a new token in %s (via %s); it expires in %s",
             config.outfile, outcome.how, format_duration(time_left(token) or 0),
             extra={"event": "token_renewed"})
    if config.on_change:
        run_hook(config)
    return None


def token_is_fresh(config, after_wait=False):
    """True when the token on disk has at least --minsecs left (what the
    fast path decides at the top of this file, for every case)."""
    left = stored_time_left(config.outfile, warn=not after_wait)
    report = log.debug if after_wait else log.info
    if left is None:
        report("no usable token at %s: fetching one", config.outfile)
        return False
    if left >= config.minsecs:
        log.info("%s%s", fresh_message(config.outfile, left, config.minsecs),
                 "; another run renewed it" if after_wait else "",
                 extra={"event": "token_fresh"})
        return True
    report("token %s has %s left, under --minsecs %s: renewing",
           config.outfile, format_duration(max(left, 0)), int(config.minsecs))
    return False


# -- command line: logging and main -------------------------------------------------------

_LOG_STATE = {"json": False}
_QUIET_LIBRARIES = ("requests", "urllib3", "requests_gssapi", "gssapi")


class _Formatter(logging.Formatter):
    """Every log line redacted and printable, as text or as JSON."""

    def format(self, record):
        message = printable(redact(record.getMessage()), newlines=True)
        if _LOG_STATE["json"]:
            doc = {"time": _iso(record.created), "level":
                   record.levelname.lower() if record.levelno >= 10 else
                   "trace", "event": getattr(record, "event", "log"),
                   "message": message}
            for key in ("error_class", "exit_code"):
                if hasattr(record, key):
                    doc[key] = getattr(record, key)
            return json.dumps(doc, sort_keys=True)
        if record.levelno >= logging.ERROR:
            return "{}: error: {}".format(PROG, message)
        if record.levelno >= logging.WARNING:
            return "{}: warning: {}".format(PROG, message)
        return "{}: {}".format(PROG, message)


def configure_logging(config=None):
    """Our log on stderr; the libraries' logs (which may hold a Negotiate
    header) nowhere."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    log.handlers[:] = [handler]
    log.propagate = False
    if config is None:
        level = logging.ERROR
    elif config.quiet:
        level = logging.ERROR
    else:
        level = {0: logging.WARNING, 1: logging.INFO,
                 2: logging.DEBUG}.get(config.verbose, logging.DEBUG - 5)
    log.setLevel(level)
    for name in _QUIET_LIBRARIES:
        library = logging.getLogger(name)
        library.handlers[:] = [logging.NullHandler()]
        library.propagate = False


def _on_sigterm(signum, frame):
    raise Terminated("stopped by SIGTERM; nothing was changed unless logged "
                     "above")


def main(argv=None):
    """Run the tool and return its exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    started = time.time()
    _LOG_STATE["json"] = False
    try:
        config = parse_args(argv)
    except UsageError as exc:
        configure_logging()
        log.error("%s", exc, extra={"event": "error", "error_class": exc.kind,
                                    "exit_code": exc.exit_code})
        return UsageError.exit_code
    configure_logging(config)
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        pass
    if config.check:
        return run_checks(config)
    outcome, error, code = Outcome(), None, 0
    try:
        run(config, outcome)
    except RobotGetError as exc:
        error, code = exc, exc.exit_code
    except KeyboardInterrupt:
        error = Interrupted("interrupted; no file was changed")
        code = error.exit_code
    except Exception as exc:  # a bug must still be one line
        error = RobotGetError("internal error ({}: {}); please report this "
                              "with the output of -vv".format(
                                  type(exc).__name__, exc))
        code = 1
    if error is not None:
        if _isatty(sys.stderr) and not _LOG_STATE["json"]:
            sys.stderr.write("\r\033[K")
        log.error("%s", error, extra={"event": "error", "error_class":
                                      getattr(error, "kind", "internal"),
                                      "exit_code": code})
    if config.show:  # a read-only health check records nothing
        return code
    for path, writer in ((config.status_file, lambda: write_status(
            config, code, error, outcome, started)),
            (config.metrics_file, lambda: write_metrics(config, code, outcome))):
        if path:
            try:
                writer()
            except RobotGetError as exc:
                log.warning("%s", exc)
    return code


if __name__ == "__main__":
    sys.exit(main())
