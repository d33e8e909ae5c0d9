"""Fuzz the hand-made JWT decoding, the Vault response handling and the fast path
(hypothesis).

Only the module API is fuzzed (no network): decode_jwt_payload, token_expiry
and extract_access_token must either return a value of the promised type or
raise UnusableToken (exit code 9, one line, no token in it), whatever they are
given: random text, random bytes, JWT-like strings built from random JSON, and
valid Vault creds responses mutated byte by byte.  Each of these tests also checks
that hypothesis really ran its examples.

The differential test (issue 12 item 2) runs the fresh-token fast path and the full
run on the same generated token files and command lines, in-process, and fails
wherever the fast path says "fresh" and the full run would not exit 0.
"""

import base64
import contextlib
import importlib.util
import io
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import igwn_robot_get as irg  # noqa: E402

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
NOW = time.time()
SANE_EXP = 1e11     # exp values below this (the year 5138) must be usable


def b64url(data):
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


json_scalars = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=6)
exp_values = (json_values | st.integers(min_value=-2**40, max_value=2**40)
              | st.floats(allow_nan=True, allow_infinity=True)
              | st.just(int(NOW) + 3600) | st.just(int(NOW) - 10))
small_values = json_scalars | st.lists(json_scalars, max_size=3)
claim_sets = st.fixed_dictionaries(
    {}, optional={"exp": exp_values, "sub": small_values, "aud": small_values,
                  "scope": small_values, "x": json_values})

segments = (st.text(alphabet=B64URL, max_size=60)
            | st.text(max_size=30)
            | st.binary(max_size=40).map(b64url)
            | json_values.map(lambda v: b64url(json.dumps(v))))


def payload_segment(obj):
    text = json.dumps(obj, allow_nan=True)
    return b64url(text)


jwt_like = (
    st.tuples(segments, segments | claim_sets.map(payload_segment), segments).map(".".join)
    | st.lists(segments, min_size=0, max_size=6).map(".".join)
    | st.tuples(segments, st.text(max_size=20), segments).map(".".join)
)

stats = {}


def count(name):
    stats[name] = stats.get(name, 0) + 1


def counted(name, minimum=None):
    """Turn a hypothesis test into one that also fails when fewer than ``minimum``
    (default: the examples asked for) examples reached its body."""
    def decorate(given_test):
        def test():
            before = stats.get(name, 0)
            given_test()
            ran = stats.get(name, 0) - before
            wanted = EXAMPLES if minimum is None else minimum
            assert ran >= wanted, "hypothesis ran {} of {} examples".format(ran, wanted)
        test.__name__ = given_test.__name__
        test.__doc__ = given_test.__doc__
        return test
    return decorate


def check_error(exc):
    assert isinstance(exc, irg.UnusableToken)
    assert exc.exit_code == 9
    text = str(exc)
    assert text and "\n" not in text


def call(func, *args, **kwargs):
    """Run func; return (result, None) or (None, UnusableToken). Anything else fails."""
    try:
        return func(*args, **kwargs), None
    except irg.UnusableToken as exc:
        check_error(exc)
        return None, exc


@counted("decode_random_text")
@FUZZ
@given(st.text(max_size=200))
def test_fuzz_decode_random_text(text):
    count("decode_random_text")
    result, _ = call(irg.decode_jwt_payload, text)
    if result is not None:
        assert isinstance(result, dict)


@counted("decode_expiry_jwt_like")
@FUZZ
@given(jwt_like)
def test_fuzz_decode_and_expiry_jwt_like(token):
    count("decode_expiry_jwt_like")
    claims, _ = call(irg.decode_jwt_payload, token)
    if claims is not None:
        assert isinstance(claims, dict)
    exp, _ = call(irg.token_expiry, token)
    if exp is not None:
        assert isinstance(exp, (int, float)) and not isinstance(exp, bool)
        assert exp == exp and abs(exp) != float("inf")
        assert claims is not None and claims.get("exp") == exp


