"""Identity and roles (app/interfaces/identity.py): bearer JWTs, every refusal, JWKS with key rotation, the mint CLI.

Real HTTP for the JWKS: a thread on loopback serves the key set, and counts
fetches. The app's clock (``Runtime.unix_time``) is fixed per test: no sleeping.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from app import create_app
from app.foundation.config import REPO_ROOT, ConfigError, Settings, development_jwt_secret
from app.foundation.db import Database
from app.foundation.errors import Forbidden
from app.interfaces.identity import (
    ROLES,
    Identity,
    JwksCache,
    current_identity,
    mint_token,
    require_roles,
)
from tests.conftest import bearer

NOW = 1_900_000_000.0  # fixed Unix time for every token in this module
ME = "/api/v1/me"
REGIONS = "/api/v1/regions"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(app) -> Clock:  # type: ignore[no-untyped-def]
    fixed = Clock()
    app.extensions["erx"].unix_time = fixed
    return fixed


def claims(settings: Settings, **changes: Any) -> dict[str, Any]:
    base = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": "pt-0001",
        "role": "patient",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 600,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def hs256(settings: Settings, **changes: Any) -> str:
    return jwt.encode(claims(settings, **changes), settings.jwt_secret, algorithm="HS256")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_invalid_token(response: Any) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    body = response.get_json()
    assert body["code"] == "invalid_token"
    assert set(body) == {"code", "message", "errors"}


def unsigned(payload: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


# -- HS256 (development mode) -----------------------------------------------------------


def test_a_minted_patient_token_reaches_a_patient_endpoint(app, client, clock) -> None:  # type: ignore[no-untyped-def]
    response = client.get(ME, headers=bearer(app, role="patient", subject="pt-0001"))

    assert response.status_code == 200
    assert response.get_json()["subject"] == "pt-0001"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer    "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": "Bearer a.b.c"},
        {"Authorization": "Bearer dev-api-token"},  # the old static API token is not a JWT
    ],
    ids=["none", "empty", "scheme-only", "blank", "basic", "garbage", "three-dots", "api-token"],
)
def test_missing_or_malformed_tokens_get_401_with_the_challenge(client, clock, headers) -> None:  # type: ignore[no-untyped-def]
    assert_invalid_token(client.get(ME, headers=headers))


def test_an_expired_token_is_refused(app, client, clock) -> None:  # type: ignore[no-untyped-def]
    s = app.extensions["erx"].settings
    token = hs256(s, exp=int(NOW) - s.jwt_leeway_s - 1)

    assert_invalid_token(client.get(ME, headers=auth(token)))


def test_a_token_expired_within_the_leeway_is_accepted(app, client, clock) -> None:  # type: ignore[no-untyped-def]
    s = app.extensions["erx"].settings
    token = hs256(s, exp=int(NOW) - s.jwt_leeway_s + 5)

    assert client.get(ME, headers=auth(token)).status_code == 200


def test_expiry_follows_the_app_clock(app, client, clock) -> None:  # type: ignore[no-untyped-def]
    headers = bearer(app, role="patient", ttl_s=60)
    assert client.get(ME, headers=headers).status_code == 200

    clock.now += 60 + app.extensions["erx"].settings.jwt_leeway_s

    assert_invalid_token(client.get(ME, headers=headers))


def test_a_not_yet_valid_token_is_refused(app, client, clock) -> None:  # type: ignore[no-untyped-def]
    s = app.extensions["erx"].settings
    token = hs256(s, nbf=int(NOW) + s.jwt_leeway_s + 60, exp=int(NOW) + 3600)

    assert_invalid_token(client.get(ME, headers=auth(token)))


def test_a_forged_signature_is_refused(app, client, clock) -> None:  # type: ignore[no-untyped-def]
    s = app.extensions["erx"].settings
    forged = jwt.encode(claims(s), "another-secret-of-32-bytes-or-more!!", algorithm="HS256")
    header, payload, _sig = hs256(s).split(".")
    _h, tampered_payload, _s = hs256(s, sub="pt-0002").split(".")

    assert_invalid_token(client.get(ME, headers=auth(forged)))
    # pt-0001's signature on pt-0002's claims
    assert_invalid_token(client.get(ME, headers=auth(f"{header}.{tampered_payload}.{_sig}")))


def test_alg_none_is_refused(app, client, clock) -> None:  # type: ignore[no-untyped-def]
    token = unsigned(claims(app.extensions["erx"].settings))

    assert_invalid_token(client.get(ME, headers=auth(token)))


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": "someone-else"},
        {"iss": "https://evil.example"},
        {"aud": None},
        {"iss": None},
        {"exp": None},
        {"sub": None},
        {"sub": ""},
        {"role": None},
        {"role": 7},
        {"exp": "tomorrow"},
        {"nbf": "now"},
        {"iat": None},
        {"iat": "now"},
        {"exp": NOW + 10 * 365 * 24 * 3600},
        {"sub": "pt-0001\n"},
        {"sub": "pt-0001\x00"},
        {"sub": "pt 0001"},
        {"role": "patient\x00"},
        {"name": "Ann\x00"},
        {"sub": "pt-0001\ud800"},
    ],
    ids=[
        "wrong-aud",
        "wrong-iss",
        "no-aud",
        "no-iss",
        "no-exp",
        "no-sub",
        "empty-sub",
        "no-role",
        "role-not-text",
        "exp-not-number",
        "nbf-not-number",
        "no-iat",
        "iat-not-number",
        "exp-a-decade-away",
        "sub-trailing-newline",
        "sub-nul",
        "sub-space",
        "role-nul",
        "other-claim-nul",
        "sub-lone-surrogate",
    ],
)
def test_bad_claims_are_refused(app, client, clock, changes) -> None:  # type: ignore[no-untyped-def]
    token = hs256(app.extensions["erx"].settings, **changes)

    assert_invalid_token(client.get(ME, headers=auth(token)))


def test_an_unknown_role_is_authenticated_but_not_authorised_403(app, client, clock) -> None:  # type: ignore[no-untyped-def]
    # One rule (README): a valid token whose role is not one of ROLES gets 403, like a wrong role.
    token = hs256(app.extensions["erx"].settings, role="admin")

    response = client.get(ME, headers=auth(token))

    assert response.status_code == 403
    assert response.get_json()["code"] == "forbidden"
    assert "WWW-Authenticate" not in response.headers


def test_lifetime_up_to_jwt_max_ttl_s_is_accepted_and_above_refused(app, client, clock) -> None:  # type: ignore[no-untyped-def]
    settings = app.extensions["erx"].settings
    assert settings.jwt_max_ttl_s == 3600  # the documented default

    at_limit = hs256(settings, iat=NOW - 10, exp=NOW - 10 + 3600)
    above = hs256(settings, iat=NOW - 10, exp=NOW - 10 + 3601)

    assert client.get(ME, headers=auth(at_limit)).status_code == 200
    assert_invalid_token(client.get(ME, headers=auth(above)))


def test_mint_never_exceeds_the_lifetime_limit(app, settings) -> None:  # type: ignore[no-untyped-def]
    token = mint_token(settings, role="patient", subject="pt-0001", ttl_s=8 * 3600, now=NOW)
    payload = jwt.decode(token, options={"verify_signature": False})
    cli = app.test_cli_runner().invoke(
        args=["tokens", "mint", "--role", "patient", "--sub", "pt-0001", "--ttl", "3601"]
    )

    assert payload["exp"] - payload["iat"] == settings.jwt_max_ttl_s
    assert cli.exit_code != 0 and "JWT_MAX_TTL_S" in cli.output
    with pytest.raises(ValueError, match="printable"):
        mint_token(settings, role="patient", subject="pt-0001\n")


@pytest.mark.parametrize("role", ["support", "service"])
def test_a_wrong_role_gets_403_not_401(app, client, clock, role) -> None:  # type: ignore[no-untyped-def]
    response = client.get(ME, headers=bearer(app, role=role, subject="staff-1"))

    assert response.status_code == 403
    assert response.get_json()["code"] == "forbidden"
    assert "WWW-Authenticate" not in response.headers


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/api/v1/regions", set(ROLES)),
        ("GET", "/api/v1/pharmacies", set(ROLES)),
        ("GET", "/api/v1/me", {"patient"}),
        ("PATCH", "/api/v1/me", {"patient"}),
        ("GET", "/api/v1/me/prescriptions", {"patient"}),
    ],
)
def test_role_rules_of_each_endpoint(app, client, clock, method, path, allowed) -> None:  # type: ignore[no-untyped-def]
    for role in ROLES:
        response = client.open(
            path, method=method, headers=bearer(app, role=role), json={"region": "B"}
        )
        if role in allowed:
            assert response.status_code == 200, (role, response.get_json())
        else:
            assert response.status_code == 403, (role, response.get_json())


def test_production_refuses_hs256_with_the_development_secret(
    settings: Settings, seeded: Database
) -> None:
    # The per-process development secret can't even be configured in production...
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        settings.with_overrides(env="production", jwt_secret=development_jwt_secret())
    # ...and production without JWT_SECRET nor a JWKS URL lets nobody in, dev tokens included.
    prod = create_app(settings.with_overrides(env="production", jwt_secret=""), db=seeded)
    token = hs256(settings, iat=None, nbf=None, exp=2**40)

    assert_invalid_token(prod.test_client().get(REGIONS, headers=auth(token)))


def test_require_roles_refuses_unknown_roles_at_decoration() -> None:
    with pytest.raises(ValueError):
        require_roles("admin")
    with pytest.raises(ValueError):
        require_roles()


def test_current_identity_outside_require_roles_is_an_error(app) -> None:  # type: ignore[no-untyped-def]
    with app.test_request_context("/"), pytest.raises(RuntimeError):
        current_identity()


def test_the_identity_is_frozen() -> None:
    identity = Identity(subject="pt-0001", role="patient")
    with pytest.raises(AttributeError):
        identity.role = "support"  # type: ignore[misc]


# -- mint_token and the CLI ----------------------------------------------------------------


def test_mint_token_claims(settings: Settings) -> None:
    token = mint_token(
        settings, role="support", subject="staff-7", ttl_s=120, now=NOW, token_id="t-1"
    )

    decoded = jwt.decode(
        token,
        settings.jwt_secret,
        algorithms=["HS256"],
        audience=settings.jwt_audience,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert decoded == {
        "iss": "erx-connector-dev",
        "aud": "erx-connector",
        "sub": "staff-7",
        "role": "support",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 120,
        "jti": "t-1",
    }


def test_two_tokens_minted_in_one_second_differ(settings: Settings) -> None:
    first = mint_token(settings, role="patient", subject="pt-0001", now=NOW)
    second = mint_token(settings, role="patient", subject="pt-0001", now=NOW)
    assert first != second
    ids = {jwt.decode(t, options={"verify_signature": False})["jti"] for t in (first, second)}
    assert len(ids) == 2


def test_mint_token_refuses_production_and_bad_arguments(settings: Settings) -> None:
    with pytest.raises(Forbidden):
        mint_token(
            settings.with_overrides(env="production", jwt_secret="p" * 32),
            role="patient",
            subject="pt-0001",
        )
    with pytest.raises(ValueError):
        mint_token(settings, role="admin", subject="pt-0001")
    with pytest.raises(ValueError):
        mint_token(settings, role="patient", subject="")
    with pytest.raises(ValueError):
        mint_token(settings, role="patient", subject="pt-0001", ttl_s=0)


def test_tokens_mint_cli_prints_a_working_token(app, client, clock) -> None:  # type: ignore[no-untyped-def]
    result = app.test_cli_runner().invoke(
        args=["tokens", "mint", "--role", "patient", "--sub", "pt-0002", "--ttl", "90"]
    )

    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert "\n" not in token
    response = client.get(ME, headers=auth(token))
    assert response.status_code == 200
    assert response.get_json()["subject"] == "pt-0002"
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["exp"] - payload["iat"] == 90


def test_tokens_mint_cli_is_refused_in_production(settings: Settings, seeded: Database) -> None:
    prod = create_app(settings.with_overrides(env="production", jwt_secret="p" * 32), db=seeded)

    result = prod.test_cli_runner().invoke(
        args=["tokens", "mint", "--role", "patient", "--sub", "pt-0001"]
    )

    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "production" in lines[0]
    assert "Traceback" not in result.output
    assert "eyJ" not in result.output  # no token printed


@pytest.mark.parametrize(
    "args",
    [
        ["--role", "admin", "--sub", "pt-0001"],
        ["--role", "patient"],
        ["--role", "patient", "--sub", "x", "--ttl", "0"],
    ],
)
def test_tokens_mint_cli_rejects_bad_options(app, args) -> None:  # type: ignore[no-untyped-def]
    result = app.test_cli_runner().invoke(args=["tokens", "mint", *args])

    assert result.exit_code == 2
    assert "eyJ" not in result.output


# -- JWKS mode: a real key server on loopback -------------------------------------------------


class KeyServer:
    """Serves ``{"keys": [...]}`` at http://127.0.0.1:<port>/jwks.json and counts the fetches."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.fetches += 1
                body = json.dumps({"keys": server.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, kid: str, public_key: Any, *, kty: str) -> None:
        algorithm = RSAAlgorithm if kty == "RSA" else ECAlgorithm
        jwk = algorithm.to_jwk(public_key, as_dict=True)
        self.keys.append({**jwk, "kid": kid, "use": "sig"})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def key_server() -> Iterator[KeyServer]:
    server = KeyServer()
    server.publish("rsa-1", RSA_KEY.public_key(), kty="RSA")
    server.publish("ec-1", EC_KEY.public_key(), kty="EC")
    yield server
    server.close()


@pytest.fixture
def jwks_app(settings: Settings, seeded: Database, key_server: KeyServer):  # type: ignore[no-untyped-def]
    application = create_app(settings.with_overrides(jwt_jwks_url=key_server.url), db=seeded)
    application.extensions["erx"].unix_time = Clock()
    return application


def signed(settings: Settings, key: Any, algorithm: str, kid: str | None, **changes: Any) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims(settings, **changes), key, algorithm=algorithm, headers=headers)


