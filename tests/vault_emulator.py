"""A Vault server emulator for htgettoken-style clients (tests only).

Follows the htgettoken/htvault-config protocol (the project's vault-protocol
spec): Kerberos login verified with a GSS-API acceptor, token create and
lookup-self, creds and sts reads with
minimum_seconds, the refresh-token write, and the OIDC device flow; answers
with Vault's envelope and error shapes over TLS. A control API under /_emu/
(counters, reset, config, secrets, state) lets tests count requests and inject
faults. Run: vault_emulator.py --port 0 --cert C --key K --service-keytab T
--krb5-config F --ready-file R [--log-file L] [--rcache FILE] [--standby-port 0].

The Kerberos acceptor keeps a real replay cache (MIT "file2" at --rcache, or
the library's default), so a Negotiate token presented twice is refused the
second time with "Request is a replay", as Vault's Kerberos plugin does.

Faults (``POST /_emu/config {"faults": [{"endpoint": E, ...}]}``, each used
``count`` times, default 1), applied to the next request for endpoint E:
  delay=S            sleep S seconds first (combines with the others)
  close=True         close the connection before processing the request
  drop_reply=True    process the request fully (login accepted and recorded in
                     the replay cache, token minted, bearer token read), then
                     close the connection without sending the reply
  status=N [body=B] [retry_after=S | retry_after_date=S] [processed=True]
                     answer N instead (Retry-After in seconds, or as an
                     IMF-fixdate S seconds from now); with processed, only
                     after processing the request (a login's authenticator is
                     then used up, as when Vault's LDAP lookup fails after the
                     ticket check)
  oversized="length" | "chunked" | "close" [size=BYTES]
                     the real answer padded with JSON whitespace to BYTES
                     (default 50 MiB): announced with Content-Length, or
                     chunked, or delimited by closing the connection
  echo_authorization=True
                     answer 401 quoting the request's Negotiate token, bare, in
                     both errors and warnings (a server that echoes credentials)
  drip=S [drip_headers=True]
                     the real answer with its Content-Length, the body sent one
                     byte every S seconds (with drip_headers, the status line
                     and headers are dripped too)

The standby (--standby-port) is a second listener sharing this state: every
/v1/ request gets ``307`` with ``Location: https://<active host>:<active
port><same path and query>`` (``config {"standby": {...}}``: ``mode``
"redirect" | "http" (Location is http://) | "loop" (Location is the standby
itself) | "serve" (answers like the active node); ``host`` the active host
named in Location, default "localhost"; ``status`` 307 or 308).
"""

import argparse
import base64
import binascii
import copy
import datetime
import email.utils
import json
import os
import re
import secrets
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UTC = datetime.timezone(datetime.timedelta(0))
REALM = "LIGO.ORG"
ENDPOINTS = ("kerberos_login", "token_create", "lookup_self", "creds_read", "sts_read",
             "creds_write", "auth_url", "poll")
DEFAULT_SCOPE = "gwdatafind.read read:/frames read:/ligo"
EXPIRED_STATE = "Vault login failed. Expired or missing OAuth state."
INVALID_GRANT = "refresh failed: server rejected request: invalid_grant"
STATE_LIFETIME = 600
NEGOTIATE = {"WWW-Authenticate": "Negotiate"}

DEFAULT_CONFIG = {
    "token_lifetime": 10800,
    "token_kind": "good",
    "vault_token_ttl": 672 * 3600,
    "issuers": ["igwn"],
    "device": {"approve_after_polls": 1, "deny": False, "expire": False,
               "slow_down_once": False, "poll_interval": "1", "credkey": None,
               "complete_url": False, "sshregister": False},
    # refuse a Kerberos ticket whose service principal is not host/<the host the
    # request was addressed to> (a real Vault holds one service principal only)
    "check_service_principal": False,
    "standby": {"mode": "redirect", "host": "localhost", "status": 307},
}
STANDBY_MODES = ("redirect", "http", "loop", "serve")
DEFAULT_CREDENTIALS = {"robot/ci.ligo.org:robot": "good", "other/ci.ligo.org:other": "missing"}

ROUTES = [
    ("POST", r"/v1/auth/kerberos-(?P<issuer>[^/_]+)_(?P<role>[^/]+)/login", "kerberos_login"),
    ("POST", r"/v1/auth/token/create", "token_create"),
    ("GET", r"/v1/auth/token/lookup-self", "lookup_self"),
    ("GET", r"/v1/secret/oauth/creds/(?P<issuer>[^/]+)/(?P<name>.+)", "creds_read"),
    ("POST", r"/v1/secret/oauth/creds/(?P<issuer>[^/]+)/(?P<name>.+)", "creds_write"),
    ("GET", r"/v1/secret/oauth/sts/(?P<issuer>[^/]+)/(?P<name>.+)", "sts_read"),
    ("POST", r"/v1/auth/oidc-(?P<issuer>[^/]+)/oidc/auth_url", "auth_url"),
    ("POST", r"/v1/auth/oidc-(?P<issuer>[^/]+)/oidc/poll", "poll"),
]


