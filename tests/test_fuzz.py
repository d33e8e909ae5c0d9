"""Fuzz the hand-made JWT decoding and the Vault response handling (hypothesis).

Only the module API is fuzzed (no network): decode_jwt_payload, token_expiry
and extract_access_token must either return a value of the promised type or
raise UnusableToken (exit code 9, one line, no token in it), whatever they are
given: random text, random bytes, JWT-like strings built from random JSON, and
valid Vault creds responses mutated byte by byte.
"""

import base64
import json
import os
import sys
import time

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
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


@FUZZ
@given(st.text(max_size=200))
def test_fuzz_decode_random_text(text):
    count("decode_random_text")
    result, _ = call(irg.decode_jwt_payload, text)
    if result is not None:
        assert isinstance(result, dict)


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
    elif numeric and "." not in header + signature:
        # a well-formed three-part token with a numeric exp must decode
        assert err is not None
        raise AssertionError("numeric exp %r refused: %s" % (good, err))


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_extract_random_bytes(body):
    count("extract_random_bytes")
    token, _ = call(irg.extract_access_token, body)
    if token is not None:
        assert isinstance(token, str)


@FUZZ
@given(json_values)
def test_fuzz_extract_random_json_shapes(value):
    count("extract_random_json")
    token, _ = call(irg.extract_access_token, json.dumps(value).encode())
    if token is not None:
        assert isinstance(token, str)


def claims_token(claims):
    return ".".join(["eyJhbGciOiJSUzI1NiJ9", payload_segment(claims), "c2ln"])


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


def test_fuzz_report():
    """Print the number of fuzz cases run in this session (runs last in file order)."""
    total = sum(stats.values())
    print("\nfuzz cases: %d total %s" % (total, json.dumps(stats, sort_keys=True)))
    if stats:
        assert total >= 1000