def test_jwks_rs256_and_es256_tokens_are_accepted(jwks_app, key_server: KeyServer) -> None:  # type: ignore[no-untyped-def]
    s = jwks_app.extensions["erx"].settings
    client = jwks_app.test_client()

    rsa_token = signed(s, RSA_KEY, "RS256", "rsa-1")
    ec_token = signed(s, EC_KEY, "ES256", "ec-1", sub="pt-0002")

    assert client.get(ME, headers=auth(rsa_token)).get_json()["subject"] == "pt-0001"
    assert client.get(ME, headers=auth(ec_token)).get_json()["subject"] == "pt-0002"
    assert key_server.fetches == 1  # cached after the first


def test_jwks_mode_refuses_hs256_tokens(jwks_app, key_server: KeyServer) -> None:  # type: ignore[no-untyped-def]
    s = jwks_app.extensions["erx"].settings
    client = jwks_app.test_client()
    rsa_public_pem = RSA_KEY.public_key().public_bytes(
        encoding=serialization.Encoding.PEM, format=serialization.PublicFormat.SubjectPublicKeyInfo
    )

    dev_token = mint_token(s, role="patient", subject="pt-0001", now=NOW)  # valid in HS256 mode
    with_kid = jwt.encode(claims(s), s.jwt_secret, algorithm="HS256", headers={"kid": "rsa-1"})
    # The classic confusion: HMAC keyed with the RSA public key, claiming the RSA key's kid.
    # PyJWT will not sign with a PEM as HMAC key, so the token is built by hand.
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode()).rstrip(
        b"="
    )
    body = base64.urlsafe_b64encode(json.dumps(claims(s)).encode()).rstrip(b"=")
    mac = hmac.new(rsa_public_pem, header + b"." + body, hashlib.sha256).digest()
    confused = b".".join([header, body, base64.urlsafe_b64encode(mac).rstrip(b"=")]).decode()

    for token in (dev_token, with_kid, confused, unsigned(claims(s))):
        assert_invalid_token(client.get(ME, headers=auth(token)))


