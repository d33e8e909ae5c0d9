#!/usr/bin/env python3
# Copyright (c) 2026 the igwn-robot-get authors
# SPDX-License-Identifier: MIT
"""Keep a fresh SciToken on disk for an IGWN robot, from its Kerberos keytab.

The flow of one run, top to bottom in this file:

1. options: parse the command line (a drop-in for igwn-robot-get 0.3.3);
2. local token check: decode the bearer token file by hand and stop, with no
   network at all, when it still has ``--minsecs`` left;
3. keytab: check it is a safe regular file and read the robot's principal;
4. Vault: try the cached vault token first (one request); else get a
   Kerberos ticket from the keytab (in memory), log in to Vault with it and
   read the bearer token; on a robot's first use, run the OIDC device flow
   with a human at a terminal, or say exactly that a human must;
5. writer: replace the token file atomically (0600, fsync, rename), so that
   readers never see a missing or partial file and failures keep the old one;
6. CLI: ``main()`` maps every failure to one line and one exit code.

Public names are listed in ``__all__``.  The one third-party import is
``gssapi`` (python-gssapi, which requests-gssapi also brings), made only in a
short-lived child process when a Kerberos ticket is needed; HTTP and TLS use
the standard library.  The
fresh-token path imports nothing beyond ``os``, ``sys``, ``binascii`` and
``time``.  The module runs on Python 3.6 and later.
"""

import os
import sys

__version__ = "1.0.0"


# -- the fast path ----------------------------------------------------------------
# Most runs find the token still fresh.  That answer is worked out here, before
# anything else is imported or defined, from the bare command line: only when
# every option is one this check understands, and the token's payload names
# exactly one "exp".  Anything else, or a stale token, goes on to the full run
# below, which checks again with the real parser and a real JSON decoder.

_FAST_VALUE_OPTIONS = {
    "-k", "--keytab", "--kerberos-keytab", "-c", "--ccache", "--kerberos-ccache",
    "-a", "--vaultserver", "-i", "--issuer", "--credkey", "-r", "--role",
    "-m", "--minsecs", "-o", "--outfile", "--bearertokenfile", "--audience",
    "--scopes", "--vaulttokenfile", "--cafile", "--capath", "--jitter",
    "--web-open-command", "--oidc-timeout", "--kdc-timeout", "--timeout"}
_FAST_FLAGS = {"-q", "--quiet", "--nooidc", "--no-browser"}
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


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


def default_bearer_token_file(environ=None, uid=None):
    """WLCG bearer token discovery: where the token file lives."""
    environ = os.environ if environ is None else environ
    uid = os.geteuid() if uid is None else uid
    if environ.get("BEARER_TOKEN_FILE"):
        return environ["BEARER_TOKEN_FILE"]
    if environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(environ["XDG_RUNTIME_DIR"], "bt_u{}".format(uid))
    return "/tmp/bt_u{}".format(uid)


def _fast_options(argv):
    """(outfile, minsecs, verbose) from a plain command line, else None."""
    values, verbose, positionals = {}, 0, 0
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        if arg.startswith("-v") and arg.strip("v") == "-":
            verbose += len(arg) - 1
        elif arg in _FAST_FLAGS:
            verbose = -1 if arg in ("-q", "--quiet") else verbose
        elif name in _FAST_VALUE_OPTIONS and name.startswith("--") and eq:
            values[name] = value
        elif arg in _FAST_VALUE_OPTIONS and args:
            values[arg] = args.pop(0)
        elif not arg.startswith("-") and positionals == 0:
            positionals = 1
        else:
            return None
    outfile = (values.get("-o") or values.get("--outfile")
               or values.get("--bearertokenfile"))
    if outfile is None:
        outfile = default_bearer_token_file()
    text = values.get("-m", values.get("--minsecs", "3600")).strip()
    unit = text[-1:] if text[-1:] in "smhd" else ""
    number = text[:len(text) - len(unit)]
    if not outfile or not number.isdigit():
        return None
    return outfile, int(number) * _UNITS[unit], verbose


def _fast_exp(path):
    """The token's exp, read without json or re; None when unsure."""
    import binascii
    try:
        with open(path, "rb") as handle:
            parts = handle.read(65536).strip().split(b".")
        if len(parts) != 3:
            return None
        payload = parts[1].replace(b"-", b"+").replace(b"_", b"/")
        payload = binascii.a2b_base64(payload + b"=" * (-len(payload) % 4))
    except (OSError, binascii.Error, ValueError):
        return None
    if payload.count(b'"exp"') != 1:
        return None
    before, _, after = payload.partition(b'"exp"')
    if not before.rstrip().endswith((b"{", b",")):
        return None
    after = after.lstrip()
    if not after.startswith(b":"):
        return None
    digits = after[1:].lstrip()
    end = 0
    while end < len(digits) and digits[end:end + 1].isdigit():
        end += 1
    if end == 0 or end > 15 or digits[end:end + 1].strip(b" \t\r\n")[:1] not in (
            b",", b"}", b".", b""):
        return None
    return int(digits[:end])


def fast_path(argv):
    """True when the token is fresh, said and done without the full run."""
    options = _fast_options(argv)
    if options is None:
        return False
    outfile, minsecs, verbose = options
    if outfile.startswith("/dev/"):
        return False
    exp = _fast_exp(outfile)
    if exp is None:
        return False
    import time
    left = exp - time.time()
    if left < minsecs:
        return False
    if verbose > 0:
        sys.stderr.write("igwn-robot-get: token {} is fresh: {} left (--minsecs "
                         "{})\n".format(outfile, format_duration(left), minsecs))
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

import argparse
import base64
import binascii
import errno
import fcntl
import json
import logging
import random
import re
import secrets
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import tempfile
import time
from datetime import datetime, timezone


__all__ = [
    "main",
    "RobotGetError",
    "UsageError",
    "KeytabError",
    "KerberosError",
    "MissingPackage",
    "VaultUnreachable",
    "VaultRefused",
    "NeedsHuman",
    "OutputError",
    "UnusableToken",
    "OidcFailed",
    "TokenNotFresh",
    "CondorError",
    "HookFailed",
    "decode_jwt_payload",
    "token_expiry",
    "extract_access_token",
    "write_atomically",
    "redact",
]

PROG = "igwn-robot-get"
log = logging.getLogger(PROG)

DEFAULT_VAULTSERVER = "vault.ligo.org"
DEFAULT_ISSUER = "igwn"
DEFAULT_REALM = "LIGO.ORG"
DEFAULT_MINSECS = 3600
DEFAULT_VAULTTOKENTTL = "7d"
DEFAULT_VAULTTOKENMINTTL = "24h"
DEFAULT_TIMEOUT = 60.0
DEFAULT_KDC_TIMEOUT = 15.0
DEFAULT_OIDC_TIMEOUT = 600.0
HOOK_TIMEOUT = 60.0
RETRY_STATUSES = (429, 500, 502, 503, 504)


# -- errors ------------------------------------------------------------------

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


EXIT_CODES = [
    (0, "success: the token is fresh, or was renewed"),
    (1, "internal error (a bug; please report it)"),
    (UsageError.exit_code, "usage error: a bad option or option value"),
    (KeytabError.exit_code,
     "keytab problem: unset, missing, a directory, unreadable, unsafe mode"),
    (KerberosError.exit_code,
     "Kerberos failure: KDC silent or unreachable, principal unknown, ..."),
    (VaultUnreachable.exit_code,
     "Vault unreachable: DNS, TCP, TLS or timeout, after retries"),
    (VaultRefused.exit_code, "Vault refused the login or the token read"),
    (NeedsHuman.exit_code,
     "first use needs a human: no refresh token in Vault and no terminal"),
    (OutputError.exit_code, "output not writable, or an unsafe target"),
    (UnusableToken.exit_code,
     "Vault returned an unusable token (not a JWT, no exp, expired)"),
    (OidcFailed.exit_code, "OIDC login denied, expired or timed out"),
    (TokenNotFresh.exit_code,
     "--show: token missing, unreadable or with less than --minsecs left"),
    (CondorError.exit_code, "--condor: HTCondor hand-off failed or unavailable"),
    (HookFailed.exit_code,
     "--on-change command failed (the new token was kept)"),
    (MissingPackage.exit_code,
     "the Python package gssapi, which the tool needs for Kerberos, is "
     "missing"),
    (Interrupted.exit_code, "interrupted (Ctrl-C); 143 on SIGTERM"),
]


