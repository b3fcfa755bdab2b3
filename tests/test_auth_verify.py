"""The Authenticator against every credential style and every attack in the issue."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tickwire.auth import (
    Authenticator,
    AuthError,
    AuthSettings,
    Entitlements,
    KeyKind,
    SettingsError,
    authorize,
    codes,
    create_key,
)
from tickwire.auth.nonces import NonceCache
from tickwire.auth.store_sqlite import SqliteKeyStore
from tickwire.model.channels import parse_channel

from .authkit import (
    SECRET,
    Clock,
    alg_none,
    claims_of,
    coinbase_jwt,
    digest,
    forge_hmac,
    load_private,
    new_ec,
    public_pem,
    tamper,
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def make_auth(clock: Clock, **overrides: Any) -> Authenticator:
    settings = AuthSettings(key_store=":memory:", auth_secret=SECRET, **overrides)
    store = SqliteKeyStore(":memory:")
    await store.open()
    return Authenticator(store, settings, clock=clock)


@pytest.fixture
async def auth(clock: Clock) -> AsyncIterator[Authenticator]:
    a = await make_auth(clock)
    yield a
    await a.close()


async def expect(code: str, coro: Any) -> AuthError:
    with pytest.raises(AuthError) as err:
        await coro
    assert err.value.code == code, (err.value.code, err.value.message)
    assert err.value.code in codes.ALL_CODES
    return err.value


# --- gateway tokens (Market Prophit POST /jwt, native) -------------------------------------


async def test_gateway_token_carries_only_what_authorization_needs(
    auth: Authenticator, clock: Clock
) -> None:
    ents = Entitlements(kinds=frozenset({"sentiment"}), symbols=frozenset({"AAPL"}))
    made = await create_key(auth.store, kind=KeyKind.SECRET, user_id="alice", entitlements=ents)
    assert made.secret is not None
    token = await auth.exchange_secret(made.secret)
    claims = claims_of(token)
    assert set(claims) == {"sub", "iat", "exp", "jti", "entitlements"}
    assert claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == 5 * 3600
    assert made.record.secret_hash is not None
    assert made.secret not in token and made.record.secret_hash not in json.dumps(claims)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    p = await auth.verify_gateway_token(token)
    assert (p.user_id, p.entitlements, p.key_name) == ("alice", ents, made.record.name)
    assert p.expires_at == claims["exp"]
    assert authorize(p, parse_channel("sentiment:AAPL")) is None
    denied = authorize(p, parse_channel("sentiment:TSLA"))
    assert denied is not None and denied.code == "forbidden" and "TSLA" in denied.message


async def test_gateway_token_refusals(auth: Authenticator, clock: Clock) -> None:
    made = await create_key(auth.store, kind=KeyKind.SECRET, user_id="alice")
    other = await create_key(auth.store, kind=KeyKind.SECRET, user_id="bob")
    assert made.secret and other.secret
    await expect(codes.UNAUTHORIZED, auth.exchange_secret(made.secret + "x"))
    await expect(codes.UNAUTHORIZED, auth.exchange_secret(""))
    token = await auth.exchange_secret(made.secret)
    claims = claims_of(token)

    # alg none, and a token signed with another secret
    await expect(codes.ALG_NOT_ALLOWED, auth.verify_gateway_token(alg_none(claims)))
    forged = jwt.encode(claims, "another-secret-another-secret-32b!", algorithm="HS256")
    await expect(codes.BAD_SIGNATURE, auth.verify_gateway_token(forged))
    # an EdDSA token (a key the attacker owns) against an HS256 gateway
    ed = ed25519.Ed25519PrivateKey.generate()
    await expect(
        codes.ALG_NOT_ALLOWED, auth.verify_gateway_token(jwt.encode(claims, ed, algorithm="EdDSA"))
    )
    # tampered claims: another user, wider entitlements, later expiry
    await expect(codes.BAD_SIGNATURE, auth.verify_gateway_token(tamper(token, sub="bob")))
    await expect(codes.BAD_SIGNATURE, auth.verify_gateway_token(tamper(token, exp=2**40)))
    # garbage
    await expect(codes.MALFORMED_TOKEN, auth.verify_gateway_token("not.a.jwt"))
    await expect(codes.MALFORMED_TOKEN, auth.verify_gateway_token("x" * 10_000))
    await expect(codes.UNAUTHORIZED, auth.verify_gateway_token(None))
    # iat in the future
    clock.t -= 60
    await expect(codes.TOKEN_NOT_YET_VALID, auth.verify_gateway_token(token))
    clock.t += 60
    # expired: the boundary is exp + leeway
    clock.t = claims["exp"] + 4
    assert (await auth.verify_gateway_token(token)).user_id == "alice"
    clock.t = claims["exp"] + 5
    await expect(codes.TOKEN_EXPIRED, auth.verify_gateway_token(token))


async def test_revoking_a_key_ends_its_tokens(auth: Authenticator) -> None:
    made = await create_key(auth.store, kind=KeyKind.SECRET, user_id="alice")
    assert made.secret
    token = await auth.exchange_secret(made.secret)
    assert (await auth.verify_gateway_token(token)).user_id == "alice"
    await auth.store.revoke(made.record.name, auth.now())
    await expect(codes.KEY_REVOKED, auth.verify_gateway_token(token))
    await expect(codes.KEY_REVOKED, auth.exchange_secret(made.secret))


async def test_only_secret_keys_exchange_for_tokens(auth: Authenticator) -> None:
    pub = await create_key(auth.store, kind=KeyKind.PUBLISHER, user_id="feed")
    assert pub.secret
    await expect(codes.UNAUTHORIZED, auth.exchange_secret(pub.secret))
    p = await auth.verify_secret(pub.secret)
    assert (p.user_id, p.key_name) == ("feed", pub.record.name)


async def test_eddsa_gateway_tokens(clock: Clock, tmp_path: Path) -> None:
    priv = ed25519.Ed25519PrivateKey.generate()
    pem = priv.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "signing.pem").write_bytes(pem)
    a = await make_auth(
        clock, token_algorithm="EdDSA", token_private_key=str(tmp_path / "signing.pem")
    )
    made = await create_key(a.store, kind=KeyKind.SECRET, user_id="alice")
    assert made.secret
    token = await a.exchange_secret(made.secret)
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    jwt.decode(token, priv.public_key(), algorithms=["EdDSA"], options={"verify_exp": False})
    assert (await a.verify_gateway_token(token)).user_id == "alice"
    # HS256 with the master secret is not accepted once EdDSA is configured
    hs = jwt.encode(claims_of(token), SECRET, algorithm="HS256")
    await expect(codes.ALG_NOT_ALLOWED, a.verify_gateway_token(hs))
    await a.close()


def test_bad_token_settings_name_the_field(clock: Clock) -> None:
    store = SqliteKeyStore(":memory:")
    for settings, fragment in [
        (AuthSettings(auth_secret="short"), "secret"),
        (AuthSettings(auth_secret=SECRET, token_algorithm="RS256"), "token_algorithm"),
        (AuthSettings(auth_secret=SECRET, token_algorithm="EdDSA"), "token_private_key"),
    ]:
        with pytest.raises(SettingsError, match=fragment):
            Authenticator(store, settings, clock=clock)


# --- Coinbase client-signed JWTs -------------------------------------------------------------


@pytest.mark.parametrize("kind", [KeyKind.EC, KeyKind.ED25519])
async def test_coinbase_jwt_from_a_created_key(
    auth: Authenticator, clock: Clock, kind: KeyKind
) -> None:
    made = await create_key(
        auth.store, kind=kind, user_id="carol", name=f"organizations/o/apiKeys/{kind.value}"
    )
    assert made.secret
    private = load_private(made.secret)
    token = coinbase_jwt(made.record.name, private, now=clock.t)
    p = await auth.verify_coinbase_jwt(token)
    assert (p.user_id, p.key_name, p.expires_at) == ("carol", made.record.name, clock.t + 120)
    await expect(codes.NONCE_REUSED, auth.verify_coinbase_jwt(token))


async def test_coinbase_attacks(auth: Authenticator, clock: Clock) -> None:
    ec_key = await create_key(auth.store, kind=KeyKind.EC, user_id="carol", name="ec-key")
    ed_key = await create_key(auth.store, kind=KeyKind.ED25519, user_id="carol", name="ed-key")
    assert ec_key.secret and ed_key.secret
    priv, ed_priv = load_private(ec_key.secret), load_private(ed_key.secret)
    now = clock.t

    def good(**kw: Any) -> str:
        return coinbase_jwt("ec-key", priv, now=now, **kw)

    # unknown kid, and a kid that names a secret key (no public key)
    await expect(codes.UNKNOWN_KEY, auth.verify_coinbase_jwt(coinbase_jwt("nope", priv, now=now)))
    sec = await create_key(auth.store, kind=KeyKind.SECRET, user_id="carol", name="sec-key")
    assert sec.secret
    await expect(
        codes.UNKNOWN_KEY, auth.verify_coinbase_jwt(coinbase_jwt("sec-key", priv, now=now))
    )
    # bad signature: signed by another EC key under the right kid
    forged = coinbase_jwt("ec-key", new_ec(), now=now)
    await expect(codes.BAD_SIGNATURE, auth.verify_coinbase_jwt(forged))
    # tampered claims
    await expect(codes.BAD_SIGNATURE, auth.verify_coinbase_jwt(tamper(good(), exp=now + 60)))
    # alg none; HS256 keyed with the public PEM (key confusion); EdDSA on an ec key
    claims = {"sub": "ec-key", "iss": "cdp", "nbf": int(now), "exp": int(now) + 120}
    await expect(
        codes.ALG_NOT_ALLOWED,
        auth.verify_coinbase_jwt(alg_none(claims, kid="ec-key", nonce="n" * 16)),
    )
    pem = ec_key.record.public_key
    assert pem
    confused = forge_hmac(
        {"alg": "HS256", "typ": "JWT", "kid": "ec-key", "nonce": "n" * 16}, claims, pem.encode()
    )
    await expect(codes.ALG_NOT_ALLOWED, auth.verify_coinbase_jwt(confused))
    await expect(
        codes.ALG_NOT_ALLOWED,
        auth.verify_coinbase_jwt(coinbase_jwt("ec-key", ed_priv, now=now, alg="EdDSA")),
    )
    # times: expired, nbf in the future, lifetime over the limit
    await expect(codes.TOKEN_EXPIRED, auth.verify_coinbase_jwt(good(nbf_offset=-200, lifetime=120)))
    await expect(codes.TOKEN_NOT_YET_VALID, auth.verify_coinbase_jwt(good(nbf_offset=60)))
    await expect(codes.LIFETIME_TOO_LONG, auth.verify_coinbase_jwt(good(lifetime=121)))
    await expect(codes.LIFETIME_TOO_LONG, auth.verify_coinbase_jwt(good(lifetime=3600)))
    # claims that do not fit
    await expect(codes.INVALID_CLAIMS, auth.verify_coinbase_jwt(good(iss="someone")))
    wrong_sub = jwt.encode(
        {**claims, "sub": "other"},
        priv,
        algorithm="ES256",
        headers={"kid": "ec-key", "nonce": "x" * 16},
    )
    await expect(codes.INVALID_CLAIMS, auth.verify_coinbase_jwt(wrong_sub))
    no_nonce = jwt.encode(claims, priv, algorithm="ES256", headers={"kid": "ec-key"})
    await expect(codes.INVALID_CLAIMS, auth.verify_coinbase_jwt(no_nonce))
    # revoked
    await auth.store.revoke("ec-key", now)
    await expect(codes.KEY_REVOKED, auth.verify_coinbase_jwt(good()))
    # the ed25519 key still works: nothing above burnt it
    assert (await auth.verify_coinbase_jwt(coinbase_jwt("ed-key", ed_priv, now=now))).user_id


async def test_coinbase_lifetime_is_configurable_and_old_sdks_are_accepted(clock: Clock) -> None:
    a = await make_auth(clock, coinbase_max_lifetime=600.0)
    made = await create_key(a.store, kind=KeyKind.EC, user_id="dan", name="k")
    assert made.secret
    priv = load_private(made.secret)
    assert await a.verify_coinbase_jwt(coinbase_jwt("k", priv, now=clock.t, lifetime=600))
    old = coinbase_jwt("k", priv, now=clock.t, iss="coinbase-cloud")
    assert (await a.verify_coinbase_jwt(old)).user_id == "dan"
    await a.close()


async def test_nonce_is_remembered_for_the_token_lifetime_only(
    auth: Authenticator, clock: Clock
) -> None:
    made = await create_key(auth.store, kind=KeyKind.EC, user_id="erin", name="k")
    assert made.secret
    priv = load_private(made.secret)
    first = coinbase_jwt("k", priv, now=clock.t, nonce="abcdef0123456789")
    await auth.verify_coinbase_jwt(first)
    # same nonce in a new token, within the first token's lifetime: refused
    clock.t += 60
    again = coinbase_jwt("k", priv, now=clock.t, nonce="abcdef0123456789")
    await expect(codes.NONCE_REUSED, auth.verify_coinbase_jwt(again))
    # after the first token (and its leeway) expired, the nonce is forgotten
    clock.t += 70
    later = coinbase_jwt("k", priv, now=clock.t, nonce="abcdef0123456789")
    assert (await auth.verify_coinbase_jwt(later)).user_id == "erin"


def test_nonce_cache_is_bounded() -> None:
    clock = Clock(0.0)
    cache = NonceCache(max_entries=3, max_per_scope=2, clock=clock)
    cache.use("a", "n1", 10.0)
    cache.use("a", "n2", 10.0)
    with pytest.raises(AuthError) as err:
        cache.use("a", "n3", 10.0)  # scope full: refuse, never forget a live nonce
    assert err.value.code == codes.NONCE_CACHE_FULL
    cache.use("b", "n1", 20.0)
    with pytest.raises(AuthError):
        cache.use("c", "n1", 20.0)  # whole cache full
    with pytest.raises(AuthError) as err:
        cache.use("a", "n1", 10.0)
    assert err.value.code == codes.NONCE_REUSED
    clock.t = 10.0  # a's nonces expire
    assert len(cache) == 1
    cache.use("a", "n1", 30.0)
    cache.use("c", "n1", 30.0)


# --- InstaMrkt login + digest ------------------------------------------------------------------


async def test_login_with_password_then_digest(auth: Authenticator, clock: Clock) -> None:
    ents = Entitlements(private=True, symbols=frozenset({"BTC-USD"}))
    await create_key(
        auth.store,
        kind=KeyKind.PASSWORD,
        user_id="frank",
        password="correct horse",
        entitlements=ents,
    )
    await expect(codes.UNAUTHORIZED, auth.login(user_id="frank", password="wrong horse"))
    await expect(codes.UNAUTHORIZED, auth.login(user_id="nobody", password="correct horse"))
    await expect(codes.UNAUTHORIZED, auth.login(user_id="frank"))
    result = await auth.login(user_id="frank", password="correct horse")
    assert result.user_id == "frank" and result.expires_at == clock.t + 86400
    assert result.session_key not in repr(result)
    nonce = str(int(clock.t * 1000))
    p = await auth.verify_digest("frank", nonce, digest("frank", nonce, result.session_key))
    assert (p.user_id, p.entitlements, p.expires_at) == ("frank", ents, result.expires_at)
    # the same nonce again: replay
    await expect(
        codes.NONCE_REUSED,
        auth.verify_digest("frank", nonce, digest("frank", nonce, result.session_key)),
    )
    # uppercase hex is the same digest
    n2 = str(int(clock.t * 1000) + 1)
    assert await auth.verify_digest("frank", n2, digest("frank", n2, result.session_key).upper())


async def test_login_with_api_secret_and_digest_refusals(auth: Authenticator, clock: Clock) -> None:
    made = await create_key(auth.store, kind=KeyKind.SECRET, user_id="gina")
    assert made.secret
    await expect(codes.UNAUTHORIZED, auth.login(secret="twsk_wrong"))
    first = await auth.login(secret=made.secret)
    key = first.session_key
    n = str(int(clock.t))  # seconds work too
    good = digest("gina", n, key)
    await expect(codes.BAD_SIGNATURE, auth.verify_digest("gina", n, digest("gina", n, key + "x")))
    await expect(codes.BAD_SIGNATURE, auth.verify_digest("gina", n, digest("gina", n + "1", key)))
    await expect(codes.UNAUTHORIZED, auth.verify_digest("nobody", n, good))
    await expect(codes.UNAUTHORIZED, auth.verify_digest("gina", n, "zz"))
    await expect(codes.UNAUTHORIZED, auth.verify_digest("gina", "", good))
    await expect(codes.UNAUTHORIZED, auth.verify_digest(None, n, good))
    # timestamp nonces outside the window (5 min) are stale, in either direction
    for off in (-301, 301):
        stale = str(int(clock.t) + off)
        await expect(
            codes.NONCE_STALE, auth.verify_digest("gina", stale, digest("gina", stale, key))
        )
    # a random (non-timestamp) nonce is accepted once
    rnd = "a1b2c3d4e5"
    assert await auth.verify_digest("gina", rnd, digest("gina", rnd, key))
    await expect(codes.NONCE_REUSED, auth.verify_digest("gina", rnd, digest("gina", rnd, key)))
    assert await auth.verify_digest("gina", n, good)
    # each login starts a new session key: the old one stops working
    second = await auth.login(secret=made.secret)
    assert second.session_key != key
    n3 = str(int(clock.t) + 1)
    await expect(codes.BAD_SIGNATURE, auth.verify_digest("gina", n3, digest("gina", n3, key)))
    assert await auth.verify_digest("gina", n3, digest("gina", n3, second.session_key))
    # revoking the key that logged in ends the session
    await auth.store.revoke(made.record.name, clock.t)
    n4 = str(int(clock.t) + 2)
    await expect(
        codes.KEY_REVOKED, auth.verify_digest("gina", n4, digest("gina", n4, second.session_key))
    )
    await expect(codes.KEY_REVOKED, auth.login(secret=made.secret))


async def test_session_keys_expire_after_24h(auth: Authenticator, clock: Clock) -> None:
    made = await create_key(auth.store, kind=KeyKind.SECRET, user_id="hal")
    assert made.secret
    result = await auth.login(secret=made.secret)
    clock.t += 86_400
    n = "late-nonce"
    await expect(
        codes.TOKEN_EXPIRED, auth.verify_digest("hal", n, digest("hal", n, result.session_key))
    )


async def test_session_keys_are_not_in_the_store(auth: Authenticator) -> None:
    made = await create_key(auth.store, kind=KeyKind.SECRET, user_id="ivy")
    assert made.secret
    result = await auth.login(secret=made.secret)
    session = await auth.store.get_session("ivy")
    assert session is not None
    assert result.session_key not in repr(session)
    # another server with another master secret derives another key from the same row
    other = Authenticator(auth.store, AuthSettings(auth_secret=SECRET + "-other"), clock=auth.now)
    n = "nonce-1"
    await expect(
        codes.BAD_SIGNATURE, other.verify_digest("ivy", n, digest("ivy", n, result.session_key))
    )


# --- external identity provider (Peatio / Barong) -----------------------------------------------


def barong_claims(now: float, **changes: Any) -> dict[str, Any]:
    claims = {
        "uid": "ID873B710D88",
        "email": "admin@barong.io",
        "role": "admin",
        "level": 3,
        "state": "active",
        "sub": "session",
        "iss": "barong",
        "aud": ["peatio", "barong"],
        "iat": int(now),
        "exp": int(now) + 3600,
        "jti": "1111-2222",
    }
    claims.update(changes)
    return claims


@pytest.fixture
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def test_barong_rs256_with_base64_public_key(
    clock: Clock, rsa_key: rsa.RSAPrivateKey
) -> None:
    pem = public_pem(rsa_key)
    a = await make_auth(
        clock,
        bearer_public_key=base64.b64encode(pem.encode()).decode(),  # Peatio's JWT_PUBLIC_KEY
        bearer_issuer="barong",
        bearer_audience="peatio",
    )
    token = jwt.encode(barong_claims(clock.t), rsa_key, algorithm="RS256")
    p = await a.verify_bearer("Bearer " + token)
    assert (p.user_id, p.role, p.key_name) == ("ID873B710D88", "admin", None)
    assert p.expires_at == clock.t + 3600
    assert authorize(p, parse_channel("user:ID873B710D88:orders")) is None
    assert authorize(p, parse_channel("user:someone:orders")) is not None
    # the native dialect accepts provider tokens too
    assert (await a.verify_token(token)).user_id == "ID873B710D88"

    # RS256 -> HS256 with the public key as the HMAC secret
    confused = forge_hmac({"alg": "HS256", "typ": "JWT"}, barong_claims(clock.t), pem.encode())
    await expect(codes.ALG_NOT_ALLOWED, a.verify_bearer(confused))
    # to verify_token it is an HS256 token, i.e. a gateway token whose signature is wrong
    await expect(codes.BAD_SIGNATURE, a.verify_token(confused))
    await expect(codes.ALG_NOT_ALLOWED, a.verify_bearer(alg_none(barong_claims(clock.t))))
    # signed by another RSA key; tampered uid
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    await expect(
        codes.BAD_SIGNATURE,
        a.verify_bearer(jwt.encode(barong_claims(clock.t), stranger, algorithm="RS256")),
    )
    await expect(codes.BAD_SIGNATURE, a.verify_bearer(tamper(token, uid="ID000000001")))
    # issuer, audience, times
    cases: list[tuple[dict[str, Any], str]] = [
        ({"iss": "evil"}, codes.INVALID_CLAIMS),
        ({"aud": ["other"]}, codes.INVALID_CLAIMS),
        ({"exp": int(clock.t) - 10}, codes.TOKEN_EXPIRED),
        ({"nbf": int(clock.t) + 60}, codes.TOKEN_NOT_YET_VALID),
        ({"exp": None}, codes.INVALID_CLAIMS),
        ({"uid": None, "sub": "has space"}, codes.INVALID_CLAIMS),
    ]
    for changes, code in cases:
        claims = {k: v for k, v in barong_claims(clock.t, **changes).items() if v is not None}
        await expect(code, a.verify_bearer(jwt.encode(claims, rsa_key, algorithm="RS256")))
    # uid absent: sub is the user
    sub_only = barong_claims(clock.t, sub="user-7")
    del sub_only["uid"]
    assert (
        await a.verify_bearer(jwt.encode(sub_only, rsa_key, algorithm="RS256"))
    ).user_id == "user-7"
    await a.close()


async def test_barong_jwks_with_eddsa_and_es256(clock: Clock, tmp_path: Path) -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    es = ec.generate_private_key(ec.SECP256R1())
    jwks = {
        "keys": [
            {**json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(ed.public_key())), "kid": "ed1"},
            {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(es.public_key())), "kid": "es1"},
        ]
    }
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    a = await make_auth(clock, bearer_jwks=str(path))
    claims = barong_claims(clock.t)
    t_ed = jwt.encode(claims, ed, algorithm="EdDSA", headers={"kid": "ed1"})
    t_es = jwt.encode(claims, es, algorithm="ES256", headers={"kid": "es1"})
    assert (await a.verify_bearer(t_ed)).user_id == "ID873B710D88"
    assert (await a.verify_bearer(t_es)).user_id == "ID873B710D88"
    # kid names the ES256 key but the token says EdDSA: the key's algorithm wins
    swapped = jwt.encode(claims, ed, algorithm="EdDSA", headers={"kid": "es1"})
    await expect(codes.ALG_NOT_ALLOWED, a.verify_bearer(swapped))
    unknown = jwt.encode(claims, ed, algorithm="EdDSA", headers={"kid": "zz"})
    await expect(codes.UNKNOWN_KEY, a.verify_bearer(unknown))
    await a.close()


def test_symmetric_or_private_jwks_are_refused(clock: Clock, tmp_path: Path) -> None:
    store = SqliteKeyStore(":memory:")
    oct_path = tmp_path / "oct.json"
    oct_path.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}))
    priv_path = tmp_path / "priv.json"
    ed = ed25519.Ed25519PrivateKey.generate()
    priv_path.write_text(json.dumps({"keys": [json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(ed))]}))
    for path, fragment in [(oct_path, "only RSA"), (priv_path, "private")]:
        with pytest.raises(SettingsError, match=fragment):
            Authenticator(store, AuthSettings(auth_secret=SECRET, bearer_jwks=str(path)))
    with pytest.raises(SettingsError, match="bearer_public_key"):
        Authenticator(store, AuthSettings(auth_secret=SECRET, bearer_public_key="garbage"))


async def test_bearer_without_a_provider_is_unauthorized(auth: Authenticator) -> None:
    await expect(codes.UNAUTHORIZED, auth.verify_bearer("Bearer abc.def.ghi"))


# --- secrets stay out of logs -------------------------------------------------------------------


async def test_secrets_never_reach_the_logs(
    auth: Authenticator, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sec = await create_key(auth.store, kind=KeyKind.SECRET, user_id="alice")
    await create_key(auth.store, kind=KeyKind.PASSWORD, user_id="alice", password="p4ssw0rd!!")
    ec_key = await create_key(auth.store, kind=KeyKind.EC, user_id="alice", name="ec1")
    assert sec.secret and ec_key.secret
    token = await auth.exchange_secret(sec.secret)
    await auth.verify_gateway_token(token)
    await expect(codes.UNAUTHORIZED, auth.exchange_secret(sec.secret + "typo"))
    session = await auth.login(user_id="alice", password="p4ssw0rd!!")
    await expect(codes.UNAUTHORIZED, auth.login(user_id="alice", password="p4ssw0rd!?"))
    n = "nonce-xyz"
    h = digest("alice", n, session.session_key)
    await auth.verify_digest("alice", n, h)
    await expect(codes.NONCE_REUSED, auth.verify_digest("alice", n, h))
    cb = coinbase_jwt("ec1", load_private(ec_key.secret), now=clock.t)
    await auth.verify_coinbase_jwt(cb)
    await expect(codes.NONCE_REUSED, auth.verify_coinbase_jwt(cb))
    assert caplog.records, "the flows above log their outcomes"
    text = caplog.text + repr(auth) + repr(auth.settings)
    for secret in (sec.secret, "p4ssw0rd", session.session_key, token, h, cb, SECRET):
        assert secret not in text
    assert "typo" not in text
    assert ec_key.secret.splitlines()[1] not in text


async def test_tampered_gateway_token_is_bad_signature_with_a_provider_configured(
    clock: Clock, rsa_key: rsa.RSAPrivateKey
) -> None:
    """Issue 10, defect 8: the provider's ``alg_not_allowed`` (it takes no HS256) used to
    replace the gateway's own, accurate refusal."""
    a = await make_auth(clock, bearer_public_key=public_pem(rsa_key))
    made = await create_key(a.store, kind=KeyKind.SECRET, user_id="alice")
    assert made.secret is not None
    token = await a.exchange_secret(made.secret)
    await expect(codes.BAD_SIGNATURE, a.verify_token(tamper(token, sub="bob")))
    head, payload, _ = token.split(".")
    await expect(codes.BAD_SIGNATURE, a.verify_token(f"{head}.{payload}.AAAA"))
    # a token neither side takes names the algorithm
    await expect(codes.ALG_NOT_ALLOWED, a.verify_token(alg_none(claims_of(token))))
    # a provider token's own refusal is still the provider's
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(barong_claims(clock.t), stranger, algorithm="RS256")
    await expect(codes.BAD_SIGNATURE, a.verify_token(forged))
    assert (await a.verify_token(token)).user_id == "alice"
    await a.close()


async def test_barong_subject_and_jti_when_asked(clock: Clock, rsa_key: rsa.RSAPrivateKey) -> None:
    a = await make_auth(clock, bearer_public_key=public_pem(rsa_key))
    good = jwt.encode(barong_claims(clock.t), rsa_key, algorithm="RS256")
    assert (
        await a.verify_bearer(good, subject="session", require_jti=True)
    ).user_id == "ID873B710D88"
    no_jti = {k: v for k, v in barong_claims(clock.t).items() if k != "jti"}
    for claims in (barong_claims(clock.t, sub="api"), no_jti):
        token = jwt.encode(claims, rsa_key, algorithm="RS256")
        await expect(
            codes.INVALID_CLAIMS, a.verify_bearer(token, subject="session", require_jti=True)
        )
        assert (await a.verify_bearer(token)).user_id == "ID873B710D88"  # not asked: fine
    await a.close()