def test_jwks_algorithm_is_pinned_by_key_type(jwks_app) -> None:  # type: ignore[no-untyped-def]
    s = jwks_app.extensions["erx"].settings
    client = jwks_app.test_client()

    # RSA key, but the header says PS256 (still RSA): only RS256 is allowed for RSA keys.
    ps256 = signed(s, RSA_KEY, "PS256", "rsa-1")
    # EC token presented under the RSA key's kid.
    ec_as_rsa = signed(s, EC_KEY, "ES256", "rsa-1")

    assert_invalid_token(client.get(ME, headers=auth(ps256)))
    assert_invalid_token(client.get(ME, headers=auth(ec_as_rsa)))


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": "other"},
        {"iss": "other"},
        {"exp": int(NOW) - 3600},
        {"nbf": int(NOW) + 3600, "exp": int(NOW) + 7200},
    ],
    ids=["aud", "iss", "expired", "not-yet-valid"],
)
def test_jwks_tokens_get_the_same_claim_checks(jwks_app, changes) -> None:  # type: ignore[no-untyped-def]
    token = signed(jwks_app.extensions["erx"].settings, RSA_KEY, "RS256", "rsa-1", **changes)

    assert_invalid_token(jwks_app.test_client().get(ME, headers=auth(token)))


def test_jwks_forged_signature_and_missing_kid_are_refused(jwks_app) -> None:  # type: ignore[no-untyped-def]
    s = jwks_app.extensions["erx"].settings
    client = jwks_app.test_client()

    forged = signed(s, RSA_KEY_2, "RS256", "rsa-1")  # another key claiming rsa-1
    no_kid = signed(s, RSA_KEY, "RS256", None)

    assert_invalid_token(client.get(ME, headers=auth(forged)))
    assert_invalid_token(client.get(ME, headers=auth(no_kid)))