# -- redaction ---------------------------------------------------------------

_SECRETS = set()
_SECRET_PATTERNS = re.compile(
    r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"   # JWTs
    r"|\bhv[sbr]\.[A-Za-z0-9_-]{8,}"                        # vault tokens
    r"|\bs\.[A-Za-z0-9]{20,}"                               # old vault tokens
    r"|(?<=Negotiate )[A-Za-z0-9+/=]{8,}"                   # Kerberos
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


# -- durations and options ---------------------------------------------------

def parse_duration(text, what="duration"):
    """Turn ``90``, ``90s``, ``15m``, ``24h`` or ``7d`` into seconds."""
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", str(text))
    if not match:
        raise UsageError(
            "{}: {!r} is not a number optionally followed by s, m, h or d"
            .format(what, text))
    return float(match.group(1)) * _UNITS[match.group(2)]


def format_principal(principal, realm=DEFAULT_REALM):
    """Add the default realm to a principal that has none."""
    return principal if "@" in principal else principal + "@" + realm


def default_credkey(principal):
    """igwn-robot-get's credkey: the principal without its realm."""
    return principal.split("@", 1)[0]


def default_role(principal):
    """igwn-robot-get's role: the principal up to the first ``/``."""
    return principal.split("/", 1)[0]


def default_vault_token_file(uid=None):
    """htgettoken's vault token cache."""
    uid = os.geteuid() if uid is None else uid
    return "/tmp/vt_u{}".format(uid)


def vault_url(server):
    """A bare host becomes ``https://host:8200``."""
    url = server if "://" in server else "https://" + server
    scheme, _, rest = url.partition("://")
    if scheme.lower() != "https":
        raise UsageError("--vaultserver {!r}: Vault is reached over https only"
                         .format(server))
    hostport = rest.split("/", 1)[0]
    if not re.search(r":\d+$", hostport) or hostport.endswith("]"):
        hostport += ":8200"
    if not hostport.split(":")[0] and not hostport.startswith("["):
        raise UsageError("--vaultserver {!r} has no host name".format(server))
    return scheme + "://" + hostport


def url_host(url):
    """The host of an https://host:port URL, without brackets."""
    hostport = url.split("://", 1)[1]
    if hostport.startswith("["):
        return hostport[1:hostport.index("]")]
    return hostport.rsplit(":", 1)[0]


def url_port(url):
    return int(url.rsplit(":", 1)[1])


def split_list(values):
    """``--scopes a,b --scopes c`` -> ``['a', 'b', 'c']``."""
    out = []
    for value in values or ():
        out.extend(v for v in re.split(r"[,\s]+", value) if v)
    return out


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


# -- local token check -------------------------------------------------------

def decode_jwt_payload(token):
    """Decode a JWT's payload by hand (no signature check) into a dict."""
    if not isinstance(token, str):
        raise UnusableToken("token is not text")
    parts = token.strip().split(".")
    if len(parts) != 3 or not parts[1]:
        raise UnusableToken(
            "not a JWT (expected header.payload.signature, found {} part{})"
            .format(len(parts), "" if len(parts) == 1 else "s"))
    payload = parts[1]
    if not re.match(r"^[A-Za-z0-9_-]+$", payload):
        raise UnusableToken("not a JWT (payload is not base64url)")
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise UnusableToken("not a JWT (payload is not base64url JSON)")
    if not isinstance(claims, dict):
        raise UnusableToken("not a JWT (payload is not a JSON object)")
    return claims


def token_expiry(token):
    """The ``exp`` claim of a JWT, as a number of seconds since the epoch."""
    exp = decode_jwt_payload(token).get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise UnusableToken("token has no numeric 'exp' claim")
    if exp != exp or exp in (float("inf"), float("-inf")):
        raise UnusableToken("token has no usable 'exp' claim")
    return exp


def read_token_file(path):
    """The token text from a file (whitespace trimmed), or None if absent."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(1 << 20)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.debug("cannot read %s: %s", path, exc.strerror)
        return None
    try:
        return data.decode("ascii").strip() or None
    except UnicodeDecodeError:
        return None


def time_left(token, now=None):
    """Seconds until the token expires; None when it cannot be decoded."""
    try:
        return token_expiry(token) - (time.time() if now is None else now)
    except UnusableToken:
        return None


def local_time_left(path):
    """Time left of the token stored at ``path`` (None if absent/bad)."""
    token = read_token_file(path)
    return None if token is None else time_left(token)


# -- keytab ------------------------------------------------------------------

def check_keytab(path):
    """Refuse a keytab that is missing, not a file, unreadable or unsafe.

    Safe: nobody else may read or write it, and its group may not write it.
    Group-read is accepted only in the case Kubernetes creates for a Secret
    with an ``fsGroup``: the file belongs to another user (typically root)
    and its group is one of ours.
    """
    if not path:
        raise KeytabError(
            "no keytab: KRB5_KTNAME is not set and -k/--keytab was not given; "
            "pass -k /path/to/robot.keytab or set KRB5_KTNAME")
    path = keytab_path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise KeytabError(
            "keytab {} not found; check the path (in a container: the -v "
            "mount and KRB5_KTNAME)".format(path))
    except OSError as exc:
        raise KeytabError("keytab {}: {}; check the path and its parent "
                          "directories' permissions".format(path, exc.strerror))
    if stat.S_ISDIR(info.st_mode):
        try:
            inside = sorted(n for n in os.listdir(path) if not n.startswith("."))
        except OSError:
            inside = []
        if inside:
            raise KeytabError(
                "keytab {} is a directory holding {}; point KRB5_KTNAME (or -k) "
                "at the keytab file inside it, e.g. {}".format(
                    path, ", ".join(inside[:5]), os.path.join(path, inside[0])))
        raise KeytabError(
            "keytab {} is a directory: the host path given to docker -v did "
            "not exist, so docker created an empty directory; pass the keytab "
            "file".format(path))
    if not stat.S_ISREG(info.st_mode):
        raise KeytabError("keytab {} is not a regular file; pass the keytab "
                          "file".format(path))
    mode = stat.S_IMODE(info.st_mode)
    describe = "mode {:04o}, owner {}:{}, we are {}:{}".format(
        mode, info.st_uid, info.st_gid, os.geteuid(), os.getegid())
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise KeytabError(
            "keytab {} is readable or writable by others ({}); run "
            "chmod 600 {}".format(path, describe, path))
    if mode & stat.S_IWGRP:
        raise KeytabError(
            "keytab {} is writable by its group ({}); run chmod 600 {}"
            .format(path, describe, path))
    if mode & stat.S_IRGRP:
        ours = info.st_gid in set(os.getgroups()) | {os.getegid()}
        if info.st_uid == os.geteuid() or not ours:
            raise KeytabError(
                "keytab {} is readable by its group ({}); run chmod 600 {} "
                "(group-read is accepted only for a Kubernetes Secret with "
                "fsGroup: owned by root, group one of ours)"
                .format(path, describe, path))
        log.info("keytab %s is group-readable (%s): accepted as a Kubernetes "
                 "Secret mounted with fsGroup", path, describe)
    if not os.access(path, os.R_OK):
        raise KeytabError(
            "keytab {} is not readable by us ({}); make it readable by this "
            "user (chown it, or run with --user matching its owner)"
            .format(path, describe))
    return path


def keytab_path(name):
    """Strip the FILE:/WRFILE: prefix of a keytab name."""
    for prefix in ("FILE:", "WRFILE:"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def keytab_principals(path):
    """The principals in an MIT keytab file, in file order (parsed by hand)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(1 << 20)
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
            principals.append(_keytab_entry_principal(entry, endian, data[1]))
    except (struct.error, UnicodeDecodeError, IndexError):
        raise KeytabError("keytab {} is corrupt; export it again".format(path))
    seen = []
    for principal in principals:
        if principal not in seen:
            seen.append(principal)
    if not seen:
        raise KeytabError("keytab {} holds no keys; export the robot's keys "
                          "into it".format(path))
    return seen


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


# -- output safety and atomic writes ------------------------------------------

def is_dev_file(path):
    return path.startswith("/dev/std") or path.startswith("/dev/fd/")


def check_output_target(path):
    """Fail fast, before any network, when the token cannot be written."""
    if is_dev_file(path):
        return
    directory = os.path.dirname(os.path.abspath(path))
    try:
        dinfo = os.stat(directory)
    except OSError as exc:
        raise OutputError(
            "cannot write {}: directory {} {}; create it or choose another "
            "--outfile".format(path, directory, _oserror_text(exc)))
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
    check_planted(path, dinfo)


def check_planted(path, dinfo=None):
    """Refuse a symlink or foreign file planted in a sticky shared directory.

    In a directory such as /tmp anyone can create our file name first; we
    never write through such a file, and say so.  Elsewhere a symlink at the
    target is simply replaced by the atomic rename, never followed.
    """
    if dinfo is None:
        dinfo = os.stat(os.path.dirname(os.path.abspath(path)))
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError("cannot inspect {}: {}".format(path, exc.strerror))
    shared = dinfo.st_mode & stat.S_ISVTX and dinfo.st_mode & stat.S_IWOTH
    if not shared:
        return
    if stat.S_ISLNK(info.st_mode):
        raise OutputError(
            "refusing to write {}: it is a symbolic link in the shared "
            "directory {}, which someone else may have planted; remove it "
            "or choose another --outfile".format(path, os.path.dirname(path)))
    if info.st_uid != os.geteuid():
        raise OutputError(
            "refusing to write {}: it belongs to uid {} in the shared "
            "directory {}, not to us (uid {}); remove it or choose another "
            "--outfile".format(path, info.st_uid, os.path.dirname(path),
                               os.geteuid()))


def _oserror_text(exc):
    if exc.errno == errno.ENOENT:
        return "does not exist"
    return "is not usable: {}".format(exc.strerror)


def write_atomically(path, data, mode=0o600):
    """Replace ``path`` with ``data`` so readers see the old or the new file.

    A temporary file is created exclusively in the same directory with
    ``mode`` (whatever the umask), written, fsynced and renamed over the
    target.  The old file is never deleted first; on any failure the
    temporary file is removed and the target is left as it was.
    """
    if is_dev_file(path):
        try:
            with open(path, "w") as handle:
                handle.write(data)
        except OSError as exc:
            raise OutputError("cannot write {}: {}".format(path, exc.strerror))
        return
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + base + ".", suffix=".tmp",
                                   dir=directory)
        try:
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
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            self.fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise OutputError("cannot open lock file {}: {}; remove it if it "
                              "is not ours".format(self.path, exc.strerror))
        info = os.fstat(self.fd)
        if info.st_uid != os.geteuid():
            os.close(self.fd)
            raise OutputError(
                "lock file {} belongs to uid {}, not to us; remove it".format(
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


def read_private_file(path, what):
    """Read a small credential file we own; None if absent or not ours."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.info("ignoring %s %s: %s", what, path, exc.strerror)
        return None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or info.st_mode & 0o077:
            log.warning("ignoring %s %s: it must be ours and mode 0600 "
                        "(owner %d, mode %04o)", what, path, info.st_uid,
                        stat.S_IMODE(info.st_mode))
            return None
        data = os.read(fd, 65536).decode("utf-8", "replace").strip()
        return data or None
    finally:
        os.close(fd)


# -- Kerberos ------------------------------------------------------------------

def kdc_names(realm, environ=None):
    """The KDCs krb5.conf lists for ``realm`` (for error messages only)."""
    environ = os.environ if environ is None else environ
    files = (environ.get("KRB5_CONFIG") or "/etc/krb5.conf").split(":")
    kdcs = []
    for name in files:
        try:
            with open(name) as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError):
            continue
        block = re.search(r"^\s*" + re.escape(realm) + r"\s*=\s*\{(.*?)\}",
                          text, re.M | re.S)
        if block:
            kdcs.extend(re.findall(r"^\s*kdc\s*=\s*(\S+)", block.group(1),
                                   re.M))
    return kdcs


def _krb5_config_without_rdns(tmpdir):
    """Prepend ``rdns = false`` to the Kerberos configuration, as htgettoken
    does: Vault is reached through DNS aliases."""
    path = os.path.join(tmpdir, "krb5-rdns.conf")
    with open(path, "w") as handle:
        handle.write("[libdefaults]\n    rdns = false\n")
    current = os.environ.get("KRB5_CONFIG") or "/etc/krb5.conf"
    return path + ":" + current


def kerberos_negotiate(principal, keytab, ccache, service_host, timeout):
    """Get a ticket from the keytab and return an ``Authorization`` value.

    The GSS-API work runs in a child process (this same file, loaded there):
    a KDC that never answers is dealt with by ending the child after
    ``timeout``; the Kerberos configuration (``rdns = false``) is set in the
    child's environment only; and this process never holds the Kerberos
    libraries and the TLS stack at once, which halves its peak memory.  The
    ticket lives in the child's memory credential cache unless ``ccache`` is
    given, so nothing Kerberos-related is left on disk.
    """
    realm = principal.rsplit("@", 1)[-1]
    tmpdir = tempfile.mkdtemp(prefix="igwn-robot-get-")
    env = dict(os.environ, KRB5_CONFIG=_krb5_config_without_rdns(tmpdir))
    request = json.dumps([principal, keytab, ccache or "MEMORY:igwn-robot-get",
                          service_host])
    command = [sys.executable or "python3", "-c", _KERBEROS_CHILD,
               os.path.abspath(__file__)]
    try:
        child = subprocess.run(command, input=request, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               universal_newlines=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        kdcs = ", ".join(kdc_names(realm)) or "found through DNS"
        raise KerberosError(
            "no answer from the KDC for realm {} ({}) within {}; check that "
            "the KDC is up and that its port (88 unless krb5.conf says "
            "otherwise) is reachable over UDP and TCP from here".format(
                realm, kdcs, format_duration(timeout)))
    except OSError as exc:
        raise KerberosError("cannot start the Kerberos step ({}): {}".format(
            command[0], exc.strerror))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    try:
        answer = json.loads(child.stdout)
    except ValueError:
        lines = child.stderr.strip().splitlines() or ["no output"]
        raise KerberosError("the Kerberos step failed (exit {}): {}".format(
            child.returncode, redact(lines[-1])))
    if "missing" in answer:
        raise MissingPackage(
            "the Python package gssapi is missing ({}); install it: "
            "'python3 -m pip install gssapi', or the python3-gssapi package "
            "of your distribution".format(answer["missing"]))
    if "error" in answer:
        raise _kerberos_error(answer["error"], principal, keytab, realm)
    return remember_secret("Negotiate " + answer["token"])


# Loads this file as a module in the child (whatever the file is called) and
# runs kerberos_child(); the request comes on stdin, the answer goes to stdout.
_KERBEROS_CHILD = (
    "import sys; from importlib import machinery, util; "
    "loader = machinery.SourceFileLoader('igwn_robot_get', sys.argv[1]); "
    "module = util.module_from_spec(util.spec_from_loader(loader.name, loader)); "
    "loader.exec_module(module); module.kerberos_child()")


def kerberos_child():
    """In the child: the first token of a Kerberos context for
    ``host@<vault host>``, as htgettoken sends it (raw krb5; Vault also takes
    SPNEGO), or the reason there is none, as JSON on stdout."""
    principal, keytab, ccache, service_host = json.loads(sys.stdin.read())
    try:
        import gssapi
    except ImportError as exc:
        answer = {"missing": str(exc)}
    else:
        try:
            store = {"client_keytab": keytab, "ccache": ccache}
            name = gssapi.Name(principal, gssapi.NameType.kerberos_principal)
            creds = gssapi.Credentials(name=name, usage="initiate", store=store)
            target = gssapi.Name("host@" + service_host,
                                 gssapi.NameType.hostbased_service)
            context = gssapi.SecurityContext(
                name=target, creds=creds, usage="initiate",
                mech=gssapi.OID.from_int_seq("1.2.840.113554.1.2.2"))
            answer = {"token": base64.b64encode(context.step()).decode("ascii")}
        except Exception as exc:  # every GSS failure is reported, not raised
            answer = {"error": _gss_text(exc)}
    sys.stdout.write(json.dumps(answer))


def _kerberos_error(text, principal, keytab, realm):
    """A KerberosError whose fix matches the GSS-API message ``text``."""
    low = text.lower()
    if "server not found" in low or ("not found in kerberos database" in low
                                     and "host/" in low):
        fix = ("the Vault server's host principal is unknown to the KDC; check "
               "--vaultserver (the Kerberos service is host@<vault host>)")
    elif "not found in kerberos database" in low or "client not found" in low:
        fix = ("the KDC does not know {}; check the principal and the "
               "realm".format(principal))
    elif "cannot contact any kdc" in low or "cannot find kdc" in low:
        fix = ("cannot reach a KDC for realm {} ({}); check krb5.conf "
               "(KRB5_CONFIG) and the network".format(
                   realm, ", ".join(kdc_names(realm)) or "none configured"))
    elif "clock skew" in low:
        fix = "this host's clock is wrong; synchronise it (NTP)"
    elif ("no key table entry" in low or "key table" in low
          or "preauthentication failed" in low or "decrypt integrity" in low):
        fix = ("the keytab {} has no valid key for {}; export a fresh keytab "
               "or pass the principal it holds".format(keytab, principal))
    elif "expired" in low:
        fix = "the password or keys of {} expired; renew them".format(principal)
    else:
        fix = "check the keytab, the principal and krb5.conf"
    return KerberosError("Kerberos failed for {}: {}; {}".format(
        principal, text, fix))


def _gss_text(exc):
    gen = getattr(exc, "gen_message", None)
    if gen is not None:
        try:
            return " ".join(str(gen()).split())
        except Exception:  # noqa: S110 - the message is best effort
            pass
    return " ".join(str(exc).split()) or type(exc).__name__


# -- Vault client --------------------------------------------------------------

class Response(object):
    """What the Vault client hands back: status, parsed JSON (or None)."""

    def __init__(self, status, body, headers):
        self.status = status
        self.body = body
        self.headers = headers
        try:
            self.json = json.loads(body.decode("utf-8")) if body else None
        except (ValueError, UnicodeDecodeError, RecursionError):
            self.json = None

    def errors(self):
        """Vault's ``errors`` list (and ``warnings``), as one string."""
        data = self.json if isinstance(self.json, dict) else {}
        items = []
        for key in ("errors", "warnings"):
            value = data.get(key)
            if isinstance(value, list):
                items.extend(str(v) for v in value if v)
        if not items and self.body and self.json is None:
            items.append(self.body[:200].decode("utf-8", "replace"))
        return redact("; ".join(" ".join(i.split()) for i in items))


class VaultClient(object):
    """The one place that speaks HTTP: one kept-alive TLS connection,
    retries within a time budget, and redacted logs.

    It uses the standard library's http.client and ssl: requests would add
    about 200 ms of import time and 27 MiB of memory to every renewal for
    nothing this protocol needs.  As with urllib3, a name that resolves to
    several addresses is tried address by address when connecting.
    """

    def __init__(self, url, cafile, capath, deadline):
        self.url = url
        self.host = url_host(url)
        self.port = url_port(url)
        self.cafile, self.capath = cafile, capath
        self.deadline = deadline
        self.context = None
        self.conn = None
        self.requests_made = 0

    def _connection(self, connect_timeout):
        import http.client
        import ssl
        if self.context is None:
            try:
                self.context = ssl.create_default_context(
                    cafile=self.cafile, capath=self.capath)
            except (OSError, ssl.SSLError) as exc:
                raise UsageError("cannot load CA certificates ({} {}): {}; "
                                 "check --cafile/--capath".format(
                                     self.cafile, self.capath, exc))
        if self.conn is None:
            self.conn = http.client.HTTPSConnection(
                self.host, self.port, context=self.context,
                timeout=connect_timeout)
        if self.conn.sock is None:
            self.conn.timeout = connect_timeout
            self.conn.connect()
        return self.conn

    def request(self, method, path, token=None, body=None, params=None,
                headers=None, what="request"):
        """Send one API call, retrying transient faults within the budget."""
        import http.client
        import socket
        import ssl
        from urllib.parse import urlencode
        send = dict(headers or {})
        if token:
            send["X-Vault-Token"] = token
        data = json.dumps(body).encode("utf-8") if body is not None else None
        target = path + ("?" + urlencode(params) if params else "")
        attempt = 0
        while True:
            attempt += 1
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise VaultUnreachable(
                    "gave up on {} at {} after {} attempt(s): the --timeout "
                    "budget ran out; check the network, or raise --timeout"
                    .format(what, self.url, attempt - 1))
            started = time.monotonic()
            log.debug("HTTP %s %s%s (attempt %d)", method, self.url, target,
                      attempt)
            _log_http_headers(">", send)
            try:
                self.requests_made += 1
                conn = self._connection(min(5.0, remaining))
                conn.sock.settimeout(min(30.0, max(0.1, remaining)))
                conn.request(method, target, body=data, headers=send)
                resp = conn.getresponse()
                result = Response(resp.status, resp.read(), resp.msg)
                if resp.will_close:
                    self.close()
            except (ssl.CertificateError, ssl.SSLError) as exc:
                self.close()
                raise VaultUnreachable(
                    "TLS handshake with {} failed: {}; check --cafile/--capath "
                    "(the CA that signed Vault's certificate) and the host name"
                    .format(self.url, _short_exc(exc)))
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if isinstance(exc, socket.gaierror):
                    self.resolve()
                reason = self._describe_connect_failure(exc)
                if not self._pause(attempt, None, reason):
                    raise VaultUnreachable(
                        "cannot reach Vault at {} ({}) after {} attempt(s); "
                        "check the server name, the network and that outbound "
                        "HTTPS to port {} is allowed (in a container: its "
                        "network)".format(self.url, reason, attempt, self.port))
                continue
            log.debug("HTTP %d from %s %s in %.3fs", result.status, method,
                      path, time.monotonic() - started)
            _log_http_headers("<", result.headers.items())
            if log.isEnabledFor(logging.DEBUG - 5):
                log.log(logging.DEBUG - 5, "body: %s", redact_body(result))
            if result.status in RETRY_STATUSES:
                reason = "HTTP {} {}".format(result.status, result.errors())
                if self._pause(attempt, result.headers.get("Retry-After"),
                               reason):
                    continue
                raise VaultRefused(
                    "Vault at {} kept answering {} to the {} ({} attempts); "
                    "Vault may be sealed, overloaded or failing: try again "
                    "later or tell its operators".format(
                        self.url, reason.strip(), what, attempt))
            return result

    def _pause(self, attempt, retry_after, reason):
        """Sleep before the next attempt; False when the budget is spent."""
        delay = random.uniform(0, min(8.0, 0.5 * 2 ** (attempt - 1)))
        if retry_after:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        remaining = self.deadline - time.monotonic()
        if delay >= remaining - 0.5:
            return False
        log.info("Vault %s: %s; retrying in %.1fs", self.url, reason, delay,
                 extra={"event": "retry"})
        time.sleep(delay)
        return True

    def resolve(self):
        """Fail early, and say so, when the Vault host name does not resolve
        (before Kerberos asks the KDC for a ticket to an unknown host)."""
        import socket
        while True:
            try:
                socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)
                return
            except socket.gaierror as exc:
                if exc.errno == socket.EAI_AGAIN and self.deadline - \
                        time.monotonic() > 2:
                    log.info("DNS lookup of %s failed for now (%s); retrying",
                             self.host, exc.strerror)
                    time.sleep(1)
                    continue
                raise VaultUnreachable(
                    "cannot reach Vault at {} (DNS: cannot resolve {}: {}); "
                    "check --vaultserver and this host's (or container's) DNS"
                    .format(self.url, self.host, exc.strerror))

    def _describe_connect_failure(self, exc):
        import socket
        text = _short_exc(exc)
        if isinstance(exc, socket.timeout) or "timed out" in text.lower():
            return "timeout: no answer within the time allowed"
        return "TCP: {}".format(text)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


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


def _short_exc(exc):
    """The reason of a connection or TLS failure, one line."""
    reason = getattr(exc, "verify_message", None) or getattr(
        exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
    text = " ".join(str(reason).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.errno and "[Errno" not in text:
        text = "[Errno {}] {}".format(exc.errno, text)
    return redact(text)[:300]


def _log_http_headers(direction, headers):
    if not log.isEnabledFor(logging.DEBUG - 5):
        return
    for key, value in sorted(dict(headers).items(), key=lambda kv: kv[0].lower()):
        if key.lower() in ("x-vault-token", "authorization", "cookie",
                           "set-cookie"):
            value = "<redacted>"
        log.log(logging.DEBUG - 5, "%s %s: %s", direction, key, redact(value))


# -- Vault protocol -------------------------------------------------------------

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
    exp = token_expiry(token)
    left = exp - (time.time() if now is None else now)
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
    """The htvault-config protocol on top of a VaultClient."""

    def __init__(self, client, opts):
        self.client = client
        self.opts = opts
        self.issuer = opts.issuer
        self.role = opts.role
        self.credkey = opts.credkey

    @property
    def secret_path(self):
        kind = "sts" if (self.opts.scopes or self.opts.audience) else "creds"
        return "/v1/secret/oauth/{}/{}/{}:{}".format(
            kind, self.issuer, self.credkey, self.role)

    def read_bearer(self, vault_token):
        """GET creds/sts with ``minimum_seconds``; the access token."""
        params = {"minimum_seconds": int(self.opts.minsecs)}
        if self.opts.scopes:
            params["scopes"] = ",".join(self.opts.scopes)
        if self.opts.audience:
            params["audiences"] = ",".join(self.opts.audience)
        resp = self.client.request("GET", self.secret_path, token=vault_token,
                                   params=params, what="bearer token read")
        if resp.status == 200:
            return extract_access_token(resp.body)
        errors = resp.errors()
        low = errors.lower()
        if resp.status == 403:
            raise TokenRejected(errors or "permission denied")
        if resp.status == 404:
            raise NoRefreshToken(
                "Vault holds no refresh token for {}:{} yet (first use)"
                .format(self.credkey, self.role))
        if resp.status == 400 and ("invalid_grant" in low
                                   or "refresh failed" in low):
            raise NoRefreshToken(
                "the refresh token Vault holds for {}:{} was rejected by the "
                "issuer ({}): it expired or was revoked".format(
                    self.credkey, self.role, errors))
        if resp.status == 400 and "token expired" in low:
            raise VaultRefused(
                "Vault cannot give a token with {} left ({}); lower --minsecs "
                "below the issuer's token lifetime".format(
                    format_duration(self.opts.minsecs), errors))
        raise VaultRefused("Vault refused the bearer token read at {} (HTTP "
                           "{}: {}); check --issuer, --role and --credkey"
                           .format(self.secret_path, resp.status,
                                   errors or "no reason given"))

    def kerberos_login(self, negotiate):
        path = "/v1/auth/kerberos-{}_{}/login".format(self.issuer, self.role)
        resp = self.client.request(
            "POST", path, what="Kerberos login",
            headers={"Authorization": negotiate,
                     "Content-Type": "application/x-www-form-urlencoded"})
        if resp.status != 200:
            raise VaultRefused(
                "Vault refused the Kerberos login at {} (HTTP {}: {}); check "
                "that --issuer {} and --role {} are right and that the robot "
                "is registered for them".format(
                    path, resp.status, resp.errors() or "no reason given",
                    self.issuer, self.role))
        return _auth_field(resp, "Kerberos login")

    def exchange(self, auth, ttl):
        """Swap a login token for one of ``ttl`` seconds (section 3.4)."""
        policies = [p for p in auth.get("policies") or []
                    if isinstance(p, str)]
        ssh = [p for p in policies if p.startswith("sshregister")]
        duration = auth.get("lease_duration")
        if (isinstance(duration, int) and 0 < duration <= ttl and not ssh):
            return auth["client_token"], duration
        body = {"ttl": "{}s".format(int(ttl)), "renewable": "false"}
        if ssh:
            body["policies"] = [p for p in policies if p not in ssh]
        resp = self.client.request("POST", "/v1/auth/token/create",
                                   token=auth["client_token"], body=body,
                                   what="vault token exchange")
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
        body = {"role": self.role, "client_nonce": nonce,
                "redirect_uri": "{}/v1/auth/oidc-{}/oidc/callback".format(
                    self.client.url, self.issuer)}
        resp = self.client.request("POST", path, body=body,
                                   what="OIDC login start")
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
        resp = self.client.request("POST", path,
                                   body={"state": state, "client_nonce": nonce},
                                   what="OIDC poll")
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
            self.issuer, self.credkey, self.role)
        resp = self.client.request(
            "POST", path, token=vault_token, what="refresh token store",
            body={"server": self.issuer, "refresh_token": refresh_token})
        if resp.status not in (200, 204):
            raise VaultRefused(
                "Vault refused to store the refresh token at {} (HTTP {}: "
                "{}); the login's identity may not own credkey {}".format(
                    path, resp.status, resp.errors() or "no reason given",
                    self.credkey))


# -- the run -------------------------------------------------------------------

class Outcome(object):
    """What a run did, for logs, the status file, metrics and hooks."""

    def __init__(self):
        self.renewed = False
        self.how = None

    def succeeded(self, code):
        """The token is good: the run exited 0, or renewed it and only the
        --on-change command failed."""
        return code == 0 or (code == HookFailed.exit_code and self.renewed)


def interactive():
    """A human may answer: a terminal on stdin, stdout or stderr."""
    return any(_isatty(stream) for stream in (sys.stdin, sys.stdout, sys.stderr))


def resolve_identity(opts):
    """Principal, credkey and role, as igwn-robot-get derives them."""
    if opts.principal:
        principal = format_principal(opts.principal)
    else:
        principals = keytab_principals(opts.keytab)
        principal = principals[0]
        if len(principals) > 1:
            log.info("keytab %s holds %d principals; using the first, %s "
                     "(pass the principal to choose)", opts.keytab,
                     len(principals), principal)
    opts.principal = principal
    opts.credkey = opts.credkey or default_credkey(principal)
    opts.role = opts.role or default_role(principal)
    log.debug("principal %s, credkey %s, role %s, issuer %s", principal,
              opts.credkey, opts.role, opts.issuer)


def fetch(opts, outcome):
    """Renew the bearer token: the network part of a run."""
    deadline = time.monotonic() + opts.timeout
    cafile, capath = ca_locations(opts.cafile, opts.capath)
    log.debug("trusting CA file %s and CA directory %s", cafile, capath)
    client = VaultClient(opts.vaulturl, cafile, capath, deadline)
    vault = Vault(client, opts)
    try:
        token = _fetch_with(vault, opts, outcome)
    finally:
        client.close()
        log.debug("%d HTTP request(s) to Vault", client.requests_made)
    return token


def _fetch_with(vault, opts, outcome):
    cached = cached_vault_token(opts)
    if cached:
        try:
            token = vault.read_bearer(cached)
            outcome.how = "cached vault token"
            return token
        except TokenRejected as exc:
            log.info("cached vault token refused (%s); logging in with "
                     "Kerberos", exc)
        except NoRefreshToken as exc:
            return first_use(vault, opts, outcome, exc.reason)
    vault.client.resolve()
    negotiate = kerberos_negotiate(opts.principal, opts.keytab, opts.ccache,
                                   url_host(opts.vaulturl), opts.kdc_timeout)
    log.info("got a Kerberos ticket for %s; logging in to %s", opts.principal,
             opts.vaulturl)
    auth = vault.kerberos_login(negotiate)
    vault_token, lifetime = auth["client_token"], None
    if opts.vaulttokenfile:
        vault_token, lifetime = vault.exchange(auth, opts.vaulttokenttl)
    try:
        token = vault.read_bearer(vault_token)
    except TokenRejected as exc:
        raise VaultRefused(
            "Vault refused the token read for {}:{} right after the Kerberos "
            "login ({}); check --credkey and --role for this robot".format(
                opts.credkey, opts.role, exc))
    except NoRefreshToken as exc:
        return first_use(vault, opts, outcome, exc.reason)
    save_vault_token(opts, vault_token, lifetime)
    outcome.how = "Kerberos login"
    return token


def cached_vault_token(opts):
    """The cached vault token if it exists, is ours, and is young enough.

    Its remaining life is estimated from the file's age and the TTL we ask
    for, which spares the lookup-self request htgettoken makes; a token that
    turns out to be dead costs one refused read and we log in again.
    """
    path = opts.vaulttokenfile
    if not path:
        return None
    token = read_private_file(path, "vault token file")
    if not token:
        return None
    remember_secret(token)
    try:
        age = time.time() - os.stat(path).st_mtime
    except OSError:
        return None
    left = opts.vaulttokenttl - age
    if left < opts.vaulttokenminttl:
        log.info("cached vault token %s has about %s left, under "
                 "--vaulttokenminttl; logging in again", path,
                 format_duration(left))
        return None
    log.debug("using cached vault token %s (about %s left)", path,
              format_duration(left))
    return token


def save_vault_token(opts, vault_token, lifetime):
    """Cache the vault token for the next run; a failure here costs only a
    Kerberos login next time, so it is a warning, not an error.

    The file's modification time is set to the token's expiry minus
    --vaulttokenttl, so that cached_vault_token() estimates its life right
    even when Vault granted less than we asked for.
    """
    if not opts.vaulttokenfile:
        return
    try:
        check_planted(opts.vaulttokenfile)
        write_atomically(opts.vaulttokenfile, vault_token + "\n")
        if lifetime and lifetime < opts.vaulttokenttl:
            stamp = time.time() + lifetime - opts.vaulttokenttl
            os.utime(opts.vaulttokenfile, (stamp, stamp))
        log.debug("stored the vault token in %s", opts.vaulttokenfile)
    except (OSError, OutputError) as exc:
        log.warning("not caching the vault token: %s", exc)


def needs_human_message(opts, reason):
    image = os.environ.get("IGWN_ROBOT_GET_IMAGE")
    args = [a for a in opts.argv if a not in ("-q", "--quiet", "--nooidc")]
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
    why = "OIDC was disabled by --nooidc" if opts.nooidc else \
        "there is no terminal to log in from"
    return ("{}; {}: a human must run this once from an interactive terminal "
            "to log in through a web browser, then later runs are unattended: "
            "{}".format(reason, why, command))


def first_use(vault, opts, outcome, reason):
    """No refresh token in Vault: the OIDC device flow, with a human."""
    if opts.nooidc or not interactive():
        raise NeedsHuman(needs_human_message(opts, reason))
    log.warning("%s: starting the OIDC login", reason)
    auth = device_flow(vault, opts)
    refresh = (auth.get("metadata") or {}).get("oauth2_refresh_token")
    credkey = (auth.get("metadata") or {}).get("credkey")
    if not refresh:
        raise OidcFailed("the OIDC login returned no refresh token; check "
                         "that the Vault role is set up for robots")
    remember_secret(refresh)
    vault_token, lifetime = auth["client_token"], None
    if opts.vaulttokenfile:
        vault_token, lifetime = vault.exchange(auth, opts.vaulttokenttl)
    vault.store_refresh_token(vault_token, refresh)
    if credkey and not opts.credkey_given:
        save_credkey(opts, credkey)
    token = vault.read_bearer(vault_token)
    save_vault_token(opts, vault_token, lifetime)
    log.warning("OIDC login complete: Vault now holds a refresh token for "
                "%s:%s; later runs will be unattended", opts.credkey,
                opts.role)
    outcome.how = "OIDC login"
    return token


def save_credkey(opts, credkey):
    """Keep htgettoken's credkey file in step, so both tools agree."""
    home = os.environ.get("HOME") or os.path.expanduser("~")
    path = os.path.join(home, ".config", "htgettoken",
                        "credkey-{}-{}".format(opts.issuer, opts.role))
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_atomically(path, credkey + "\n")
        log.info("saved credkey %s in %s", credkey, path)
    except (OSError, OutputError) as exc:
        log.warning("could not save the credkey in %s: %s", path, exc)


def device_flow(vault, opts):
    """Sections 3.5 and 3.6: show URL and code, open a browser, poll."""
    nonce = secrets.token_urlsafe(24)
    data = vault.oidc_start(nonce)
    url, code, state = data.get("auth_url"), data.get("user_code"), \
        data.get("state")
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
              "    " + str(url), ""]
    if code:
        banner.append("and enter the code:  {}".format(code))
        banner.append("")
    banner.append("=" * 72)
    say_block(banner, event="oidc_prompt")
    open_browser(opts, url)
    status = StatusLine(opts.oidc_timeout)
    try:
        while True:
            if status.left() <= 0:
                raise OidcFailed(
                    "the OIDC login was not completed within {}; run again "
                    "and complete it in time (--oidc-timeout)".format(
                        format_duration(opts.oidc_timeout)))
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


def open_browser(opts, url):
    """Open the URL only where a graphical browser can work."""
    if opts.no_browser or not url:
        return
    command = opts.web_open_command
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
        self.tty = _isatty(sys.stderr) and not _json_logs()
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
    if _json_logs():
        log.warning("%s", "\n".join(lines).strip("=\n "),
                    extra={"event": event})
        return
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


# -- HTCondor ------------------------------------------------------------------

def condor_handoff(opts):
    """``--condor``: hand the token to HTCondor's credd via
    condor_vault_storer, as igwn-robot-get does."""
    refuse_condor_in_image()
    storer = shutil.which("condor_vault_storer")
    if not storer:
        raise CondorError(
            "condor_vault_storer not found on PATH; install HTCondor's "
            "credd tools (Debian/RHEL package 'condor', which provides "
            "condor_vault_storer) or drop --condor")
    wanted = ["--credkey={}".format(opts.credkey),
              "--role={}".format(opts.role),
              "--vaultserver={}".format(opts.vaultserver)]
    found = condor_param("SEC_CREDENTIAL_GETTOKEN_OPTS")
    if set(shlex.split(found or "")) != set(wanted):
        config = condor_param("USER_CONFIG_FILE") or "user_config"
        config = os.path.join(os.path.expanduser("~"), ".condor",
                              os.path.basename(config))
        raise CondorError(
            "HTCondor's SEC_CREDENTIAL_GETTOKEN_OPTS is {!r}, not this run's "
            "options; put this line in {}: SEC_CREDENTIAL_GETTOKEN_OPTS = {}"
            .format(found or "", config, " ".join(wanted)))
    ccache_dir = tempfile.mkdtemp(prefix="igwn-robot-get-")
    try:
        ccache = opts.ccache or "FILE:" + os.path.join(ccache_dir, "ccache")
        kerberos_negotiate(opts.principal, opts.keytab, ccache,
                           url_host(opts.vaulturl), opts.kdc_timeout)
        env = dict(os.environ, KRB5CCNAME=ccache)
        command = [storer] + (["-v"] if opts.verbose else []) + [opts.issuer]
        log.info("running %s", " ".join(command))
        try:
            code = subprocess.call(command, env=env)
        except OSError as exc:
            raise CondorError("cannot run {}: {}".format(storer, exc.strerror))
        if code != 0:
            raise CondorError("{} failed with exit code {}; see its output "
                              "above".format(storer, code))
    finally:
        shutil.rmtree(ccache_dir, ignore_errors=True)


def refuse_condor_in_image():
    if os.environ.get("IGWN_ROBOT_GET_IMAGE"):
        raise CondorError(
            "--condor does not work in the container image (it has no "
            "HTCondor); install igwn-robot-get and HTCondor on the host and "
            "run it there")


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


# -- operators: --show, status and metrics files, hooks --------------------------

def show_source(opts):
    """Where --show reads the token: $BEARER_TOKEN, then the token file."""
    if not opts.outfile_given and os.environ.get("BEARER_TOKEN", "").strip():
        return "$BEARER_TOKEN", os.environ["BEARER_TOKEN"].strip()
    return opts.outfile, read_token_file(opts.outfile)


def token_summary(token, now=None):
    """The claims worth showing, plus the time left (None if undecodable)."""
    try:
        claims = decode_jwt_payload(token)
    except UnusableToken:
        return None
    now = time.time() if now is None else now
    exp = claims.get("exp")
    left = exp - now if isinstance(exp, (int, float)) and not isinstance(
        exp, bool) else None
    return {"claims": claims, "time_left": left}


def format_claim(name, value, now):
    if name in ("exp", "iat", "nbf") and isinstance(value, (int, float)) \
            and not isinstance(value, bool):
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
    return str(value)


def show(opts):
    """``--show``: print the managed token's claims; never fetch."""
    source, token = show_source(opts)
    now = time.time()
    summary = token_summary(token, now) if token else None
    if opts.json:
        doc = {"source": source, "minsecs": opts.minsecs,
               "claims": summary["claims"] if summary else None,
               "time_left": summary["time_left"] if summary else None}
        doc["fresh"] = bool(summary and summary["time_left"] is not None
                            and summary["time_left"] >= opts.minsecs)
        if not opts.quiet:
            print(json.dumps(doc, sort_keys=True))
    elif summary and not opts.quiet:
        print("token: {}".format(source))
        for name in sorted(summary["claims"]):
            print("  {:<9} {}".format(name + ":", format_claim(
                name, summary["claims"][name], now)))
        if summary["time_left"] is not None:
            print("time left: {}".format(format_duration(summary["time_left"])
                                         if summary["time_left"] > 0
                                         else "none (expired)"))
    if token is None:
        raise TokenNotFresh("no token at {}; run {} to fetch one".format(
            source, PROG))
    if summary is None:
        raise TokenNotFresh("the token at {} is not a JWT; run {} to replace "
                            "it".format(source, PROG))
    if summary["time_left"] is None:
        raise TokenNotFresh("the token at {} has no 'exp' claim".format(source))
    if summary["time_left"] < opts.minsecs:
        raise TokenNotFresh(
            "the token at {} has {} left, under --minsecs {}; run {} to renew "
            "it".format(source, format_duration(max(0, summary["time_left"])),
                        int(opts.minsecs), PROG))


def _read_json(path):
    try:
        with open(path) as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def token_facts(path):
    """exp, sub, scope, aud and time left of the token now on disk."""
    token = read_token_file(path) if path and not is_dev_file(path) else None
    summary = token_summary(token) if token else None
    if not summary:
        return None
    claims = summary["claims"]
    facts = {k: claims.get(k) for k in ("exp", "sub", "scope", "aud")}
    facts["time_left"] = summary["time_left"]
    return facts


def write_status(opts, code, error, outcome, started):
    """``--status-file``: one JSON document about the last run."""
    previous = _read_json(opts.status_file)
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
        "error": None if error is None else redact(error),
        "error_class": None if error is None else getattr(
            error, "kind", "internal"),
        "last_success_time": _iso(now) if ok else previous.get(
            "last_success_time"),
        "last_success_timestamp": round(now, 3) if ok else previous.get(
            "last_success_timestamp"),
        "token_file": opts.outfile,
        "token": token_facts(opts.outfile),
    }
    write_atomically(opts.status_file, json.dumps(doc, indent=2,
                                                  sort_keys=True) + "\n",
                     mode=0o644)


