"""A real OAuth 2.0 authorization server on 127.0.0.1 for tests, built on Authlib's server side.

Loaded through ``pytest_plugins`` in ``tests/conftest.py``. The server speaks the wire
protocol real providers speak, errors included, because Authlib produces them:

- ``/token``: RFC 6749 ``client_credentials``, ``refresh_token`` (rotating the refresh
  token when ``rotate`` is on) and ``authorization_code`` with PKCE (RFC 7636), and the
  RFC 8628 device-code grant;
- ``/device``: the RFC 8628 device authorization endpoint (``approve(user_code)`` plays
  the user who signs in);
- ``/authorize``: the authorization endpoint; it signs in ``auto_approve_user`` at once
  and redirects to the client's loopback ``redirect_uri`` (the browser of the Google flow);
- ``/introspect``: RFC 7662 introspection, which Dovecot's ``oauth2`` passdb and the SMTP
  test server call to check a token (client ``dovecot`` / ``dovecot-secret``).

A client registered with :meth:`OAuthTestServer.add_certificate_client` authenticates as
Microsoft's certificate credentials do, with an RFC 7523 ``private_key_jwt`` client
assertion (Authlib's ``JWTBearerClientAssertion``): the JWT header's ``x5t`` (SHA-1) or
``x5t#S256`` must be the registered certificate's thumbprint, the signature must verify
with its public key, ``aud`` must be the token endpoint, ``iss`` = ``sub`` = the client id,
and ``exp`` must not have passed (60 s leeway). Every assertion seen is kept in
``assertions``. The ``oauth_tls_server`` fixture serves the same over https with the
session's test CA, plus the OpenID discovery document MSAL reads first
(``/TENANT/v2.0/.well-known/openid-configuration``), so MSAL can use it as its authority.

Knobs a test turns: ``expires_in`` (seconds an access token lives), ``rotate``,
``grace`` (a rotated-out refresh token keeps working, as Microsoft's do), ``down`` (every
request answers 503), :meth:`OAuthTestServer.revoke_refresh_tokens`,
:meth:`OAuthTestServer.revoke_access_tokens`; ``grants`` counts the token requests per grant.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import ssl
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import attrs
import pytest

from tests.dovecot_fixtures import DovecotServer, TestCA, start_dovecot
from tests.smtp_fixtures import SmtpTestServer

try:
    from authlib.oauth2 import AuthorizationServer
    from authlib.oauth2.rfc6749 import (
        ClientMixin,
        InvalidClientError,
        OAuth2Request,
        TokenMixin,
        grants,
    )
    from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
    from authlib.oauth2.rfc6750 import BearerTokenGenerator
    from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
    from authlib.oauth2.rfc7636 import CodeChallenge
    from authlib.oauth2.rfc7662 import IntrospectionEndpoint
    from authlib.oauth2.rfc8628 import (
        DeviceAuthorizationEndpoint,
        DeviceCodeGrant,
        DeviceCredentialDict,
    )
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from joserfc import jws
    from joserfc import jwt as jose_jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import RSAKey
except ImportError:  # pragma: no cover - authlib is a test dependency
    AuthorizationServer = None  # type: ignore[assignment,misc]

INTROSPECTION_CLIENT = "dovecot"
INTROSPECTION_SECRET = "dovecot-secret"
SCOPE = "mail"
#: RFC 7523 client authentication with a JWT signed by the client's private key
PRIVATE_KEY_JWT = "private_key_jwt"


def _require_authlib() -> None:
    if AuthorizationServer is not None:
        return
    message = "Authlib is not installed (the tests' OAuth 2.0 server)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + "; server tests must not be skipped on CI", pytrace=False)
    pytest.skip(message)


# -- models -------------------------------------------------------------------------------------


@attrs.define
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    client_secret: str | None
    #: the mailbox an app-only (client_credentials) token of this client may open
    user: str
    grant_types: tuple[str, ...] = ("client_credentials", "refresh_token",
                                    "urn:ietf:params:oauth:grant-type:device_code",
                                    "authorization_code")
    #: the public certificate (a ``cryptography`` x509.Certificate) the client signs its
    #: ``private_key_jwt`` assertions for; None for a client with a secret (or none)
    certificate: Any = None

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return "http://127.0.0.1/"

    def get_allowed_scope(self, scope: str | None) -> str:
        return SCOPE if not scope else " ".join(s for s in scope.split() if s == SCOPE) or SCOPE

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # RFC 8252 §7.3: a native app's loopback redirect may use any port
        parts = urllib.parse.urlsplit(redirect_uri)
        return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")

    def check_client_secret(self, client_secret: str) -> bool:
        return self.client_secret is not None and hmac.compare_digest(
            self.client_secret, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.certificate is not None:
            return method == PRIVATE_KEY_JWT
        if self.client_secret is None:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


@attrs.define
class Token(TokenMixin):  # type: ignore[misc]
    client_id: str
    user: str
    scope: str
    access_token: str
    refresh_token: str | None
    issued_at: float
    expires_in: int
    revoked: bool = False
    #: the refresh token was rotated out (still accepted while the server's ``grace`` is on)
    superseded: bool = False
    refresh_revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> str:
        return self.user

    def get_client(self) -> None:
        return None


@attrs.define
class AuthorizationCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    code_challenge: str | None
    code_challenge_method: str | None

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


# -- WSGI plumbing ------------------------------------------------------------------------------


class _Request(OAuth2Request):  # type: ignore[misc]
    def __init__(self, environ: dict[str, Any], form: dict[str, str],
                 query: dict[str, str]) -> None:
        headers = {"Authorization": environ.get("HTTP_AUTHORIZATION", ""),
                   "Content-Type": environ.get("CONTENT_TYPE", "")}
        scheme = "https" if environ.get("HTTPS") == "on" else "http"
        uri = f"{scheme}://{environ['HTTP_HOST']}{environ['PATH_INFO']}"
        if environ.get("QUERY_STRING"):
            uri += "?" + environ["QUERY_STRING"]
        super().__init__(environ["REQUEST_METHOD"], uri, headers=headers)
        self._form = form
        self._query = query
        self.payload = BasicOAuth2Payload({**query, **form})

    @property
    def args(self) -> dict[str, str]:
        return self._query

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _Server(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, owner: OAuthTestServer) -> None:
        super().__init__()
        self.owner = owner

    def query_client(self, client_id: str) -> Client | None:
        return self.owner.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        client = request.client
        user = request.user or client.user
        self.owner.tokens[token["access_token"]] = Token(
            client_id=client.client_id, user=user, scope=token.get("scope", ""),
            access_token=token["access_token"], refresh_token=token.get("refresh_token"),
            issued_at=time.time(), expires_in=int(token.get("expires_in", 0)))

    def create_oauth2_request(self, request: Any) -> Any:
        return request

    def create_json_request(self, request: Any) -> Any:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, Any]:
        return status, body, headers

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None


class _ClientCredentials(grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", PRIVATE_KEY_JWT]


def thumbprint(certificate: Any, algorithm: str = "sha1") -> str:
    """A certificate's thumbprint as a JWS ``x5t`` (``sha1``) or ``x5t#S256`` carries it:
    the hash of its DER encoding, base64url."""
    digest = hashlib.new(algorithm, certificate.public_bytes(Encoding.DER)).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _unpadded(value: object) -> str | None:
    return value.rstrip("=") if isinstance(value, str) else None


class _CertificateAssertion(JWTBearerClientAssertion):  # type: ignore[misc]
    """``private_key_jwt`` for clients registered with a certificate, checked as Entra ID
    does: the assertion names the certificate by its thumbprint, and is signed by its key."""

    CLIENT_AUTH_METHOD = PRIVATE_KEY_JWT

    def __init__(self, owner: OAuthTestServer) -> None:
        super().__init__(validate_jti=True)
        self.owner = owner
        # MSAL signs RS256 with a SHA-1 ``x5t``, or PS256 with ``x5t#S256`` (joserfc's
        # default set leaves PS256 out), and puts the whole certificate in ``x5c`` (for
        # Entra ID's subject name/issuer check): a header far over joserfc's 512 bytes
        self.registry = jws.JWSRegistry(algorithms=["RS256", "PS256"])
        self.registry.max_header_length = 16 * 1024

    def get_audiences(self) -> list[str]:
        return [self.owner.token_url]

    def extract_assertion(self, assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
        # Authlib's own, with the registry above
        try:
            obj = jws.extract_compact(assertion.encode(), None, self.registry)
            claims = json.loads(obj.payload)
        except (JoseError, ValueError) as exc:
            raise InvalidClientError(description="Invalid JWT assertion.") from exc
        if not isinstance(claims, dict):
            raise InvalidClientError(description="Invalid JWT payload.")
        headers = obj.headers()
        self.owner.assertions.append({"header": dict(headers), "claims": dict(claims)})
        client = self.owner.clients.get(claims.get("sub")) if isinstance(
            claims.get("sub"), str) else None
        if client is not None and client.certificate is not None:
            # MSAL pads its base64url with "=" (RFC 7515 has none); Entra ID takes both
            if "x5t#S256" in headers:
                known = _unpadded(headers["x5t#S256"]) == thumbprint(client.certificate,
                                                                    "sha256")
            else:
                known = _unpadded(headers.get("x5t")) == thumbprint(client.certificate)
            if not known:  # Entra ID: AADSTS700027, the key was not found
                raise InvalidClientError(
                    description="no certificate with this thumbprint is registered "
                                "for the client")
        return headers, claims

    def resolve_client_public_key(self, client: Client) -> Any:
        if client.certificate is None:
            raise InvalidClientError(description="the client has no certificate")
        return RSAKey.import_key(client.certificate.public_key().public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        try:
            token = jose_jwt.decode(assertion, resolve_key, registry=self.registry)
        except JoseError as exc:
            raise InvalidClientError(description=exc.description or exc.error) from exc
        self.verify_claims(token.claims)
        return token.claims

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        # MSAL sends one signed assertion for up to 9 minutes (Entra ID accepts that), so
        # refusing a repeated jti is a knob (``reject_replayed_assertions``), off by default
        seen = self.owner.assertion_ids
        key = f"{claims['sub']} {jti}"
        if key in seen and self.owner.reject_replayed_assertions:
            return False
        seen.add(key)
        return True


def _refresh_grant(owner: OAuthTestServer) -> type:
    class RefreshToken(grants.RefreshTokenGrant):  # type: ignore[misc]
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

        @property
        def INCLUDE_NEW_REFRESH_TOKEN(self) -> bool:
            return owner.rotate

        def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
            for token in owner.tokens.values():
                if token.refresh_token == refresh_token and not token.refresh_revoked:
                    if token.superseded and not owner.grace:
                        return None
                    return token
            return None

        def authenticate_user(self, refresh_token: Token) -> str:
            return refresh_token.user

        def revoke_old_credential(self, refresh_token: Token) -> None:
            if owner.rotate:
                refresh_token.superseded = True

    return RefreshToken


class _AuthorizationCode(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def save_authorization_code(self, code: str, request: Any) -> None:
        owner: OAuthTestServer = self.server.owner
        owner.codes[code] = AuthorizationCode(
            code=code, client_id=request.client.client_id,
            redirect_uri=request.payload.redirect_uri, scope=request.payload.scope or SCOPE,
            user=request.user, code_challenge=request.payload.data.get("code_challenge"),
            code_challenge_method=request.payload.data.get("code_challenge_method"))

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        item: AuthorizationCode | None = self.server.owner.codes.get(code)
        return item if item and item.client_id == client.client_id else None

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        self.server.owner.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: AuthorizationCode) -> str:
        return authorization_code.user


class _DeviceAuthorization(DeviceAuthorizationEndpoint):  # type: ignore[misc]
    INTERVAL = 1

    def get_verification_uri(self) -> str:
        return f"{self.server.owner.url}/activate"

    def save_device_credential(self, client_id: str, scope: str, data: dict[str, Any]) -> None:
        self.server.owner.devices[data["device_code"]] = DeviceCredentialDict(
            client_id=client_id, scope=scope or SCOPE, expires_at=time.time() + 600, **data)


class _DeviceCode(DeviceCodeGrant):  # type: ignore[misc]
    def query_device_credential(self, device_code: str) -> Any:
        return self.server.owner.devices.get(device_code)

    def query_user_grant(self, user_code: str) -> tuple[str, bool] | None:
        result: tuple[str, bool] | None = self.server.owner.approvals.get(user_code)
        return result

    def should_slow_down(self, credential: Any) -> bool:
        return False


class _Introspection(IntrospectionEndpoint):  # type: ignore[misc]
    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        token: Token | None = self.server.owner.tokens.get(token_string)
        return token

    def check_permission(self, token: Token, client: Client, request: Any) -> bool:
        return client.client_id == INTROSPECTION_CLIENT

    def introspect_token(self, token: Token) -> dict[str, Any]:
        return {"active": True, "client_id": token.client_id, "token_type": "Bearer",
                "username": token.user, "scope": token.scope,
                "exp": int(token.issued_at + token.expires_in), "iat": int(token.issued_at)}


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    #: set for https: each connection's TLS handshake runs in its request's thread
    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@attrs.define(kw_only=True)
class OAuthTestServer:
    """The running server; ``url`` is ``http://127.0.0.1:PORT`` (``https://`` with ``ca``)."""

    url: str = ""
    #: serve https with this CA's server certificate (for 127.0.0.1 and localhost)
    ca: TestCA | None = None
    #: refuse a client assertion whose ``jti`` was seen before (Entra ID does not)
    reject_replayed_assertions: bool = False
    expires_in: int = 3600
    rotate: bool = True
    grace: bool = True
    down: bool = False
    #: the user the authorization endpoint signs in (the browser step of the code flow)
    auto_approve_user: str | None = None
    clients: dict[str, Client] = attrs.field(factory=dict)
    tokens: dict[str, Token] = attrs.field(factory=dict)
    codes: dict[str, AuthorizationCode] = attrs.field(factory=dict)
    devices: dict[str, Any] = attrs.field(factory=dict)
    approvals: dict[str, tuple[str, bool]] = attrs.field(factory=dict)
    #: token requests answered with a token, per grant_type
    grants: Counter[str] = attrs.field(factory=Counter)
    #: introspection requests (each login Dovecot or the SMTP server checked)
    introspections: int = 0
    #: the client assertions received (``header`` and ``claims``), accepted or not
    assertions: list[dict[str, Any]] = attrs.field(factory=list)
    assertion_ids: set[str] = attrs.field(factory=set)
    #: paths of the OpenID discovery documents requested
    discoveries: list[str] = attrs.field(factory=list)
    lock: threading.RLock = attrs.field(factory=threading.RLock)
    _authz: Any = None
    _httpd: Any = None
    _thread: threading.Thread | None = None

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    @property
    def device_url(self) -> str:
        return f"{self.url}/device"

    @property
    def authorize_url(self) -> str:
        return f"{self.url}/authorize"

    @property
    def introspection_url(self) -> str:
        return f"{self.url}/introspect"

    def add_client(self, user: str, *, secret: str | None = "client-secret",
                   client_id: str | None = None) -> Client:
        """Register an app whose app-only tokens open ``user``'s mailbox."""
        client = Client(client_id=client_id or f"app-{secrets.token_hex(4)}",
                        client_secret=secret, user=user)
        with self.lock:
            self.clients[client.client_id] = client
        return client

    def add_certificate_client(self, user: str, certificate: Any, *,
                               client_id: str | None = None) -> Client:
        """Register an app with a public certificate (a ``cryptography`` certificate): it
        authenticates with ``private_key_jwt`` assertions signed by the certificate's key."""
        client = Client(client_id=client_id or f"app-{secrets.token_hex(4)}",
                        client_secret=None, user=user, certificate=certificate)
        with self.lock:
            self.clients[client.client_id] = client
        return client

    def discovery_url(self, tenant: str) -> str:
        """Where MSAL reads the tenant's OpenID configuration (authority ``url/tenant``)."""
        return f"{self.url}/{tenant}/v2.0/.well-known/openid-configuration"

    def issue_refresh_token(self, client: Client, user: str) -> str:
        """A refresh token as a finished sign-in of ``user`` would leave (``auth login``)."""
        with self.lock:
            refresh = secrets.token_urlsafe(24)
            access = secrets.token_urlsafe(24)
            self.tokens[access] = Token(client_id=client.client_id, user=user, scope=SCOPE,
                                        access_token=access, refresh_token=refresh,
                                        issued_at=time.time(), expires_in=self.expires_in)
            return refresh

    def valid_refresh_token(self, refresh_token: str) -> bool:
        with self.lock:
            return any(t.refresh_token == refresh_token and not t.refresh_revoked
                       and (self.grace or not t.superseded) for t in self.tokens.values())

    def revoke_refresh_tokens(self, user: str | None = None) -> None:
        """Withdraw consent: every refresh token (of ``user``) stops working."""
        with self.lock:
            for token in self.tokens.values():
                if user is None or token.user == user:
                    token.refresh_revoked = True

    def revoke_access_tokens(self, user: str | None = None) -> None:
        """Every access token (of ``user``) is refused from now on, though not expired."""
        with self.lock:
            for token in self.tokens.values():
                if user is None or token.user == user:
                    token.revoked = True

    def approve(self, user_code: str, user: str, *, allow: bool = True) -> None:
        """The user signs in on the verification page and approves (or denies) the code."""
        with self.lock:
            self.approvals[user_code] = (user, allow)

    def pending_user_codes(self) -> list[str]:
        with self.lock:
            return [d["user_code"] for d in self.devices.values()
                    if d["user_code"] not in self.approvals]

    def access_token_valid(self, value: str) -> bool:
        with self.lock:
            token = self.tokens.get(value)
            return bool(token and not token.is_expired() and not token.is_revoked())

    # -- serving ----------------------------------------------------------------------------

    def start(self) -> None:
        authz = _Server(self)
        authz.register_token_generator("default", BearerTokenGenerator(
            access_token_generator=lambda **_: secrets.token_urlsafe(24),
            refresh_token_generator=lambda **_: secrets.token_urlsafe(24),
            expires_generator=lambda client, grant_type: self.expires_in))
        authz.register_grant(_ClientCredentials)
        authz.register_grant(_refresh_grant(self))
        authz.register_grant(_AuthorizationCode, [CodeChallenge(required=False)])
        authz.register_grant(_DeviceCode)
        authz.register_endpoint(_DeviceAuthorization)
        authz.register_endpoint(_Introspection)
        authz.register_client_auth_method(PRIVATE_KEY_JWT, _CertificateAssertion(self))
        self._authz = authz
        self._httpd = make_server("127.0.0.1", 0, self._app, server_class=_ThreadingServer,
                                  handler_class=_QuietHandler)
        scheme = "http"
        if self.ca is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.ca.server_cert, self.ca.server_key)
            self._httpd.tls = context
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self._httpd.server_port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="oauth-test-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def _app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length).decode() if length else ""
        form = dict(urllib.parse.parse_qsl(body))
        query = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
        path = environ["PATH_INFO"]
        environ["HTTPS"] = "on" if self.ca is not None else "off"
        with self.lock:
            if self.down:
                status, payload, headers = 503, {"error": "temporarily_unavailable"}, []
            else:
                status, payload, headers = self._dispatch(path, _Request(environ, form, query))
        if isinstance(payload, dict):
            data = json.dumps(payload).encode()
            headers = [*(headers or []), ("Content-Type", "application/json")]
        else:
            data = (payload or "").encode()
        reason = {200: "OK", 302: "Found", 400: "Bad Request", 401: "Unauthorized",
                  404: "Not Found", 503: "Service Unavailable"}.get(status, "Status")
        start_response(f"{status} {reason}", [(k, v) for k, v in headers
                                              if k.lower() != "content-length"])
        return [data]

    def _dispatch(self, path: str, request: _Request) -> tuple[int, Any, list[Any]]:
        authz = self._authz
        tenant, _, rest = path.lstrip("/").partition("/")
        if rest == "v2.0/.well-known/openid-configuration" and request.method == "GET":
            self.discoveries.append(path)
            return 200, {
                "issuer": f"{self.url}/{tenant}/v2.0",
                "token_endpoint": self.token_url,
                "authorization_endpoint": self.authorize_url,
                "device_authorization_endpoint": self.device_url,
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post", "client_secret_basic", PRIVATE_KEY_JWT],
            }, []
        if path == "/token":
            status, payload, headers = authz.create_token_response(request)
            if status == 200:
                self.grants[request.form.get("grant_type", "")] += 1
            return status, payload, list(headers)
        if path == "/device":
            return tuple(authz.create_endpoint_response("device_authorization", request))  # type: ignore[return-value]
        if path == "/introspect":
            self.introspections += 1
            return tuple(authz.create_endpoint_response("introspection", request))  # type: ignore[return-value]
        if path == "/authorize":
            user = self.auto_approve_user
            grant = authz.get_consent_grant(request, end_user=user)
            status, payload, headers = authz.create_authorization_response(
                request, grant_user=user, grant=grant)
            return status, payload, list(headers)
        return 404, {"error": "not_found"}, []


    @property
    def introspection_url_with_credentials(self) -> str:
        """The introspection URL as Dovecot's ``introspection_url`` takes it."""
        host = self.url.removeprefix("http://")
        return f"http://{INTROSPECTION_CLIENT}:{INTROSPECTION_SECRET}@{host}/introspect"

    def reset(self) -> None:
        """The knobs back to their defaults (a session-wide server between tests)."""
        with self.lock:
            self.expires_in, self.rotate, self.grace, self.down = 3600, True, True, False
            self.auto_approve_user = None
            self.reject_replayed_assertions = False
            self.grants.clear()
            self.introspections = 0
            self.assertions.clear()
            self.discoveries.clear()