def test_key_rotation_picks_up_a_new_kid_once(jwks_app, key_server: KeyServer) -> None:  # type: ignore[no-untyped-def]
    s = jwks_app.extensions["erx"].settings
    clock = jwks_app.extensions["erx"].unix_time
    client = jwks_app.test_client()
    assert client.get(ME, headers=auth(signed(s, RSA_KEY, "RS256", "rsa-1"))).status_code == 200
    assert key_server.fetches == 1

    # The provider rotates: a new key appears. Later, a token signed with it arrives.
    key_server.publish("rsa-2", RSA_KEY_2.public_key(), kty="RSA")
    clock.now += 120
    new_token = signed(
        s,
        RSA_KEY_2,
        "RS256",
        "rsa-2",
        iat=int(clock.now),
        nbf=int(clock.now),
        exp=int(clock.now) + 600,
    )

    assert client.get(ME, headers=auth(new_token)).status_code == 200
    assert key_server.fetches == 2
    assert client.get(ME, headers=auth(new_token)).status_code == 200
    assert key_server.fetches == 2  # cached now


def test_a_flood_of_unknown_kids_fetches_at_most_once_per_interval(
    jwks_app, key_server: KeyServer
) -> None:  # type: ignore[no-untyped-def]
    s = jwks_app.extensions["erx"].settings
    clock = jwks_app.extensions["erx"].unix_time
    client = jwks_app.test_client()
    assert client.get(ME, headers=auth(signed(s, RSA_KEY, "RS256", "rsa-1"))).status_code == 200

    for i in range(20):
        assert_invalid_token(
            client.get(ME, headers=auth(signed(s, RSA_KEY, "RS256", f"made-up-{i}")))
        )
    assert key_server.fetches == 1  # still inside the minimum refresh interval

    clock.now += 61
    for i in range(20):
        token = signed(s, RSA_KEY, "RS256", f"made-up-{i}", exp=int(clock.now) + 600)
        assert_invalid_token(client.get(ME, headers=auth(token)))
    assert key_server.fetches == 2  # one refresh for the whole second wave