def write_metrics(opts, code, outcome):
    """``--metrics-file``: the same facts for node_exporter's textfile
    collector."""
    prefix = "igwn_robot_get_"
    previous = {}
    try:
        with open(opts.metrics_file) as handle:
            for line in handle:
                match = re.match(r"^(" + prefix + r"\w+)(?:\{[^}]*\})?\s+(\S+)",
                                 line)
                if match:
                    previous[match.group(1)] = float(match.group(2))
    except (OSError, ValueError):
        pass
    now = time.time()
    ok = outcome.succeeded(code)
    facts = token_facts(opts.outfile) or {}
    values = [
        ("token_expiry_timestamp_seconds", "gauge",
         "Expiry time of the bearer token on disk.",
         facts.get("exp") if isinstance(facts.get("exp"), (int, float))
         else None),
        ("last_run_timestamp_seconds", "gauge",
         "Time of the last run.", now),
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
    for name, kind, helptext, value in values:
        if value is None:
            continue
        lines.append("# HELP {}{} {}".format(prefix, name, helptext))
        lines.append("# TYPE {}{} {}".format(prefix, name, kind))
        lines.append("{}{}{{token_file=\"{}\"}} {}".format(
            prefix, name, _prom_label(opts.outfile), _prom_number(value)))
    write_atomically(opts.metrics_file, "\n".join(lines) + "\n", mode=0o644)


def _prom_label(text):
    return str(text).replace("\\", "\\\\").replace('"', '\\"').replace(
        "\n", "\\n")


def _prom_number(value):
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _iso(timestamp):
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def run_hook(opts):
    """``--on-change``: tell an application the token was replaced."""
    try:
        argv = shlex.split(opts.on_change)
    except ValueError as exc:
        raise HookFailed("--on-change {!r} cannot be split: {}".format(
            opts.on_change, exc))
    env = dict(os.environ, IGWN_ROBOT_GET_TOKEN_FILE=os.path.abspath(
        opts.outfile), BEARER_TOKEN_FILE=os.path.abspath(opts.outfile))
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
                         "token was kept".format(opts.on_change, getattr(
                             exc, "strerror", None) or exc))
    if result.returncode != 0:
        raise HookFailed("--on-change command {} exited with {}; the new "
                         "token was kept".format(argv[0], result.returncode))


