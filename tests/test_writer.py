"""Unit tests of the token writer and the hand-made JWT decoding.

write_atomically: the new file appears whole or not at all, 0600 whatever the
umask, the old file survives every failure, a symlink at the target is
replaced and never followed, /dev/stdout and /dev/fd/N are written directly.
decode_jwt_payload / token_expiry / extract_access_token: malformed input
always ends in UnusableToken (exit code 9), never another exception.
"""

import base64
import json
import os
import stat
import sys
import threading
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import igwn_robot_get as irg  # noqa: E402


def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(payload, header=None, signature="c2lnbmF0dXJl"):
    header = header or {"alg": "RS256", "typ": "JWT", "kid": "test"}
    if not isinstance(payload, (str, bytes)):
        payload = json.dumps(payload)
    return ".".join([b64url(json.dumps(header)), b64url(payload), signature])


def claims(lifetime=3600, **extra):
    now = int(time.time())
    base = {"iss": "https://cilogon.org/igwn", "sub": "robot@ligo.org", "aud": "ANY",
            "scope": "read:/frames", "iat": now, "nbf": now, "exp": now + lifetime,
            "jti": "https://cilogon.org/oauth2/test", "ver": "scitoken:2.0"}
    base.update(extra)
    return base


def creds_body(token, **data):
    data = dict({"access_token": token, "type": "Bearer", "server": "igwn"}, **data)
    return json.dumps({"request_id": "x", "lease_id": "", "renewable": False,
                       "lease_duration": 0, "data": data, "auth": None,
                       "warnings": None, "wrap_info": None}).encode()


@pytest.fixture
def umask0():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def listing(directory):
    return sorted(os.listdir(directory))


# -------------------------------------------------------------- write_atomically

def test_write_creates_file_0600_under_umask_000(tmp_path, umask0):
    target = tmp_path / "bt"
    irg.write_atomically(str(target), "token\n")
    assert target.read_text() == "token\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert listing(tmp_path) == ["bt"]


def test_write_honours_mode_argument(tmp_path):
    target = tmp_path / "status.json"
    old = os.umask(0o077)
    try:
        irg.write_atomically(str(target), "{}\n", mode=0o644)
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_write_replaces_existing_file_with_a_new_inode(tmp_path, umask0):
    target = tmp_path / "bt"
    target.write_text("old\n")
    os.chmod(target, 0o644)
    inode = target.stat().st_ino
    irg.write_atomically(str(target), "new\n")
    assert target.read_text() == "new\n"
    assert target.stat().st_ino != inode, "the target was rewritten in place, not renamed over"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert listing(tmp_path) == ["bt"]


def test_write_exact_bytes_unicode_and_large(tmp_path):
    target = tmp_path / "bt"
    data = "é" * 200000 + "\n"
    irg.write_atomically(str(target), data)
    assert target.read_bytes() == data.encode("utf-8")


def test_write_missing_directory_is_output_error(tmp_path):
    target = tmp_path / "no" / "such" / "bt"
    with pytest.raises(irg.OutputError) as info:
        irg.write_atomically(str(target), "token\n")
    assert info.value.exit_code == 8
    assert "\n" not in str(info.value)
    assert listing(tmp_path) == []


def test_write_onto_a_directory_fails_and_leaves_no_temp(tmp_path):
    target = tmp_path / "bt"
    target.mkdir()
    (target / "inside").write_text("keep")
    with pytest.raises(irg.OutputError):
        irg.write_atomically(str(target), "token\n")
    assert (target / "inside").read_text() == "keep"
    assert listing(tmp_path) == ["bt"]


@pytest.mark.parametrize("failing", ["fsync", "replace", "write", "fchmod"])
def test_write_failure_keeps_old_file_and_removes_temp(tmp_path, monkeypatch, failing):
    target = tmp_path / "bt"
    target.write_text("old token\n")
    os.chmod(target, 0o600)
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(irg.os, failing, boom)
    with pytest.raises(irg.OutputError) as info:
        irg.write_atomically(str(target), "new token\n")
    monkeypatch.undo()
    assert info.value.exit_code == 8
    assert target.read_bytes() == before
    assert listing(tmp_path) == ["bt"], "temporary file left behind"