def test_jwks_cache_survives_an_unreachable_provider(key_server: KeyServer) -> None:
    clock = Clock()
    cache = JwksCache(key_server.url, unix_time=clock, min_refresh_s=60, max_age_s=300)
    key, algorithm = cache.key_for("rsa-1")
    assert algorithm == "RS256"
    key_server.close()

    clock.now += 301  # the set is stale; the refetch fails; the key stays usable
    assert cache.key_for("rsa-1")[1] == "RS256"
    assert cache.fetches == 2


def test_jwks_ignores_symmetric_and_unusable_keys(key_server: KeyServer) -> None:
    key_server.keys.append(
        {"kty": "oct", "kid": "hmac-1", "k": base64.urlsafe_b64encode(b"s" * 32).decode()}
    )
    key_server.keys.append({"kty": "RSA", "kid": "enc-1", "use": "enc", "n": "AQAB", "e": "AQAB"})
    key_server.keys.append({"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"})
    cache = JwksCache(key_server.url, unix_time=Clock())

    for kid in ("hmac-1", "enc-1", "p384"):
        with pytest.raises(Exception, match="unknown kid"):
            cache.key_for(kid)
    assert cache.key_for("ec-1")[1] == "ES256"


# -- settings ----------------------------------------------------------------------------------


def test_jwt_settings_come_from_the_environment() -> None:
    from app.foundation.config import load_settings

    settings = load_settings(
        {
            "JWT_JWKS_URL": "https://idp.example.test/jwks.json",
            "JWT_ISSUER": "https://idp.example.test/",
            "JWT_AUDIENCE": "erx",
            "JWT_LEEWAY_S": "5",
            "JWT_SECRET": "s3cret-value-that-is-long-enough-xx",
        }
    )

    assert (
        settings.jwt_jwks_url,
        settings.jwt_issuer,
        settings.jwt_audience,
        settings.jwt_leeway_s,
    ) == ("https://idp.example.test/jwks.json", "https://idp.example.test/", "erx", 5)
    assert "s3cret" not in repr(settings)
    defaults = load_settings({})
    assert (
        defaults.jwt_jwks_url,
        defaults.jwt_issuer,
        defaults.jwt_audience,
        defaults.jwt_leeway_s,
    ) == (None, "erx-connector-dev", "erx-connector", 30)