@counted("expiry_random_claims")
@FUZZ
@given(st.tuples(segments, claim_sets, segments))
def test_fuzz_expiry_random_claims(parts):
    count("expiry_random_claims")
    header, claims, signature = parts
    token = ".".join([header, payload_segment(claims), signature])
    exp, err = call(irg.token_expiry, token)
    good = claims.get("exp")
    numeric = (isinstance(good, (int, float)) and not isinstance(good, bool)
               and good == good and abs(good) != float("inf"))
    if exp is not None:
        assert numeric and exp == good
    elif numeric and abs(good) < SANE_EXP and "." not in header + signature:
        # a well-formed three-part token with a numeric exp must decode; a huge
        # one (after the year 5000) may be refused like NaN and Infinity
        assert err is not None
        raise AssertionError("numeric exp %r refused: %s" % (good, err))


@counted("extract_random_bytes")
@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_extract_random_bytes(body):
    count("extract_random_bytes")
    token, _ = call(irg.extract_access_token, body)
    if token is not None:
        assert isinstance(token, str)


@counted("extract_random_json")
@FUZZ
@given(json_values)
def test_fuzz_extract_random_json_shapes(value):
    count("extract_random_json")
    token, _ = call(irg.extract_access_token, json.dumps(value).encode())
    if token is not None:
        assert isinstance(token, str)


def claims_token(claims):
    return ".".join(["eyJhbGciOiJSUzI1NiJ9", payload_segment(claims), "c2ln"])


@counted("extract_creds_shapes")
@FUZZ
@given(st.one_of(jwt_like, json_scalars, claim_sets.map(claims_token)))
def test_fuzz_extract_creds_shapes(access_token):
    count("extract_creds_shapes")
    body = json.dumps({"request_id": "r", "lease_id": "", "renewable": False,
                       "lease_duration": 0, "auth": None, "warnings": None,
                       "data": {"access_token": access_token, "type": "Bearer",
                                "server": "igwn"}}).encode()
    token, _ = call(irg.extract_access_token, body, now=NOW)
    if token is not None:
        assert isinstance(token, str)
        exp = irg.token_expiry(token)
        assert exp > NOW


def good_body():
    now = int(NOW)
    claims = {"iss": "https://cilogon.org/igwn", "sub": "robot@ligo.org", "aud": "ANY",
              "scope": "read:/frames", "iat": now, "nbf": now, "exp": now + 10800,
              "jti": "j", "ver": "scitoken:2.0"}
    token = ".".join([b64url(json.dumps({"alg": "RS256", "kid": "k"})),
                      b64url(json.dumps(claims)), b64url(os.urandom(64))])
    return json.dumps({"request_id": "r", "lease_id": "", "renewable": False,
                       "lease_duration": 0, "auth": None, "warnings": None,
                       "wrap_info": None,
                       "data": {"access_token": token, "type": "Bearer",
                                "expire_time": "2030-01-01T00:00:00Z",
                                "server": "igwn"}}).encode()


GOOD_BODY = good_body()