# -- one run ---------------------------------------------------------------------

def run(opts, outcome):
    """Everything between parsing the options and the exit code."""
    if opts.show:
        show(opts)
        return
    if opts.condor:
        refuse_condor_in_image()
        opts.keytab = check_keytab(opts.keytab)
        resolve_identity(opts)
        condor_handoff(opts)
        return
    check_output_target(opts.outfile)
    if token_is_fresh(opts):
        return
    opts.keytab = check_keytab(opts.keytab)
    resolve_identity(opts)
    if opts.jitter > 0:
        pause = random.uniform(0, opts.jitter)
        log.info("waiting %.1fs (--jitter) before contacting Vault", pause)
        time.sleep(pause)
    if is_dev_file(opts.outfile):
        token = fetch(opts, outcome)
        write_atomically(opts.outfile, token + "\n")
    else:
        lock_wait = opts.timeout + opts.kdc_timeout + 30
        with FileLock(opts.outfile, lock_wait):
            if token_is_fresh(opts, after_wait=True):
                return
            token = fetch(opts, outcome)
            check_planted(opts.outfile)
            write_atomically(opts.outfile, token + "\n")
    outcome.renewed = True
    left = time_left(token)
    log.info("stored a new token in %s (via %s); it expires in %s",
             opts.outfile, outcome.how, format_duration(left or 0),
             extra={"event": "token_renewed"})
    if opts.on_change:
        run_hook(opts)