@pytest.mark.parametrize("value", ["abc", "-1", "1.5"])
def test_a_bad_leeway_is_a_config_error_naming_the_variable(value: str) -> None:
    from app.foundation.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="JWT_LEEWAY_S"):
        load_settings({"JWT_LEEWAY_S": value})


# The value app/foundation/config.py carried until no committed value could verify a token.
FORMERLY_COMMITTED_SECRET = "dev-jwt-secret-not-for-production-0123456789"


def test_no_committed_secret_verifies_a_token(app, client, clock) -> None:  # type: ignore[no-untyped-def]
    settings = app.extensions["erx"].settings
    forged = jwt.encode(claims(settings), FORMERLY_COMMITTED_SECRET, algorithm="HS256")

    assert settings.jwt_secret != FORMERLY_COMMITTED_SECRET
    assert_invalid_token(client.get(ME, headers=auth(forged)))


def test_development_without_jwt_secret_uses_a_random_per_process_secret() -> None:
    from app.foundation.config import load_settings

    first = load_settings({"ERX_ENV": "development"}).jwt_secret
    again = load_settings({"ERX_ENV": "development"}).jwt_secret
    script = (
        "from app.foundation.config import load_settings; load_settings({'ERX_ENV': 'development'}); "
        "print(load_settings({'ERX_ENV': 'development'}).jwt_secret)"
    )
    other = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )

    assert len(first) >= 43 and first == again  # one per process: minted and verified alike
    assert other.stdout.strip() not in ("", first)  # another process has its own
    assert other.stderr.count("JWT_SECRET is not set") == 1  # logged once, never the value
    assert other.stdout.strip() not in other.stderr
    assert load_settings({"ERX_ENV": "development", "JWT_SECRET": "s" * 32}).jwt_secret == "s" * 32


def test_tokens_mint_cli_refuses_without_jwt_secret(settings: Settings, seeded: Database) -> None:
    dev = create_app(settings.with_overrides(jwt_secret=development_jwt_secret()), db=seeded)

    result = dev.test_cli_runner().invoke(
        args=["tokens", "mint", "--role", "patient", "--sub", "pt-0001"]
    )

    assert result.exit_code != 0
    assert "JWT_SECRET is not set" in result.output