@counted("extract_mutated_response")
@FUZZ
@given(st.data())
def test_fuzz_extract_mutated_creds_response(data):
    """A valid creds response, with bytes flipped, inserted, deleted or truncated."""
    count("extract_mutated_response")
    body = bytearray(GOOD_BODY)
    for _ in range(data.draw(st.integers(min_value=1, max_value=6))):
        if not body:
            break
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate", "set"]))
        pos = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
        if op == "flip":
            body[pos] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
        elif op == "insert":
            body[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del body[pos:pos + data.draw(st.integers(min_value=1, max_value=20))]
        elif op == "truncate":
            del body[pos:]
        else:
            body[pos] = data.draw(st.sampled_from(b'{}[]".,:\\=\x00\xff'))
    token, _ = call(irg.extract_access_token, bytes(body), now=NOW)
    if token is not None:
        assert isinstance(token, str)
        assert irg.token_expiry(token) > NOW



# ------------------------------------------------------- differential: fast path vs full run
#
# The fast path (fast_path(argv), at the top of the module) may only say "fresh" where
# the full run (main(argv)) finds the token fresh and exits 0.  Both run in-process on
# the same token file and command line, with no keytab in the environment: the full
# run exits 0 only when it finds the token fresh (else 3 for the keytab, or 2 for a
# usage error), and never reaches the network.

DIFF_EXAMPLES = int(os.environ.get("FUZZ_DIFF_EXAMPLES", "400"))
DIFF = settings(max_examples=DIFF_EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
TOOL_FILE = os.path.join(REPO, "igwn_robot_get.py")
DIFF_STATE = {}
DIFF_STATS = {"examples": 0, "fast_fresh": 0, "full_fresh": 0}
FAR = int(time.time()) + 30 * 86400
HEADER = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9"
ISOLATED_ENV = ("KRB5_KTNAME", "KRB5CCNAME", "BEARER_TOKEN", "BEARER_TOKEN_FILE",
                "XDG_RUNTIME_DIR", "HTTPS_PROXY", "https_proxy", "IGWN_ROBOT_GET_IMAGE")


def checkout_module():
    """This checkout's igwn_robot_get.py, loaded with importlib, never as __main__."""
    if "module" not in DIFF_STATE:
        name = "igwn_robot_get_differential"
        spec = importlib.util.spec_from_file_location(name, TOOL_FILE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        DIFF_STATE["module"] = module
        directory = tempfile.mkdtemp(prefix="igwn-differential-")
        DIFF_STATE["dir"] = directory
        os.mkdir(os.path.join(directory, "home"), 0o700)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        DIFF_STATE["unreachable"] = "https://127.0.0.1:%d" % sock.getsockname()[1]
        sock.close()
        paths = {"{T}": os.path.join(directory, "bt_u%d" % os.geteuid()),
                 "{S}": os.path.join(directory, "stale"),
                 "{F}": os.path.join(directory, "fresh"),
                 "{M}": os.path.join(directory, "missing")}
        DIFF_STATE["paths"] = paths
        for key, lifetime in (("{S}", -600), ("{F}", 10800)):
            claims = {"sub": "robot", "exp": int(time.time()) + lifetime}
            with open(paths[key], "w") as handle:
                handle.write(".".join([HEADER, b64url(json.dumps(claims)), "c2ln"]) + "\n")
            os.chmod(paths[key], 0o600)
    return DIFF_STATE["module"]


@pytest.fixture(scope="module", autouse=True)
def _remove_differential_dir():
    yield
    if "dir" in DIFF_STATE:
        import shutil
        shutil.rmtree(DIFF_STATE["dir"], ignore_errors=True)


@contextlib.contextmanager
def isolated(env_kind):
    """os.environ without a keytab, pointing the default token path at {T}."""
    saved = dict(os.environ)
    directory = DIFF_STATE["dir"]
    for key in ISOLATED_ENV:
        os.environ.pop(key, None)
    os.environ["HOME"] = os.path.join(directory, "home")
    os.environ["KRB5_CONFIG"] = os.path.join(directory, "no-krb5.conf")
    if env_kind == "bearer_token_file":
        os.environ["BEARER_TOKEN_FILE"] = DIFF_STATE["paths"]["{T}"]
    else:
        os.environ["XDG_RUNTIME_DIR"] = directory
    sigterm = signal.getsignal(signal.SIGTERM)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield err
    finally:
        signal.signal(signal.SIGTERM, sigterm)
        logging.getLogger("igwn-robot-get").handlers[:] = []
        os.environ.clear()
        os.environ.update(saved)


def _offset(k):
    """now + k thousand seconds + 500: never within seconds of a --minsecs under test."""
    return int(time.time()) + k * 1000 + 500


FULLWIDTH = str.maketrans("0123456789", "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17"
                                        "\uff18\uff19")
ARABIC = str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667"
                                     "\u0668\u0669")
offsets = st.integers(min_value=-200, max_value=200)
exp_literals = st.one_of(
    offsets.map(lambda k: str(_offset(k))),
    offsets.map(lambda k: "%d.5" % _offset(k)),
    offsets.map(lambda k: "%de0" % _offset(k)),
    offsets.map(lambda k: "%.9e" % _offset(k)),
    offsets.map(lambda k: "0%d" % _offset(k)),             # leading zero: not JSON
    offsets.map(lambda k: "+%d" % _offset(k)),             # not JSON
    offsets.map(lambda k: "-%d" % _offset(k)),
    offsets.map(lambda k: '"%d"' % _offset(k)),            # a string
    offsets.map(lambda k: "[%d]" % _offset(k)),
    offsets.map(lambda k: str(_offset(k)).translate(FULLWIDTH)),
    offsets.map(lambda k: str(_offset(k)).translate(ARABIC)),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "true", "false", "null", "{}",
                     "0", "9" * 30, "1" + "0" * 17, "99999999999999", "-0", "1e10", ".5",
                     "5.", str(FAR), "%d.0" % FAR]),
)
whitespace = st.sampled_from(["", "", " ", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c",
                              "\xa0", "\u2003", "\x00"])