def token_is_fresh(opts, after_wait=False):
    """True when the token on disk has at least --minsecs left."""
    if is_dev_file(opts.outfile):
        return False
    left = local_time_left(opts.outfile)
    report = log.debug if after_wait else log.info
    if left is None:
        report("no usable token at %s: fetching one", opts.outfile)
        return False
    if left >= opts.minsecs:
        log.info("token %s is fresh: %s left (--minsecs %s)%s", opts.outfile,
                 format_duration(left), int(opts.minsecs),
                 "; another run renewed it" if after_wait else "",
                 extra={"event": "token_fresh"})
        return True
    report("token %s has %s left, under --minsecs %s: renewing",
             opts.outfile, format_duration(max(left, 0)), int(opts.minsecs))
    return False


# -- command line ------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message):
        raise UsageError("{}; see {} --help".format(message, PROG))


def _duration_arg(what):
    def convert(text):
        try:
            return parse_duration(text, what)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc))
    return convert


def exit_code_table():
    return "exit codes:\n" + "\n".join(
        "  {:>3}  {}".format(code, text) for code, text in EXIT_CODES)


def create_parser():
    parser = _Parser(
        prog=PROG,
        description="Keep a fresh SciToken (bearer token) on disk for an IGWN "
                    "robot, from its Kerberos keytab, through Vault. A drop-in "
                    "for igwn-robot-get 0.3.3.",
        epilog=exit_code_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("principal", nargs="?",
        help="Kerberos principal of the robot; default: the first in the "
             "keytab; realm {} is added when missing".format(DEFAULT_REALM))
    add("-v", "--verbose", action="count", default=0,
        help="say more: -v what happens, -vv details, -vvv the HTTP exchanges "
             "(tokens are always redacted)")
    add("-q", "--quiet", action="store_true",
        help="print errors only")
    add("-V", "--version", action="version",
        version="%(prog)s {}".format(__version__))
    krb = parser.add_argument_group("Kerberos options")
    krb.add_argument("-k", "--keytab", "--kerberos-keytab",
                     default=os.environ.get("KRB5_KTNAME") or None,
                     help="the robot's keytab (default: $KRB5_KTNAME)")
    krb.add_argument("-c", "--ccache", "--kerberos-ccache",
                     help="keep the Kerberos ticket in this credential cache "
                          "(default: in memory only, nothing on disk)")
    krb.add_argument("--kdc-timeout", type=_duration_arg("--kdc-timeout"),
                     default=DEFAULT_KDC_TIMEOUT,
                     help="give up on a silent KDC after this long "
                          "(default: 15s)")
    tok = parser.add_argument_group("token options")
    tok.add_argument("-a", "--vaultserver", default=DEFAULT_VAULTSERVER,
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
    tok.add_argument("-m", "--minsecs", type=_duration_arg("--minsecs"),
                     default=float(DEFAULT_MINSECS),
                     help="renew the token when it has less than this many "
                          "seconds left (default: %(default)d)")
    tok.add_argument("-o", "--outfile", "--bearertokenfile",
                     help="bearer token file (default: $BEARER_TOKEN_FILE, "
                          "else $XDG_RUNTIME_DIR/bt_u<uid>, else "
                          "/tmp/bt_u<uid>)")
    tok.add_argument("--audience", action="append",
                     help="narrow the token to these audiences (comma list or "
                          "repeated); reads Vault's sts path")
    tok.add_argument("--scopes", action="append",
                     help="narrow the token to these scopes (comma or space "
                          "list, or repeated); reads Vault's sts path")
    tok.add_argument("--vaulttokenfile",
                     help="vault token cache (default: /tmp/vt_u<uid>; "
                          "'none' to keep no vault token)")
    tok.add_argument("--vaulttokenttl", type=_duration_arg("--vaulttokenttl"),
                     default=parse_duration(DEFAULT_VAULTTOKENTTL),
                     help="lifetime of a new cached vault token (default: 7d)")
    tok.add_argument("--vaulttokenminttl",
                     type=_duration_arg("--vaulttokenminttl"),
                     default=parse_duration(DEFAULT_VAULTTOKENMINTTL),
                     help="log in again when the cached vault token has less "
                          "than this left (default: 24h)")
    tok.add_argument("--cafile",
                     help="CA bundle to trust (default: the system bundle, "
                          "honouring $SSL_CERT_FILE)")
    tok.add_argument("--capath",
                     help="CA directory to trust (default: $X509_CERT_DIR or "
                          "/etc/grid-security/certificates when present)")
    tok.add_argument("--timeout", type=_duration_arg("--timeout"),
                     default=DEFAULT_TIMEOUT,
                     help="total time budget for talking to Vault, retries "
                          "included (default: 60s)")
    tok.add_argument("--jitter", type=_duration_arg("--jitter"), default=0.0,
                     help="wait a random time up to this long before "
                          "contacting Vault, for fleets of cron jobs (not "
                          "when the token is fresh)")
    oidc = parser.add_argument_group("first use (OIDC login by a human)")
    oidc.add_argument("--nooidc", action="store_true",
                      help="never start an OIDC login, even at a terminal")
    oidc.add_argument("--oidc-timeout", type=_duration_arg("--oidc-timeout"),
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
    ops.add_argument("--json", action="store_true",
                     help="with --show: print one JSON object")
    ops.add_argument("--log-format", choices=("text", "json"), default="text",
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


def parse_args(argv):
    opts = create_parser().parse_args(argv)
    opts.argv = list(argv)
    opts.outfile_given = bool(opts.outfile)
    opts.outfile = opts.outfile or default_bearer_token_file()
    opts.credkey_given = bool(opts.credkey)
    opts.vaulturl = vault_url(opts.vaultserver)
    if opts.vaulttokenfile is None:
        opts.vaulttokenfile = default_vault_token_file()
    elif opts.vaulttokenfile.lower() in ("", "none", "/dev/null"):
        opts.vaulttokenfile = None
    opts.scopes = split_list(opts.scopes)
    opts.audience = split_list(opts.audience)
    if opts.json and not opts.show:
        raise UsageError("--json goes with --show; see {} --help".format(PROG))
    if opts.vaulttokenminttl >= opts.vaulttokenttl:
        raise UsageError(
            "--vaulttokenminttl ({}) must be less than --vaulttokenttl ({})"
            .format(format_duration(opts.vaulttokenminttl),
                    format_duration(opts.vaulttokenttl)))
    if opts.timeout <= 0 or opts.kdc_timeout <= 0:
        raise UsageError("--timeout and --kdc-timeout must be positive")
    if opts.verbose and opts.quiet:
        opts.verbose = 0
    return opts


# -- logging -------------------------------------------------------------------------

_LOG_STATE = {"json": False}


def _json_logs():
    return _LOG_STATE["json"]


class _RedactingFormatter(logging.Formatter):
    def __init__(self, json_lines):
        logging.Formatter.__init__(self)
        self.json_lines = json_lines

    def format(self, record):
        message = redact(record.getMessage())
        if self.json_lines:
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


def configure_logging(opts):
    _LOG_STATE["json"] = opts.log_format == "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter(_LOG_STATE["json"]))
    log.handlers[:] = [handler]
    log.propagate = False
    if opts.quiet:
        level = logging.ERROR
    else:
        level = {0: logging.WARNING, 1: logging.INFO,
                 2: logging.DEBUG}.get(opts.verbose, logging.DEBUG - 5)
    log.setLevel(level)


def _wants_json_logs(argv):
    """--log-format json, read from the raw arguments (for usage errors)."""
    for index, arg in enumerate(argv):
        if arg == "--log-format=json" or (
                arg == "--log-format" and argv[index + 1:index + 2] == ["json"]):
            return True
    return False


def _on_sigterm(signum, frame):
    raise Terminated()


class Terminated(RobotGetError):
    exit_code, kind = 143, "terminated"

    def __init__(self):
        RobotGetError.__init__(self, "stopped by SIGTERM; nothing was "
                                     "changed unless logged above")


# -- main ------------------------------------------------------------------------------

def main(argv=None):
    """Run the tool and return its exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    started = time.time()
    try:
        opts = parse_args(argv)
    except UsageError as exc:
        if _wants_json_logs(argv):
            sys.stderr.write(json.dumps({
                "time": _iso(time.time()), "level": "error", "event": "error",
                "message": redact(exc), "error_class": exc.kind,
                "exit_code": exc.exit_code}, sort_keys=True) + "\n")
        else:
            sys.stderr.write("{}: error: {}\n".format(PROG, redact(exc)))
        return UsageError.exit_code
    configure_logging(opts)
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        pass
    outcome, error, code = Outcome(), None, 0
    try:
        run(opts, outcome)
    except RobotGetError as exc:
        error, code = exc, exc.exit_code
    except KeyboardInterrupt:
        error = Interrupted("interrupted; no file was changed")
        code = error.exit_code
    except Exception as exc:  # a bug must still be one line
        error = RobotGetError("internal error ({}: {}); please report this "
                              "with the output of -vv".format(
                                  type(exc).__name__, redact(exc)))
        code = 1
    if error is not None:
        if _isatty(sys.stderr) and opts.log_format == "text":
            sys.stderr.write("\r\033[K")
        log.error("%s", error, extra={"event": "error",
                                      "error_class": getattr(error, "kind",
                                                             "internal"),
                                      "exit_code": code})
    if opts.show:  # a read-only health check records nothing
        return code
    for path, writer in ((opts.status_file, lambda: write_status(
            opts, code, error, outcome, started)),
            (opts.metrics_file, lambda: write_metrics(opts, code, outcome))):
        if path:
            try:
                writer()
            except RobotGetError as exc:
                log.warning("%s", exc)
    return code


if __name__ == "__main__":
    sys.exit(main())