def test_write_replaces_symlink_without_following_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "bt"
    os.symlink(str(victim), str(target))
    irg.write_atomically(str(target), "token\n")
    assert victim.read_text() == "precious\n"
    assert not target.is_symlink()
    assert target.read_text() == "token\n"


def test_write_dangling_symlink_not_followed(tmp_path):
    target = tmp_path / "bt"
    elsewhere = tmp_path / "elsewhere"
    os.symlink(str(elsewhere), str(target))
    irg.write_atomically(str(target), "token\n")
    assert not elsewhere.exists()
    assert target.read_text() == "token\n"


def test_write_dev_fd_directly(tmp_path):
    read_fd, write_fd = os.pipe()
    try:
        irg.write_atomically("/dev/fd/%d" % write_fd, "piped token\n")
        os.close(write_fd)
        write_fd = None
        with os.fdopen(read_fd, "r") as handle:
            read_fd = None
            assert handle.read() == "piped token\n"
    finally:
        for fd in (read_fd, write_fd):
            if fd is not None:
                os.close(fd)
    assert listing(tmp_path) == []


def test_write_dev_stdout_directly(capfd):
    irg.write_atomically("/dev/stdout", "stdout token\n")
    out, _ = capfd.readouterr()
    assert out == "stdout token\n"


def test_readers_never_see_partial_file(tmp_path):
    target = tmp_path / "bt"
    tokens = ["%d:%s\n" % (i, "x" * (5000 + 97 * i)) for i in range(150)]
    irg.write_atomically(str(target), tokens[0])
    stats = {"reads": 0, "bad": 0, "missing": 0}
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                with open(str(target), "rb") as handle:
                    data = handle.read()
            except FileNotFoundError:
                stats["missing"] += 1
                continue
            stats["reads"] += 1
            if data.decode() not in tokens:
                stats["bad"] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for token in tokens[1:]:
            irg.write_atomically(str(target), token)
    finally:
        stop.set()
        thread.join()
    assert stats["missing"] == 0 and stats["bad"] == 0, stats
    assert stats["reads"] > 0


# -------------------------------------------------------------- decode_jwt_payload

MALFORMED = [
    "",
    " ",
    "\n",
    "abc",
    "a.b",
    "a.b.c.d",
    "..",
    "a..c",
    "eyJ.!!!.sig",
    "eyJ.%%%%.sig",
    "h." + b64url("not json") + ".s",
    "h." + b64url("[1, 2, 3]") + ".s",
    "h." + b64url('"just a string"') + ".s",
    "h." + b64url("null") + ".s",
    "h." + b64url("42") + ".s",
    "h." + b64url(b"\xff\xfe\x00garbage") + ".s",
    "h." + b64url('{"exp": 1') + ".s",
    "h." + "A" + ".s",             # impossible base64 length
    "h." + "AAAAA" + ".s",
    "h." + b64url("[" * 100000 + "]" * 100000) + ".s",   # deep nesting
    "h." + b64url('{"a": ' * 5000 + "1" + "}" * 5000) + ".s",
    "h." + b64url("{}") + "=.s",
    "h.\u00e9\u00e9\u00e9\u00e9.s",
    "h.\x00\x00.s",
]


@pytest.mark.parametrize("token", MALFORMED, ids=range(len(MALFORMED)))
def test_decode_malformed_is_unusable_token(token):
    with pytest.raises(irg.UnusableToken) as info:
        irg.decode_jwt_payload(token)
    assert info.value.exit_code == 9
    message = str(info.value)
    assert message and "\n" not in message
    # one short line that never echoes what it was given (a token's parts are secret)
    assert len(message) < 200, message
    for part in token.split("."):
        if len(part.strip()) >= 6:
            assert part.strip() not in message, (part[:20], message)


def test_decode_good_token_and_whitespace():
    payload = claims(sub="decode-me")
    token = make_jwt(payload)
    assert irg.decode_jwt_payload(token) == payload
    assert irg.decode_jwt_payload(token + "\n") == payload
    assert irg.decode_jwt_payload("  " + token + " \n") == payload