TEMPLATES = [
    '{{{w}"exp"{w}:{w}{e}{w}}}',
    '{{"sub":{w}"robot",{w}"exp":{w}{e}{w}}}',
    '{{"exp":{w}{e},{w}"sub":"robot"}}',
    '{{"act":{w}{{"exp":{w}{e}}}}}',                       # nested only: no exp
    '{{"act":{{"exp":{e}}},"exp":{e2}}}',
    '{{"exp":{e2},"act":{{"exp":{e}}}}}',
    '[{{"exp":{e}}}]',
    '{{"a":"\\"exp\\": {e}"}}',                            # "exp" inside a string
    '{{"a":"x\\\\","exp":{e}}}',
    '{{"exp":{e},"exp":{e2}}}',                            # duplicate: json keeps the last
    '{{"\\u0065xp":{e}}}',                                 # an escaped "exp"
    '{{"e\\u0078p":{e}}}',
    '{{"\\u0065xp":{e},"exp":{e2}}}',
    '{{"exp":{e2},"\\u0065xp":{e}}}',
    '{{"exp ":{e}}}',
    '{{"EXP":{e}}}',
    '{{"sub":"r\u00f6bot \u2603","exp":{e}}}',
    '{{"\u00e9xp":{e}}}',
    '{{"exp":{e}',                                         # truncated
    '{{"exp":{e},}}',
    '{{"exp":{e}}} trailing',
    '{{"exp":{e}}}}}',
    '{{exp:{e}}}',
    "{{'exp':{e}}}",
    '{{"exp":{e}{e2}}}',
    '{{"exp"::{e}}}',
    '{{"sub":"???","exp":{e}}}',                           # base64 of this has "/"
]
payload_texts = st.one_of(
    st.builds(lambda t, e, e2, w: t.format(e=e, e2=e2, w=w),
              st.sampled_from(TEMPLATES), exp_literals, exp_literals, whitespace),
    st.builds(lambda extra, k, ascii_only: json.dumps(dict(extra, exp=_offset(k)),
                                                      ensure_ascii=ascii_only),
              st.dictionaries(st.text(max_size=6), json_values, max_size=3), offsets,
              st.booleans()),
)


def encode_payload(text, how):
    data = text.encode("utf-8", "surrogatepass")
    url = b64url(data)
    half = len(url) // 2
    return {"url": url,
            "padded": url + "=" * (-len(url) % 4 or 2),
            "std": base64.b64encode(data).decode().rstrip("="),
            "junk": url[:half] + "%" + url[half:],
            "space": url[:half] + " " + url[half:],
            "newline": url[:half] + "\n" + url[half:],
            "dot": url[:half] + "." + url[half:],
            "raw": text}[how]


plain_tokens = st.builds(
    lambda extra, k: (".".join([HEADER, b64url(json.dumps(dict(extra, exp=_offset(k)))),
                                "c2lnbmF0dXJl"]) + "\n").encode(),
    st.fixed_dictionaries({}, optional={"sub": st.just("robot/ci.ligo.org"),
                                        "scope": st.just("read:/frames"),
                                        "nbf": st.integers(0, 2 ** 40)}),
    st.integers(min_value=-20, max_value=200))
token_files = st.one_of(
    plain_tokens,
    plain_tokens,
    st.builds(lambda payload, how, header, sig, prefix, suffix:
              (prefix + ".".join(p for p in (header, encode_payload(payload, how), sig)
                                 if p is not None) + suffix).encode("utf-8", "surrogatepass"),
              payload_texts,
              st.sampled_from(["url"] * 6 + ["padded", "std", "junk", "space", "newline",
                                             "dot", "raw"]),
              st.sampled_from([HEADER] * 4 + ["", "h", None]),
              st.sampled_from(["c2lnbmF0dXJl"] * 4 + ["", "a.b", "%%", None]),
              st.sampled_from([""] * 4 + [" ", "\n", "\t", "\ufeff", "\x00"]),
              st.sampled_from(["\n"] * 4 + ["", "\r\n", "\n\n", " \n", "\nsecond\n",
                                            "\x00"])),
    st.binary(max_size=60),
)