class VaultError(Exception):
    """An error answer: {"errors": [...]} (and "warnings"), or a raw body for faults."""

    def __init__(self, status, *errors, warnings=None, headers=None, raw_body=None):
        super().__init__(status, errors)
        self.status, self.headers = status, dict(headers or {})
        self.body = {"errors": list(errors)} if raw_body is None else raw_body
        if warnings:
            self.body["warnings"] = warnings


def denied():
    return VaultError(403, "permission denied")


def request_host(header):
    """The host name of a Host header value (no port, no brackets), lower case."""
    host = header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class Dropped(Exception):
    """The connection is closed without a reply (a fault)."""


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rfc3339(epoch):
    return datetime.datetime.fromtimestamp(epoch, UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ttl(value):
    """Vault durations: an integer (seconds) or <n>[smhd]."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", str(value))
    if not match:
        raise VaultError(400, f"invalid ttl {value!r}")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def parse_bool(value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "t", "yes"):
        return True
    if text in ("false", "0", "f", "no", ""):
        return False
    raise VaultError(400, f"invalid boolean {value!r}")


def as_list(value):
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


# ---------------------------------------------------------------- JWTs

class Minter:
    """Signs SciToken-shaped RS256 JWTs with a key made at start."""

    def __init__(self):
        from cryptography.hazmat.primitives.asymmetric import rsa
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "emu-" + secrets.token_hex(4)

    def sign(self, claims):
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        parts = [b64url(json.dumps(part).encode()) for part in (header, claims)]
        signing_input = ".".join(parts)
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + b64url(signature)

    def mint(self, issuer, subject, lifetime, kind="good", aud="ANY", scope=DEFAULT_SCOPE):
        """Return (token, exp or None) of the requested kind."""
        now = int(time.time())
        if kind == "not_jwt":
            return "opaque-" + secrets.token_urlsafe(32), None
        exp = now - 60 if kind == "expired" else now + lifetime
        claims = {"iss": f"https://cilogon.org/{issuer}", "sub": subject, "aud": aud,
                  "scope": scope, "iat": now, "nbf": now, "exp": exp, "ver": "scitoken:2.0",
                  "jti": f"https://cilogon.org/oauth2/{secrets.token_hex(16)}"
                         f"?type=accessToken&lifetime={lifetime * 1000}"}
        if kind == "no_exp":
            del claims["exp"]
            exp = None
        return self.sign(claims), exp


# ---------------------------------------------------------------- state

class State:
    """Everything the emulator knows; every method runs under one lock."""

    def __init__(self, minter):
        self.minter = minter
        self.lock = threading.RLock()
        self.secrets = []
        self.reset()

    def reset(self):
        with self.lock:
            self.config = copy.deepcopy(DEFAULT_CONFIG)
            self.counters = dict.fromkeys(ENDPOINTS, 0)
            self.connections = 0
            self.faults = []
            self.tokens = {}
            self.refresh_tokens = set()
            self.credentials = {}
            self.sts_cache = {}
            self.device_states = {}
            self.polls = []
            self.logins = []
            self.kerberos_accepted = []
            self.kerberos_refused = []
            self.standby_requests = []
            self.dropped_replies = []
            for key, state in DEFAULT_CREDENTIALS.items():
                self.set_credential(key, state)

    def remember(self, secret):
        self.secrets.append(secret)
        return secret

    def new_refresh_token(self):
        token = self.remember("NB2HI4DTHIXS" + secrets.token_urlsafe(30))
        self.refresh_tokens.add(token)
        return token

    def set_credential(self, key, state):
        if state not in ("good", "missing", "dead"):
            raise VaultError(400, "credential state must be good, missing or dead")
        old = self.credentials.get(key) or {}
        refresh = old.get("refresh_token") if state != "missing" else None
        if state != "missing" and not refresh:
            refresh = self.new_refresh_token()
        self.credentials[key] = {"state": state, "refresh_token": refresh, "access": None}
        self.sts_cache = {k: v for k, v in self.sts_cache.items() if k[0] != key}

    def apply_config(self, settings):
        with self.lock:
            for key, value in settings.items():
                if key == "faults":
                    self.faults.extend(dict(f, count=int(f.get("count", 1))) for f in value)
                elif key == "credentials":
                    for name, state in value.items():
                        self.set_credential(name, state)
                elif key == "device":
                    self.config["device"].update(value)
                elif key == "standby":
                    if value.get("mode", "redirect") not in STANDBY_MODES:
                        raise VaultError(400, f"standby mode must be one of {STANDBY_MODES}")
                    if int(value.get("status", 307)) not in (301, 302, 303, 307, 308):
                        raise VaultError(400, "standby status must be a redirect")
                    self.config["standby"].update(value)
                elif key in ("token_lifetime", "token_kind", "vault_token_ttl", "issuers",
                             "check_service_principal"):
                    self.config[key] = value
                else:
                    raise VaultError(400, f"unknown config key {key!r}")
            if {"token_lifetime", "token_kind"} & set(settings):
                self.drop_cached_access_tokens()

    def drop_cached_access_tokens(self):
        for cred in self.credentials.values():
            cred["access"] = None
        self.sts_cache = {}

    def count_connection(self):
        with self.lock:
            self.connections += 1

    def count(self, endpoint):
        with self.lock:
            self.counters[endpoint] = self.counters.get(endpoint, 0) + 1

    def take_fault(self, endpoint):
        with self.lock:
            for fault in self.faults:
                if fault.get("endpoint") == endpoint and fault["count"] > 0:
                    fault["count"] -= 1
                    if fault["count"] <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def describe(self):
        with self.lock:
            now = time.time()
            return {"credentials": {k: v["state"] for k, v in self.credentials.items()},
                    "refresh_token_stored": {k: bool(v["refresh_token"])
                                             for k, v in self.credentials.items()},
                    "vault_tokens": sum(1 for t in self.tokens.values() if t["expires"] > now),
                    "logins": list(self.logins), "polls": list(self.polls),
                    "kerberos_accepted": copy.deepcopy(self.kerberos_accepted),
                    "kerberos_refused": copy.deepcopy(self.kerberos_refused),
                    "standby_requests": copy.deepcopy(self.standby_requests),
                    "dropped_replies": copy.deepcopy(self.dropped_replies),
                    "connections": self.connections,
                    "config": copy.deepcopy(self.config),
                    "faults_pending": copy.deepcopy(self.faults)}

    # -- vault tokens

    def issue_token(self, identity, policies, ttl, parent=None):
        now = time.time()
        expires = now + ttl
        if parent is not None:
            expires = min(expires, parent["expires"])
        record = {"token": self.remember("hvs." + secrets.token_urlsafe(66)),
                  "accessor": secrets.token_urlsafe(18), "policies": list(policies),
                  "identity": dict(identity), "created": now, "expires": expires,
                  "creation_ttl": round(expires - now), "orphan": parent is None,
                  "path": identity.get("path", "auth/token/create")}
        self.tokens[record["token"]] = record
        return record

    def token(self, value):
        record = self.tokens.get(value or "")
        if record is None or record["expires"] <= time.time():
            raise denied()
        return record

    @staticmethod
    def auth_block(record, metadata=None):
        ttl = round(record["expires"] - time.time())
        return {"client_token": record["token"], "accessor": record["accessor"],
                "policies": record["policies"], "token_policies": record["policies"],
                "identity_policies": None, "metadata": metadata, "lease_duration": ttl,
                "renewable": False, "entity_id": "", "token_type": "service",
                "orphan": record["orphan"], "mfa_requirement": None, "num_uses": 0}


# ---------------------------------------------------------------- endpoints

class Vault:
    """The Vault API: one method per endpoint, each returning (status, body)."""

    def __init__(self, state, acceptor_creds):
        self.state = state
        self.acceptor_creds = acceptor_creds

    @staticmethod
    def envelope(data=None, auth=None, warnings=None):
        return 200, {"request_id": str(uuid.uuid4()), "lease_id": "", "renewable": False,
                     "lease_duration": 0, "data": data, "auth": auth, "warnings": warnings,
                     "wrap_info": None, "mount_type": ""}

    def check_issuer(self, issuer, path):
        if issuer not in self.state.config["issuers"]:
            route = path.lstrip("/").replace("v1/", "", 1)
            raise VaultError(404, f'no handler for route "{route}". route entry not found.')

    # -- Kerberos login (3.3)

    def kerberos_login(self, req, issuer, role):
        self.check_issuer(issuer, req.route_path)
        token = self.negotiate_token(req.headers.get("Authorization", ""))
        host = request_host(req.headers.get("Host", ""))
        try:
            principal, target = self.accept(token)
            user, _, realm = principal.rpartition("@")
            if realm != REALM or not user:
                raise VaultError(401, "authentication failed",
                                 warnings=[f"principal {principal} is not in realm {REALM}"])
            wanted = f"host/{host}@{REALM}"
            if self.state.config["check_service_principal"] and target != wanted:
                raise VaultError(401, "authentication failed", warnings=[
                    f"Wrong principal in request: the ticket is for {target}, "
                    f"this server is {wanted}"])
        except VaultError as exc:
            with self.state.lock:
                self.state.kerberos_refused.append(
                    {"time": time.time(), "host": host,
                     "reason": " ".join(exc.body.get("warnings") or exc.body.get("errors"))})
            raise
        st = self.state
        with st.lock:
            st.kerberos_accepted.append({"time": time.time(), "user": user, "target": target,
                                         "host": host})
            record = st.issue_token(
                {"method": "kerberos", "user": user, "credkey": user, "issuer": issuer,
                 "role": role, "path": f"auth/kerberos-{issuer}_{role}/login"},
                [f"kerberos-{issuer}_{role}", "tokenops"], st.config["vault_token_ttl"])
            st.logins.append({"method": "kerberos", "user": user, "role": role})
            return self.envelope(auth=st.auth_block(record, {"user": user, "domain": realm}))

    @staticmethod
    def negotiate_token(header):
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "negotiate" or not value.strip():
            raise VaultError(401, "authentication required", headers=NEGOTIATE)
        try:
            return base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise VaultError(401, "authentication required", headers=NEGOTIATE)

    def accept(self, token):
        import gssapi
        try:
            ctx = gssapi.SecurityContext(creds=self.acceptor_creds, usage="accept")
            ctx.step(token)
            if not ctx.complete:
                raise VaultError(401, "authentication failed",
                                 warnings=["GSS-API context needs more than one round trip"])
            return str(ctx.initiator_name), str(ctx.target_name)
        except gssapi.exceptions.GSSError as exc:
            reason = " ".join(str(exc).split())
            raise VaultError(401, "authentication failed", warnings=[reason])

    # -- tokens (3.1, 3.4)

    def lookup_self(self, req):
        st = self.state
        with st.lock:
            rec = st.token(req.vault_token)
            ident = rec["identity"]
            now = time.time()
            data = {"accessor": rec["accessor"], "creation_time": int(rec["created"]),
                    "creation_ttl": rec["creation_ttl"],
                    "display_name": "{}-{}".format(ident.get("method", "token"),
                                                   ident.get("user", "")),
                    "entity_id": "", "expire_time": rfc3339(rec["expires"]),
                    "explicit_max_ttl": 0, "id": rec["token"],
                    "issue_time": rfc3339(rec["created"]),
                    "meta": {"user": ident.get("user")}, "num_uses": 0,
                    "orphan": rec["orphan"], "path": rec["path"], "policies": rec["policies"],
                    "renewable": False, "ttl": int(rec["expires"] - now), "type": "service"}
            return self.envelope(data=data)

    def token_create(self, req):
        body = req.body_params()
        st = self.state
        with st.lock:
            parent = st.token(req.vault_token)
            ttl = parse_ttl(body["ttl"]) if body.get("ttl") not in (None, "") else 32 * 86400
            parse_bool(body.get("renewable", False))
            policies = as_list(body.get("policies")) or list(parent["policies"])
            if not set(policies) <= set(parent["policies"]):
                raise VaultError(400, "child policies must be subset of parent")
            identity = dict(parent["identity"], path="auth/token/create")
            record = st.issue_token(identity, policies, ttl, parent=parent)
            return self.envelope(auth=st.auth_block(record))

    # -- bearer tokens (3.2, 3.7)

    def authorize(self, req, issuer, name, write=False):
        """Return (vault token record, credential key, credkey) or raise 403/404."""
        self.check_issuer(issuer, req.route_path)
        record = self.state.token(req.vault_token)
        credkey, sep, role = name.rpartition(":")
        ident = record["identity"]
        if not sep or not credkey or ident.get("issuer") != issuer or ident.get("role") != role:
            raise denied()
        owner = ident.get("credkey") or ""
        if credkey != owner and not credkey.startswith(owner + "/"):
            raise denied()
        if write and ident.get("method") != "oidc":
            raise denied()
        return record, name, credkey

    @staticmethod
    def minimum_seconds(req):
        raw = req.query.get("minimum_seconds", ["0"])[-1]
        try:
            return int(raw or 0)
        except ValueError:
            raise VaultError(400, f"error converting input {raw} for field \"minimum_seconds\"")

    def stored_credential(self, key):
        cred = self.state.credentials.get(key)
        if cred is None or cred["state"] == "missing":
            raise VaultError(404)
        if cred["state"] == "dead":
            raise VaultError(400, INVALID_GRANT)
        return cred

    def fresh(self, cached, issuer, credkey, delta, **claims):
        """Return cached (token, exp) if it outlives delta, else a new one, or raise."""
        st = self.state
        if cached and cached[1] is not None and cached[1] - time.time() > delta:
            return cached
        lifetime = int(st.config["token_lifetime"])
        if lifetime <= delta:
            raise VaultError(400, "token expired")
        token, exp = st.minter.mint(issuer, credkey, lifetime, st.config["token_kind"], **claims)
        st.remember(token)
        return token, exp

    def bearer_answer(self, token, exp, issuer=None):
        kind = self.state.config["token_kind"]
        if kind == "not_json":
            return 200, "<html><body>upstream proxy says hello</body></html>"
        data = {"access_token": token, "type": "Bearer",
                "expire_time": rfc3339(exp) if exp else None}
        if issuer:
            data["server"] = issuer
        if kind == "no_access_token":
            del data["access_token"]
        return self.envelope(data=data)

    def creds_read(self, req, issuer, name):
        st = self.state
        with st.lock:
            _, key, credkey = self.authorize(req, issuer, name)
            cred = self.stored_credential(key)
            delta = max(self.minimum_seconds(req), 10)
            good = st.config["token_kind"] == "good"
            cred["access"] = self.fresh(cred["access"] if good else None, issuer, credkey, delta)
            return self.bearer_answer(*cred["access"], issuer=issuer)

    def sts_read(self, req, issuer, name):
        st = self.state
        with st.lock:
            _, key, credkey = self.authorize(req, issuer, name)
            self.stored_credential(key)
            delta = max(self.minimum_seconds(req), 10)
            scopes = as_list(",".join(req.query.get("scopes", [])))
            audiences = as_list(",".join(req.query.get("audiences", [])))
            cache_key = (key, tuple(scopes), tuple(audiences))
            claims = {"scope": " ".join(scopes) if scopes else DEFAULT_SCOPE,
                      "aud": (audiences[0] if len(audiences) == 1 else audiences) or "ANY"}
            good = st.config["token_kind"] == "good"
            answer = self.fresh(st.sts_cache.get(cache_key) if good else None, issuer, credkey,
                                delta, **claims)
            st.sts_cache[cache_key] = answer
            return self.bearer_answer(*answer)

    def creds_write(self, req, issuer, name):
        body = req.body_params()
        st = self.state
        with st.lock:
            _, key, _ = self.authorize(req, issuer, name, write=True)
            if body.get("server", issuer) != issuer:
                raise denied()
            refresh = body.get("refresh_token")
            if not refresh:
                raise VaultError(400, "missing refresh_token")
            if refresh not in st.refresh_tokens:
                raise VaultError(400, INVALID_GRANT)
            st.remember(refresh)
            st.credentials[key] = {"state": "good", "refresh_token": refresh, "access": None}
            st.sts_cache = {k: v for k, v in st.sts_cache.items() if k[0] != key}
            return 204, None

    # -- OIDC device flow (3.5, 3.6)

    def auth_url(self, req, issuer):
        self.check_issuer(issuer, req.route_path)
        body = req.body_params()
        if not body.get("client_nonce"):
            raise VaultError(400, "missing client_nonce")
        if not body.get("role"):
            raise VaultError(400, "missing role")
        st = self.state
        with st.lock:
            device = st.config["device"]
            state = "st_" + secrets.token_urlsafe(24)
            code = f"{secrets.token_hex(2).upper()}-{secrets.token_hex(2).upper()}"
            st.device_states[state] = {"issuer": issuer, "role": body["role"],
                                       "nonce": body["client_nonce"], "polls": 0,
                                       "slowed": False, "created": time.time()}
            url = "https://cilogon.org/device/"
            data = {"state": state, "poll_interval": str(device["poll_interval"])}
            if device["complete_url"]:
                data["auth_url"] = url + "?user_code=" + code
            else:
                data.update(auth_url=url, user_code=code)
            return self.envelope(data=data)

    def poll(self, req, issuer):
        self.check_issuer(issuer, req.route_path)
        body = req.body_params()
        st = self.state
        with st.lock:
            flow = st.device_states.get(body.get("state") or "")
            if flow is None or time.time() - flow["created"] > STATE_LIFETIME:
                answer = "expired"
            elif body.get("client_nonce") != flow["nonce"]:
                answer = "invalid client_nonce"
            else:
                answer = self.poll_answer(flow)
            st.polls.append({"time": time.time(), "answer": answer})
            if answer == "approved":
                del st.device_states[body["state"]]
                return self.approve(flow)
            if answer in ("expired", "denied") and flow is not None:
                st.device_states.pop(body["state"], None)
            messages = {"expired": EXPIRED_STATE, "denied": "authorization failed: access_denied"}
            raise VaultError(400, messages.get(answer, answer))

    def poll_answer(self, flow):
        device = self.state.config["device"]
        if device["slow_down_once"] and not flow["slowed"]:
            flow["slowed"] = True
            return "slow_down"
        flow["polls"] += 1
        if flow["polls"] < int(device["approve_after_polls"]):
            return "authorization_pending"
        if device["expire"]:
            return "expired"
        if device["deny"]:
            return "denied"
        return "approved"

    def approve(self, flow):
        st = self.state
        device = st.config["device"]
        issuer, role = flow["issuer"], flow["role"]
        credkey = device["credkey"] or role
        policies = [f"oidc-{issuer}_{role}", "tokenops"]
        if device["sshregister"]:
            policies.append(f"sshregister-{issuer}")
        record = st.issue_token(
            {"method": "oidc", "user": credkey, "credkey": credkey, "issuer": issuer,
             "role": role, "path": f"auth/oidc-{issuer}/oidc/poll"},
            policies, st.config["vault_token_ttl"])
        st.logins.append({"method": "oidc", "user": credkey, "role": role})
        metadata = {"credkey": credkey, "oauth2_refresh_token": st.new_refresh_token(),
                    "role": role}
        return self.envelope(auth=st.auth_block(record, metadata))


# ---------------------------------------------------------------- HTTP

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "VaultEmulator/1.0"
    timeout = 60

    def setup(self):
        self.request = self.server.ssl_context.wrap_socket(self.request, server_side=True)
        self.counted = False  # connections are counted at their first Vault request
        super().setup()
        # Like Vault (Go): no Nagle delay between the header and body records.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):  # the one-line log is written in respond()
        pass

    # -- request helpers

    @property
    def vault_token(self):
        return self.headers.get("X-Vault-Token")

    def body_params(self):
        if not self.body.strip():
            return {}
        try:
            value = json.loads(self.body)
            if isinstance(value, dict):
                return value
        except ValueError:
            pass
        form = urllib.parse.parse_qs(self.body.decode("utf-8", "replace"))
        if not form:
            raise VaultError(400, "failed to parse JSON input")
        return {k: v[-1] for k, v in form.items()}

    def read_request(self):
        url = urllib.parse.urlsplit(self.path)
        self.route_path = urllib.parse.unquote(url.path)
        self.query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""

    # -- dispatch

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method):
        started = time.monotonic()
        self.read_request()
        endpoint, headers, fault, note = "control", {}, None, ""
        try:
            if self.route_path.startswith("/_emu/"):
                status, body = self.server.control(method, self.route_path[6:], self.body_params())
            else:
                if not self.counted:
                    self.counted = True
                    self.server.state.count_connection()
                endpoint, handler, groups = self.route(method)
                fault = self.server.state.take_fault(endpoint)
                if fault is not None:
                    self.fault_before(fault)
                status, body = handler(self, **groups)
        except Dropped:
            return self.log_line(method, endpoint, "closed", started)
        except VaultError as exc:
            status, body, headers = exc.status, exc.body, exc.headers
            if status == 401 and isinstance(body, dict) and body.get("warnings"):
                note = " [" + "; ".join(body["warnings"]) + "]"
        except Exception as exc:  # an emulator bug: answer 500, log it
            status, body = 500, {"errors": [f"emulator bug: {type(exc).__name__}"]}
            self.server.log(f"emulator exception: {exc!r}")
        if fault is not None and fault.get("status") and fault.get("processed"):
            error = self.status_fault(fault)
            status, body, headers = error.status, error.body, error.headers
        if fault is not None and fault.get("drop_reply"):
            self.close_connection = True
            with self.server.state.lock:
                self.server.state.dropped_replies.append(
                    {"time": time.time(), "endpoint": endpoint, "status": status})
            return self.log_line(method, endpoint, f"{status}, reply dropped{note}", started)
        try:
            if fault is not None and fault.get("oversized"):
                self.respond_oversized(status, body, headers, fault)
                note += " [oversized {}]".format(fault["oversized"])
            elif fault is not None and fault.get("drip"):
                note += " [dripped]"
                self.respond_drip(status, body, headers, fault)
            else:
                self.respond(status, body, headers)
        except (OSError, ssl.SSLError) as exc:  # the client went away mid-answer
            self.close_connection = True
            note += f" [client gone: {type(exc).__name__}]"
        self.log_line(method, endpoint, f"{status}{note}", started)

    def route(self, method):
        for verb, pattern, name in ROUTES:
            match = re.fullmatch(pattern, self.route_path)
            if match and verb == method:
                self.server.state.count(name)
                return name, getattr(self.server.vault, name), match.groupdict()
        self.server.state.count("other")
        raise VaultError(404, f"no handler for route {self.route_path!r}")

    def fault_before(self, fault):
        """The part of a fault applied before the request is processed: raise
        Dropped (close), VaultError (status) or return (the rest comes later)."""
        if fault.get("delay"):
            time.sleep(float(fault["delay"]))
        if fault.get("close"):
            self.close_connection = True
            raise Dropped()
        if fault.get("status") and not fault.get("processed"):
            raise self.status_fault(fault)
        if fault.get("echo_authorization"):
            # A server that quotes the client's Negotiate token back, bare.
            token = self.headers.get("Authorization", "").partition(" ")[2].strip()
            self.server.state.remember(token)
            raise VaultError(401, "authentication failed: cannot use " + token,
                             warnings=["rejected token " + token])

    @staticmethod
    def status_fault(fault):
        """The VaultError answer of a status fault (with its Retry-After, if any)."""
        body = fault.get("body")
        if body is None:
            body = {"errors": ["emulated fault: status {}".format(fault["status"])]}
        headers = {}
        if fault.get("retry_after") is not None:
            headers["Retry-After"] = str(fault["retry_after"])
        elif fault.get("retry_after_date") is not None:
            when = round(time.time() + float(fault["retry_after_date"]))
            headers["Retry-After"] = email.utils.formatdate(when, usegmt=True)
        return VaultError(int(fault["status"]), raw_body=body, headers=headers)

    def respond(self, status, body, headers):
        payload, ctype = self.encode(body)
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def respond_oversized(self, status, body, headers, fault):
        """The answer, then JSON whitespace up to fault["size"] bytes (default 50 MiB)."""
        payload, ctype = self.encode(body)
        size = max(int(fault.get("size") or 50 * 1024 * 1024), len(payload))
        kind = fault["oversized"]
        self.send_response(status)
        self.send_header("Content-Type", ctype or "application/json")
        for key, value in headers.items():
            self.send_header(key, value)
        if kind == "length":
            self.send_header("Content-Length", str(size))
        elif kind == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:  # "close": no length, the body ends when the connection does
            self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = kind not in ("length", "chunked")
        block = b" " * 65536
        pieces = [payload]
        left = size - len(payload)
        while True:
            for piece in pieces:
                if kind == "chunked":
                    piece = b"%x\r\n%s\r\n" % (len(piece), piece)
                self.wfile.write(piece)
            if left <= 0:
                break
            pieces = [block[:min(left, len(block))]]
            left -= len(pieces[0])
        if kind == "chunked":
            self.wfile.write(b"0\r\n\r\n")

    def respond_drip(self, status, body, headers, fault):
        """The answer with its real length, the body one byte every fault["drip"] s."""
        payload, ctype = self.encode(body)
        interval = float(fault["drip"])
        head = [f"{self.protocol_version} {status} {self.responses.get(status, ('',))[0]}"]
        if ctype:
            head.append(f"Content-Type: {ctype}")
        head += [f"{key}: {value}" for key, value in headers.items()]
        head += [f"Content-Length: {len(payload)}", "Connection: close", "", ""]
        head = "\r\n".join(head).encode("latin-1")
        self.close_connection = True
        if fault.get("drip_headers"):
            payload = head + payload
        else:
            self.wfile.write(head)
        self.wfile.flush()
        for index in range(len(payload)):
            time.sleep(interval)
            self.wfile.write(payload[index:index + 1])
            self.wfile.flush()

    @staticmethod
    def encode(body):
        if body is None:
            return b"", None
        if isinstance(body, str):
            try:
                json.loads(body)
                return body.encode(), "application/json"
            except ValueError:
                return body.encode(), "text/html"
        return json.dumps(body).encode(), "application/json"

    def log_line(self, method, endpoint, status, started):
        path = self.route_path + ("?" + urllib.parse.urlencode(self.query, doseq=True)
                                  if self.query else "")
        elapsed = (time.monotonic() - started) * 1000
        self.server.log(f"{self.server.name}{method} {path} {endpoint} -> {status} "
                        f"({elapsed:.1f} ms)")


class StandbyHandler(Handler):
    """A standby node: every /v1/ request is redirected to the active node."""

    def dispatch(self, method):
        started = time.monotonic()
        self.read_request()
        if self.route_path.startswith("/_emu/") or not self.route_path.startswith("/v1/"):
            return super().dispatch(method)
        st = self.server.state
        with st.lock:
            standby = dict(st.config["standby"])
        if standby["mode"] == "serve":
            self.counted = True  # the active node's connection count stays its own
            return super().dispatch(method)
        host = request_host(self.headers.get("Host", ""))
        active = "{}:{}".format(standby.get("host") or "localhost", self.server.active_port)
        if standby["mode"] == "loop":
            active = self.headers.get("Host") or f"{host}:{self.server.server_address[1]}"
        scheme = "http" if standby["mode"] == "http" else "https"
        location = f"{scheme}://{active}{self.path}"
        status = int(standby.get("status") or 307)
        with st.lock:
            st.standby_requests.append({"time": time.time(), "method": method,
                                        "path": self.path, "host": host,
                                        "vault_token": bool(self.vault_token),
                                        "authorization": bool(self.headers.get("Authorization")),
                                        "location": location})
        self.respond(status, None, {"Location": location})
        self.log_line(method, "standby", f"{status} -> {location}", started)

    def read_request(self):
        if getattr(self, "_read", None) is not self.raw_requestline:
            self._read = self.raw_requestline
            super().read_request()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, ssl_context, state, vault, log_file, handler=None,
                 name="", log_lock=None, active_port=None):
        super().__init__(address, handler or Handler)
        self.ssl_context, self.state, self.vault = ssl_context, state, vault
        self.log_file = log_file
        self.log_lock = log_lock or threading.Lock()
        self.name = name  # a log prefix ("standby: ") for the second listener
        self.active_port = active_port

    def log(self, text):
        line = "{} vault-emulator: {}\n".format(time.strftime("%H:%M:%S"), text)
        with self.log_lock:
            self.log_file.write(line)
            self.log_file.flush()

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        host, port = client_address[:2]
        self.log(f"connection from {host}:{port} ended: {type(exc).__name__}")

    def control(self, method, name, body):
        """The /_emu/ API."""
        st = self.state
        if (method, name) == ("GET", "counters"):
            with st.lock:
                return 200, dict(st.counters)
        if (method, name) == ("GET", "secrets"):
            with st.lock:
                return 200, list(st.secrets)
        if (method, name) == ("GET", "state"):
            return 200, st.describe()
        if (method, name) == ("POST", "reset"):
            st.reset()
            return 200, {"reset": True}
        if (method, name) == ("POST", "config"):
            st.apply_config(body)
            return 200, st.describe()["config"]
        raise VaultError(404, f"no control endpoint {method} {name}")


# ---------------------------------------------------------------- main

def acceptor_credentials(keytab, rcache=None):
    """Acceptor credentials for every principal in keytab (replay cache: rcache,
    a replay cache name such as "file2:/path", or the library's default)."""
    import gssapi
    store = {"keytab": keytab}
    if rcache:
        store["rcache"] = rcache
    return gssapi.Credentials(usage="accept", store=store)


def replay_cache_name(option):
    """--rcache: a path (a file2 cache there), a TYPE:residual name, or "none"."""
    if not option:
        return None
    if option == "none":
        return "none:"
    return option if re.match(r"^[a-z0-9]+:", option) else "file2:" + os.path.abspath(option)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--service-keytab", required=True)
    parser.add_argument("--krb5-config")
    parser.add_argument("--ready-file", help="write the bound port here when ready")
    parser.add_argument("--log-file", help="one line per request (default stderr)")
    parser.add_argument("--rcache", help="the Kerberos replay cache: a file (MIT file2 "
                        "format), a TYPE:residual name, or 'none' (default: the library's)")
    parser.add_argument("--standby-port", type=int, default=None,
                        help="also listen here as a standby node (0: any free port)")
    opts = parser.parse_args(argv)
    if opts.krb5_config:
        os.environ["KRB5_CONFIG"] = opts.krb5_config
    rcache = replay_cache_name(opts.rcache)
    if rcache and rcache != "none:":
        os.environ["KRB5RCACHENAME"] = rcache
        os.environ.pop("KRB5RCACHETYPE", None)
    elif rcache == "none:":
        os.environ["KRB5RCACHETYPE"] = "none"

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(opts.cert, opts.key)
    state = State(Minter())
    vault = Vault(state, acceptor_credentials(
        opts.service_keytab, rcache if rcache != "none:" else None))
    with open(opts.log_file or os.devnull, "a") as log_file:
        out = log_file if opts.log_file else sys.stderr
        server = Server((opts.host, opts.port), context, state, vault, out)
        standby = None
        if opts.standby_port is not None:
            standby = Server((opts.host, opts.standby_port), context, state, vault, out,
                             handler=StandbyHandler, name="standby: ",
                             log_lock=server.log_lock, active_port=server.server_address[1])
        serve(server, opts, standby)
    return 0


def serve(server, opts, standby=None):
    port = server.server_address[1]
    server.log(f"listening on https://{opts.host}:{port}")
    ports = [port]
    if standby is not None:
        ports.append(standby.server_address[1])
        standby.log(f"listening on https://{opts.host}:{ports[1]} (standby of {port})")
        threading.Thread(target=standby.serve_forever, kwargs={"poll_interval": 0.2},
                         name="standby", daemon=True).start()
    print(*ports, flush=True)
    if opts.ready_file:
        with open(opts.ready_file + ".tmp", "w") as handle:
            handle.write("\n".join(map(str, ports)) + "\n")
        os.replace(opts.ready_file + ".tmp", opts.ready_file)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        if standby is not None:
            standby.shutdown()
            standby.server_close()
        server.server_close()


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.exit(main())