def test_decode_does_not_check_signature():
    payload = claims()
    assert irg.decode_jwt_payload(make_jwt(payload, signature="not-a-signature")) == payload


def test_decode_unicode_claims():
    payload = claims(sub="r\u00f6bot \u2603")
    assert irg.decode_jwt_payload(make_jwt(payload))["sub"] == "r\u00f6bot \u2603"


# -------------------------------------------------------------- token_expiry

@pytest.mark.parametrize("exp", [None, "1700000000", [1], {"a": 1}, True, False])
def test_expiry_not_a_number(exp):
    payload = claims()
    if exp is None:
        del payload["exp"]
    else:
        payload["exp"] = exp
    with pytest.raises(irg.UnusableToken) as info:
        irg.token_expiry(make_jwt(payload))
    assert info.value.exit_code == 9


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_expiry_non_finite(literal):
    payload = '{"sub": "x", "exp": %s}' % literal
    with pytest.raises(irg.UnusableToken):
        irg.token_expiry(make_jwt(payload))


@pytest.mark.parametrize("exp", [1700000000, 1700000000.5, 0])
def test_expiry_numbers(exp):
    assert irg.token_expiry(make_jwt(claims(exp=exp))) == exp


@pytest.mark.parametrize("token", MALFORMED[:12])
def test_expiry_malformed(token):
    with pytest.raises(irg.UnusableToken):
        irg.token_expiry(token)


# -------------------------------------------------------------- extract_access_token

def test_extract_good():
    token = make_jwt(claims())
    assert irg.extract_access_token(creds_body(token)) == token


def test_extract_with_now():
    token = make_jwt(claims(exp=1000))
    assert irg.extract_access_token(creds_body(token), now=999) == token
    with pytest.raises(irg.UnusableToken):
        irg.extract_access_token(creds_body(token), now=1001)


BAD_BODIES = [
    b"",
    b"not json",
    b"\xff\xfe\xfd",
    b"<html>503 Service Unavailable</html>",
    b"[]",
    b"null",
    b"42",
    b'"eyJ"',
    b"{}",
    b'{"data": null}',
    b'{"data": []}',
    b'{"data": "x"}',
    b'{"data": {}}',
    b'{"data": {"access_token": null}}',
    b'{"data": {"access_token": 12345}}',
    b'{"data": {"access_token": ["a.b.c"]}}',
    b'{"data": {"access_token": ""}}',
    b'{"data": {"access_token": "not-a-jwt"}}',
    b'{"errors": ["permission denied"]}',
    b'{"data": {"access_token": "a.b.c"}}',
    b"[" * 100000 + b"]" * 100000,
    creds_body(make_jwt(claims()))[:-5],
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_extract_bad_bodies(body):
    with pytest.raises(irg.UnusableToken) as info:
        irg.extract_access_token(body)
    assert info.value.exit_code == 9
    assert "\n" not in str(info.value)


def test_extract_no_exp():
    payload = claims()
    del payload["exp"]
    with pytest.raises(irg.UnusableToken):
        irg.extract_access_token(creds_body(make_jwt(payload)))


def test_extract_expired():
    with pytest.raises(irg.UnusableToken):
        irg.extract_access_token(creds_body(make_jwt(claims(lifetime=-60))))


def test_extract_error_text_has_no_token():
    payload = claims(lifetime=-60)
    token = make_jwt(payload, signature="SIGNATURE-abcdefghijkl")
    with pytest.raises(irg.UnusableToken) as info:
        irg.extract_access_token(creds_body(token))
    text = str(info.value) + repr(info.value.args)
    assert token not in text
    assert "SIGNATURE-abcdefghijkl" not in text


# -------------------------------------------------------------- redact

def test_redact_jwt_and_vault_tokens():
    jwt = make_jwt(claims())
    text = "got %s and hvs.CAESIJabcdefghijklmnop1234 and s.abcdefghijklmnopqrstuvwx" % jwt
    out = irg.redact(text)
    assert jwt not in out
    assert "hvs.CAESIJabcdefghijklmnop1234" not in out
    assert "s.abcdefghijklmnopqrstuvwx" not in out
    assert "<redacted>" in out
    assert irg.redact("nothing secret here") == "nothing secret here"