PATH_VALUES = ["{T}"] * 6 + ["{S}", "{F}", "{M}", "-v", "", "{T}x"]
MINSECS_VALUES = ["60", "60s", "1m", "1.5h", "1d", "90", "3600", "0", "99999", "7200", " 60",
                  "60 ", "-5", "1e3", "0x10", "\u0666\u0660", "\uff16\uff10", "60S", ".5h",
                  "1_000", "", "00060", "+60", "1.5", "2h", "5400"]
OTHER_PIECES = [
    ["--nooidc"], ["--no-browser"], ["--noo"], ["--no"], ["--timeout", "5"],
    ["--timeout", "banana"], ["--timeout", "0"], ["--timeout", "1e400"], ["--timeout=5s"],
    ["--kdc-timeout", "5"], ["--kdc-timeout", "-1"], ["--jitter", "0"], ["--jitter", "x"],
    ["-a", "vault.example.org"], ["-a", "a..b"], ["-a", "[::1"], ["--vaultserver=v.example"],
    ["-a", "http://insecure.example"], ["--cafile", "/nonexistent"], ["--capath", "/none"],
    ["-i", "igwn"], ["--issuer=igwn"], ["-r", "robot"], ["--credkey", "x"],
    ["--audience", "x"], ["--scopes", "read:/x"], ["--vaulttokenfile", "none"],
    ["--vaulttokenttl", "7d"], ["--vaulttokenminttl", "30d"], ["--oidc-timeout", "10m"],
    ["--web-open-command", "true"], ["--log-format", "json"], ["--log-format", "xml"],
    ["--log-format=text"], ["--mode", "0600"], ["--mode", "0644"], ["--mode", "0640"],
    ["-k", "/nonexistent"], ["--bogus"], ["-x"], ["--show"], ["--json"], ["--condor"],
    ["-h"], ["--help"], ["-V"], ["--version"], ["--status-file", "{M}"],
    ["--metrics-file", "{M}"], ["--on-change", "true"], ["robot/ci.ligo.org"], ["a", "b"],
    ["--"], ["--", "robot"], ["-o"], ["-m"], ["--timeout"], ["-"], ["-ov"],
]
VERBOSITY = [["-v"], ["-vv"], ["-vvv"], ["-vvvv"], ["-q"], ["--quiet"], ["-vq"], ["-qv"],
             ["--verbose"], ["--verb"], ["-v", "-v"], ["-vx"]]

outfile_pieces = st.one_of(
    st.builds(lambda o, p: [o, p],
              st.sampled_from(["-o"] * 4 + ["--outfile", "--bearertokenfile", "--out",
                                            "--outf", "--bearer"]),
              st.sampled_from(PATH_VALUES)),
    st.builds(lambda o, p: [o + "=" + p],
              st.sampled_from(["--outfile", "--bearertokenfile", "--out", "-o"]),
              st.sampled_from(PATH_VALUES)),
    st.sampled_from(PATH_VALUES).map(lambda p: ["-o" + p]),
)
minsecs_pieces = st.one_of(
    st.builds(lambda o, v: [o, v], st.sampled_from(["-m"] * 3 + ["--minsecs", "--min",
                                                                 "--mins"]),
              st.sampled_from(MINSECS_VALUES)),
    st.builds(lambda o, v: [o + "=" + v], st.sampled_from(["--minsecs", "--min"]),
              st.sampled_from(MINSECS_VALUES)),
    st.sampled_from(MINSECS_VALUES).map(lambda v: ["-m" + v]),
)
pieces = st.one_of(outfile_pieces, minsecs_pieces, st.sampled_from(VERBOSITY),
                   st.sampled_from(OTHER_PIECES))
simple_lines = st.builds(
    lambda out, minsecs, verbose: (["-o", "{T}"] if out else []) + minsecs + verbose,
    st.booleans(), st.one_of(st.just([]), minsecs_pieces),
    st.sampled_from([[], ["-v"], ["-vv"], ["-vvv"], ["-q"]]))
command_lines = st.one_of(
    simple_lines,
    simple_lines,
    st.lists(pieces, max_size=5).map(lambda ps: [a for p in ps for a in p]),
    st.builds(lambda a, b: a + b, simple_lines,
              st.lists(pieces, min_size=1, max_size=3).map(lambda ps: [a for p in ps
                                                                       for a in p])),
)
env_kinds = st.sampled_from(["bearer_token_file", "xdg"])


def _payload_jwt(payload_text):
    return (".".join([HEADER, b64url(payload_text), "c2lnbmF0dXJl"]) + "\n").encode()


