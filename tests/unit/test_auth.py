"""Bearer tokens: HS256 only, `sub` of 1 to 64 characters, `exp` honoured even when cached."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest

from seckill import auth
from seckill.auth import MAX_TOKEN_LENGTH, Principal, TokenVerifier, mint_token, require_operator
from seckill.errors import Forbidden, Unauthorized

SECRET = "unit-test-secret-" + "z" * 40


def sign(claims: dict[str, object], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def _seg(data: object) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jws(header: object, claims: object, *, digest: str = "sha256",
        secret: str = SECRET) -> str:
    """A JWS built by hand, so that headers PyJWT would never write can be tried."""
    signing = f"{_seg(header)}.{_seg(claims)}"
    mac = hmac.new(secret.encode(), signing.encode(), getattr(hashlib, digest)).digest()
    return f"{signing}.{_seg(mac)}"


def test_a_hand_built_token_verifies() -> None:
    token = jws({"alg": "HS256", "typ": "JWT"}, {"sub": "alice", "exp": _future()})
    assert TokenVerifier(SECRET).verify(token) == Principal("alice", False)


def test_minted_tokens_verify() -> None:
    verifier = TokenVerifier(SECRET)
    assert verifier.verify(mint_token(SECRET, "alice")) == Principal("alice", False)
    assert verifier.verify(mint_token(SECRET, "ops", operator=True)) == Principal("ops", True)
    claims = jwt.decode(mint_token(SECRET, "bob", ttl_s=120, now=1_000), SECRET,
                        algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {"sub": "bob", "iat": 1_000, "exp": 1_120}


@pytest.mark.parametrize("header", ["Bearer {t}", "bearer {t}", "BEARER {t}", "Bearer  {t} "])
def test_bearer_header_forms(header: str) -> None:
    token = mint_token(SECRET, "alice")
    assert TokenVerifier(SECRET).verify_header(header.format(t=token)).user_id == "alice"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic YTpi", "Token {t}",
                                    "{t}", "Bearer x.y.z"])
def test_bad_headers(header: str | None) -> None:
    token = mint_token(SECRET, "alice")
    with pytest.raises(Unauthorized) as info:
        TokenVerifier(SECRET).verify_header(None if header is None else header.format(t=token))
    assert (info.value.status, info.value.code) == (401, "unauthorized")


def _future() -> int:
    return int(time.time()) + 600


@pytest.mark.parametrize("token", [
    pytest.param(lambda: sign({"sub": "a", "exp": _future()}, "other-secret-" + "q" * 40),
                 id="other-secret"),
    pytest.param(lambda: jwt.encode({"sub": "a", "exp": _future()}, None, algorithm="none"),
                 id="alg-none"),
    pytest.param(lambda: sign({"exp": _future()}), id="no-sub"),
    pytest.param(lambda: sign({"sub": "", "exp": _future()}), id="empty-sub"),
    pytest.param(lambda: sign({"sub": "u" * 65, "exp": _future()}), id="sub-65"),
    pytest.param(lambda: sign({"sub": 7, "exp": _future()}), id="sub-int"),
    pytest.param(lambda: sign({"sub": "a"}), id="no-exp"),
    pytest.param(lambda: sign({"sub": "a", "exp": "soon"}), id="exp-text"),
    pytest.param(lambda: sign({"sub": "a", "exp": int(time.time()) - 31}), id="expired"),
    pytest.param(lambda: sign({"sub": "a", "exp": _future(), "nbf": _future()}), id="nbf"),
    pytest.param(lambda: sign({"sub": "a", "exp": _future(), "pad": "p" * MAX_TOKEN_LENGTH}),
                 id="too-long"),
    pytest.param(lambda: "not-a-token", id="garbage"),
    pytest.param(lambda: sign({"sub": "a", "exp": _future(), "iat": _future()}),
                 id="issued-in-the-future"),
    pytest.param(lambda: sign({"sub": "a", "exp": True}), id="exp-bool"),
    pytest.param(lambda: sign({"sub": "a", "exp": None}), id="exp-null"),
    pytest.param(lambda: sign({"sub": ["a"], "exp": _future()}), id="sub-list"),
    pytest.param(lambda: jws({"alg": "HS512"}, {"sub": "a", "exp": _future()},
                             digest="sha512"), id="hs512"),
    pytest.param(lambda: jws({"alg": "hs256"}, {"sub": "a", "exp": _future()}),
                 id="alg-lowercase"),
    pytest.param(lambda: jws({"typ": "JWT"}, {"sub": "a", "exp": _future()}), id="no-alg"),
    pytest.param(lambda: jws({"alg": "HS256", "crit": ["exp"]}, {"sub": "a",
                                                                 "exp": _future()}),
                 id="crit-header"),
    pytest.param(lambda: jws(["HS256"], {"sub": "a", "exp": _future()}), id="header-list"),
    pytest.param(lambda: jws({"alg": "HS256"}, ["a"]), id="claims-list"),
    pytest.param(lambda: jws({"alg": "HS256"}, b"not json"), id="claims-not-json"),
    pytest.param(lambda: jws({"alg": "HS256"}, {"sub": "a", "exp": _future()}) + ".x",
                 id="four-segments"),
    pytest.param(lambda: jws({"alg": "HS256"}, {"sub": "a", "exp": _future()}) + "=",
                 id="padded"),
    pytest.param(lambda: " " + mint_token(SECRET, "a"), id="leading-space"),
    pytest.param(lambda: mint_token(SECRET, "a").replace(".", "+/.", 1), id="not-url-safe"),
])
def test_bad_tokens(token: object) -> None:
    with pytest.raises(Unauthorized):
        TokenVerifier(SECRET).verify(token())  # type: ignore[operator]


def test_subject_of_64_characters_is_fine() -> None:
    assert TokenVerifier(SECRET).verify(mint_token(SECRET, "u" * 64)).user_id == "u" * 64


def test_leeway_is_honoured_and_bounded() -> None:
    just_expired = sign({"sub": "a", "exp": int(time.time()) - 10})
    assert TokenVerifier(SECRET, leeway_s=30).verify(just_expired).user_id == "a"
    with pytest.raises(Unauthorized):
        TokenVerifier(SECRET, leeway_s=0).verify(just_expired)


def test_a_token_good_before_is_refused_once_past_exp(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = TokenVerifier(SECRET, leeway_s=30)
    now = time.time()
    token = mint_token(SECRET, "alice", ttl_s=100, now=now - 90)  # exp = now + 10
    assert verifier.verify(token).user_id == "alice"

    monkeypatch.setattr(auth.time, "time", lambda: now + 39)  # within exp + leeway
    assert verifier.verify(token).user_id == "alice"
    monkeypatch.setattr(auth.time, "time", lambda: now + 41)  # past exp + leeway
    with pytest.raises(Unauthorized, match="expired"):
        verifier.verify(token)


def test_good_tokens_seen_before_do_not_let_a_forgery_through() -> None:
    verifier = TokenVerifier(SECRET)
    tokens = [mint_token(SECRET, f"user{i}") for i in range(5)]
    for _ in range(2):
        assert [verifier.verify(t).user_id for t in tokens] == [f"user{i}" for i in range(5)]
    forged = sign({"sub": "user0", "exp": _future()}, "other-secret-" + "q" * 40)
    with pytest.raises(Unauthorized):
        verifier.verify(forged)


@pytest.mark.parametrize("header", ["Bearer ", "Bearer    ", "bearer {t}", "BEARER  {t} "])
def test_bearer_scheme_variants(header: str) -> None:
    token = mint_token(SECRET, "alice")
    verifier = TokenVerifier(SECRET)
    if "{t}" in header:
        assert verifier.verify_header(header.format(t=token)).user_id == "alice"
    else:
        with pytest.raises(Unauthorized):
            verifier.verify_header(header)


def test_require_operator() -> None:
    assert require_operator(Principal("ops", True)) == Principal("ops", True)
    with pytest.raises(Forbidden) as info:
        require_operator(Principal("alice", False))
    assert (info.value.status, info.value.code) == (403, "forbidden")
