"""Our HS256 check agrees with PyJWT's on every token, good or crafted."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from seckill.auth import TokenVerifier
from seckill.errors import Unauthorized

SECRET = "hs256-test-secret-" + "k" * 60


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw(header: object, claims: object, secret: str = SECRET, alg: str = "HS256") -> str:
    import hashlib
    import hmac
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def _pyjwt_accepts(token: str) -> bool:
    try:
        claims = jwt.decode(token, SECRET, algorithms=["HS256"], leeway=30,
                            options={"require": ["exp", "sub"]})
    except jwt.PyJWTError:
        return False
    sub = claims.get("sub")
    # Our policy on top of PyJWT: a user id is 1 to 64 printable characters.
    return isinstance(sub, str) and 1 <= len(sub) <= 64 and sub.isprintable()


def _ours_accepts(token: str) -> bool:
    try:
        TokenVerifier(SECRET).verify(token)
    except Unauthorized:
        return False
    return True


def _later() -> int:
    return int(time.time()) + 600


CASES = [
    pytest.param(lambda: jwt.encode({"sub": "a", "exp": _later()}, SECRET, "HS256"), id="good"),
    pytest.param(lambda: jwt.encode({"sub": "a", "exp": _later()}, SECRET, "HS512"),
                 id="hs512"),
    pytest.param(lambda: jwt.encode({"sub": "a", "exp": _later()}, None, "none"), id="none"),
    pytest.param(lambda: _raw({"alg": "HS256", "crit": ["x"], "x": 1},
                              {"sub": "a", "exp": _later()}), id="crit"),
    pytest.param(lambda: _raw({"alg": "hs256"}, {"sub": "a", "exp": _later()}), id="alg-case"),
    pytest.param(lambda: _raw({"typ": "JWT"}, {"sub": "a", "exp": _later()}), id="no-alg"),
    pytest.param(lambda: _raw(["HS256"], {"sub": "a", "exp": _later()}), id="header-array"),
    pytest.param(lambda: _raw({"alg": "HS256"}, ["sub", "a"]), id="claims-array"),
    pytest.param(lambda: _raw({"alg": "HS256"}, {"sub": "a", "exp": True}), id="exp-bool"),
    pytest.param(lambda: _raw({"alg": "HS256"}, {"sub": "a", "exp": _later(),
                                                 "iat": _later()}), id="iat-future"),
    pytest.param(lambda: _raw({"alg": "HS256"}, {"sub": "a", "exp": _later(),
                                                 "nbf": "x"}), id="nbf-text"),
    pytest.param(lambda: _raw({"alg": "HS256"}, {"sub": "a", "exp": _later()}) + ".x",
                 id="four-segments"),
    pytest.param(lambda: "." + _raw({"alg": "HS256"}, {"sub": "a", "exp": _later()}),
                 id="empty-segment"),
    pytest.param(lambda: _raw({"alg": "HS256"}, {"sub": "a", "exp": _later()},
                              secret="other" + SECRET), id="other-secret"),
    pytest.param(lambda: _raw({"alg": "HS256"}, {"sub": "a", "exp": _later(),
                                                 "role": "operator"}), id="operator"),
]


@pytest.mark.parametrize("make", CASES)
def test_same_verdict_as_pyjwt(make: object) -> None:
    token = make()  # type: ignore[operator]
    assert _ours_accepts(token) == _pyjwt_accepts(token)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_text_times_are_refused(claim: str) -> None:
    """Stricter than PyJWT, which reads "0" as 0: RFC 7519 times are numbers."""
    assert not _ours_accepts(_raw({"alg": "HS256"}, {"sub": "a", "exp": _later(), claim: "0"}))


def test_padded_segments_are_refused() -> None:
    """Stricter than PyJWT: JWS compact serialization has no base64 padding."""
    assert not _ours_accepts(_raw({"alg": "HS256"}, {"sub": "a", "exp": _later()}) + "=")


def test_a_flipped_signature_bit_is_refused() -> None:
    token = jwt.encode({"sub": "a", "exp": _later()}, SECRET, "HS256")
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[0] ^= 1
    assert not _ours_accepts(f"{head}.{body}.{_b64(bytes(raw))}")


@settings(max_examples=200, deadline=None)
@given(sub=st.one_of(st.text(max_size=70), st.integers(), st.none()),
       exp_offset=st.one_of(st.integers(-100, 100), st.floats(-100, 100), st.none()),
       extra=st.dictionaries(st.sampled_from(["nbf", "iat"]), st.integers(-10**10, 10**10)),
       role=st.one_of(st.none(), st.text(max_size=9)))
def test_random_claims_agree(sub: object, exp_offset: float | None,
                             extra: dict[str, object], role: str | None) -> None:
    # PyJWT truncates a fractional `exp` to whole seconds, we do not: within a second of
    # exp + leeway the two may differ, by design.
    assume(exp_offset is None or abs(exp_offset + 30) > 1)
    claims: dict[str, object] = dict(extra)
    if role is not None:
        claims["role"] = role
    if sub is not None:
        claims["sub"] = sub
    if exp_offset is not None:
        claims["exp"] = time.time() + exp_offset
    token = _raw({"alg": "HS256", "typ": "JWT"}, claims)
    assert _ours_accepts(token) == _pyjwt_accepts(token), claims