KNOWN_CASES = [   # each one made the fast path of igwn-robot-get 1.0.0 say "fresh" wrongly
    (_payload_jwt('{"act": {"exp": %d}}' % FAR), ["-o", "{T}", "-v"]),
    (_payload_jwt('{"exp": %d}' % FAR), ["-o", "{T}", "--outfile", "{S}"]),
    (_payload_jwt('{"exp": %d}' % (int(time.time()) + 7200)),
     ["-o", "{T}", "-m", "60", "--minsecs", "99999"]),
    (_payload_jwt('{"exp": %d}' % FAR), ["-o", "{T}", "--timeout", "banana"]),
    (_payload_jwt('{"exp":\x0c%d}' % FAR), ["-o", "{T}"]),
    (_payload_jwt('{"exp": 0%d}' % FAR), ["-o", "{T}"]),
    (_payload_jwt('{"exp": %d' % FAR), ["-o", "{T}"]),
    (_payload_jwt('{"exp": %d,}' % FAR), ["-o", "{T}"]),
    ((HEADER + "." + encode_payload('{"exp": %d}' % FAR, "junk") + ".c2ln\n").encode(),
     ["-o", "{T}"]),
    ((HEADER + "." + encode_payload('{"sub":"???","exp": %d}' % FAR, "std")
      + ".c2ln\n").encode(), ["-o", "{T}"]),
    (_payload_jwt('{"exp": %d, "exp": 5}' % FAR), ["-o", "{T}"]),
    (_payload_jwt('{"exp": %d}' % FAR), ["-o", "{T}", "--"]),
    (_payload_jwt('{"exp": %d}' % FAR), ["--out", "{T}"]),
]


def _full_args(argv):
    """argv for the full run: an unreachable Vault added unless argv names one (which
    would then be overridden) or ends its options with --."""
    named = any(a == "--" or a.startswith(("-a", "--vaults")) for a in argv)
    return argv if named else argv + ["-a", DIFF_STATE["unreachable"]]


def _differential(content, argv, env_kind):
    module = checkout_module()
    DIFF_STATS["examples"] += 1
    paths = DIFF_STATE["paths"]
    with open(paths["{T}"], "wb") as handle:
        handle.write(content)
    os.chmod(paths["{T}"], 0o600)
    for key in ("{M}",):
        if os.path.lexists(paths[key]):
            os.unlink(paths[key])
    args = []
    for arg in argv:
        for key, path in paths.items():
            arg = arg.replace(key, path)
        args.append(arg)
    with isolated(env_kind):
        fast = module.fast_path(list(args))
    assert fast in (True, False), "fast_path returned %r" % (fast,)
    with isolated(env_kind) as err:
        try:
            code = module.main(_full_args(list(args)))
        except SystemExit as exc:           # --help, --version: not a freshness answer
            code = "SystemExit(%r)" % (exc.code,)
    DIFF_STATS["fast_fresh"] += fast
    DIFF_STATS["full_fresh"] += code == 0
    if fast:
        assert code == 0, (
            "the fast path says fresh, the full run exits %s\nargv: %r\nenv: %s\n"
            "token file: %r\nfull run's stderr: %s"
            % (code, args, env_kind, content[:300], err.getvalue()[-1000:]))


def _with_known_cases(test):
    for content, argv in KNOWN_CASES:
        test = example(content=content, argv=argv, env_kind="bearer_token_file")(test)
    return test


@DIFF
@_with_known_cases
@given(content=token_files, argv=command_lines, env_kind=env_kinds)
def _fuzz_fast_path_against_full_run(content, argv, env_kind):
    _differential(content, argv, env_kind)


def test_fuzz_fast_path_never_fresher_than_full_run():
    """Differential: wherever fast_path(argv) says fresh, main(argv) exits 0."""
    before = dict(DIFF_STATS)
    _fuzz_fast_path_against_full_run()
    ran = {k: DIFF_STATS[k] - before[k] for k in DIFF_STATS}
    print("\ndifferential fast path / full run: %s" % json.dumps(ran, sort_keys=True))
    assert ran["examples"] >= DIFF_EXAMPLES, ran
    # a test whose cases are never fresh could not catch anything
    assert ran["full_fresh"] >= DIFF_EXAMPLES // 20, ran
    assert ran["fast_fresh"] >= 1, ran