def _running_server(ca: TestCA | None = None) -> Iterator[OAuthTestServer]:
    """A started server (https when ``ca`` is given) with Dovecot's introspection client."""
    _require_authlib()
    server = OAuthTestServer(ca=ca)
    server.add_client(INTROSPECTION_CLIENT, secret=INTROSPECTION_SECRET,
                      client_id=INTROSPECTION_CLIENT)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def oauth_server_session() -> Iterator[OAuthTestServer]:
    yield from _running_server()


@pytest.fixture
def oauth_server(oauth_server_session: OAuthTestServer) -> OAuthTestServer:
    """The OAuth 2.0 authorization server on 127.0.0.1, its knobs reset for this test (each
    test registers clients of its own with ``add_client``)."""
    oauth_server_session.reset()
    return oauth_server_session


@pytest.fixture(scope="session")
def oauth_tls_server_session(test_ca: TestCA) -> Iterator[OAuthTestServer]:
    yield from _running_server(test_ca)


@pytest.fixture
def oauth_tls_server(oauth_tls_server_session: OAuthTestServer) -> OAuthTestServer:
    """The same server over https (``ca.ca_cert`` is its CA), knobs reset for this test."""
    oauth_tls_server_session.reset()
    return oauth_tls_server_session


def introspect(server: OAuthTestServer, token: str) -> str | None:
    """Ask the server's introspection endpoint about ``token`` over HTTP, as a resource
    server does (RFC 7662); the user it is for, or None when it is not active."""
    basic = base64.b64encode(f"{INTROSPECTION_CLIENT}:{INTROSPECTION_SECRET}".encode())
    request = urllib.request.Request(
        server.introspection_url, data=urllib.parse.urlencode({"token": token}).encode(),
        headers={"Authorization": "Basic " + basic.decode()})
    context = ssl.create_default_context(cafile=server.ca.ca_cert) if server.ca else None
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        data = json.load(response)
    return data.get("username") if data.get("active") else None


@pytest.fixture
def smtp_oauth_server(oauth_server: OAuthTestServer) -> Iterator[SmtpTestServer]:
    """aiosmtpd offering XOAUTH2 and OAUTHBEARER (besides PLAIN/LOGIN), each token checked
    with the OAuth test server's introspection endpoint."""
    server = SmtpTestServer(introspect=lambda token: introspect(oauth_server, token))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dovecot_oauth_server(oauth_server_session: OAuthTestServer) -> Iterator[DovecotServer]:
    """A Dovecot offering SASL PLAIN XOAUTH2 OAUTHBEARER, tokens checked by introspection."""
    base = Path(tempfile.mkdtemp(prefix="commit-email-dovecot-oauth-"))
    try:
        server = start_dovecot(
            base, oauth2_introspection_url=oauth_server_session.introspection_url_with_credentials)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def dovecot_oauth(dovecot_oauth_server: DovecotServer,
                  oauth_server: OAuthTestServer) -> DovecotServer:
    """The OAuth Dovecot seen as a fresh user with an empty mailbox."""
    return dovecot_oauth_server.new_user()
