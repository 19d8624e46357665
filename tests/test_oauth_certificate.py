"""The Microsoft certificate credential (``certificate_file``) against a real authorization
server: MSAL signs an RFC 7523 ``private_key_jwt`` client assertion, and the tests' Authlib
server (over https, with the session's test CA, as MSAL requires) checks it with the
registered certificate's public key and thumbprint before it issues a token."""

from __future__ import annotations

import datetime
import json
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import attrs
import jwt  # PyJWT, requests and cryptography come with MSAL (the test extra has it)
import pytest
import requests.adapters
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from commit_email.config import Config, parse_config
from commit_email.errors import ConfigError, TokenRefused, TokenUnavailable
from commit_email.oauth import CertificateGrant, Credential, build_grant
from tests.oauth_fixtures import (
    SCOPE,
    OAuthTestServer,
    introspect,
    thumbprint,
)

pytestmark = pytest.mark.server

TENANT = "contoso.onmicrosoft.com"
PASSWORD_ENV = "COMMIT_EMAIL_TEST_CERT_PASSWORD"
PASSWORD = "correct horse battery staple"


@attrs.frozen
class AppCertificate:
    """A self-signed certificate and its private key, as an app registration holds one."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    def key_pem(self, password: str = "") -> bytes:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password.encode()) if password
            else serialization.NoEncryption())
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8, encryption)

    def write(self, directory: Path, form: str) -> Path:
        """The credential file in ``form``: ``pem`` (key + certificate in one file),
        ``pem-encrypted`` (the key encrypted with PASSWORD) or ``pfx`` (PKCS #12, PASSWORD)."""
        if form == "pfx":
            path = directory / "app.pfx"
            path.write_bytes(pkcs12.serialize_key_and_certificates(
                b"commit-email", self.key, self.certificate, None,
                serialization.BestAvailableEncryption(PASSWORD.encode())))
        else:
            path = directory / "app.pem"
            password = PASSWORD if form == "pem-encrypted" else ""
            path.write_bytes(self.key_pem(password)
                             + self.certificate.public_bytes(serialization.Encoding.PEM))
        return path


def make_app_certificate(name: str) -> AppCertificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .sign(key, hashes.SHA256()))
    return AppCertificate(key=key, certificate=certificate)


@pytest.fixture(scope="module")
def app_cert() -> AppCertificate:
    return make_app_certificate("commit-email test app")


@pytest.fixture(scope="module")
def other_cert() -> AppCertificate:
    return make_app_certificate("a certificate nobody uploaded")


@pytest.fixture
def http_log(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every URL MSAL's requests session asks for (to show it asks nothing but the test
    server: no instance discovery at login.microsoftonline.com)."""
    urls: list[str] = []
    send = requests.adapters.HTTPAdapter.send

    def recording(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        urls.append(request.url)
        return send(self, request, *args, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", recording)
    return urls


def m365_config(tmp_path: Path, client_id: str, certificate: Path, *,
                password: bool = False) -> Config:
    # the scope the server grants (so that a token in MSAL's own cache would be found)
    section: dict[str, Any] = {"provider": "microsoft", "tenant": TENANT, "scope": SCOPE,
                               "client_id": client_id, "certificate_file": str(certificate)}
    if password:
        section["certificate_password_env"] = PASSWORD_ENV
    return parse_config({"connector": {"state_dir": str(tmp_path / "state")},
                         "store": {"url": "memory:"}, "oauth": {"m365": section}})


def certificate_grant(config: Config, server: OAuthTestServer) -> CertificateGrant:
    """The grant of ``[oauth.m365]``, its authority the test server (trusted via its CA)."""
    oauth = config.oauth["m365"]
    assert server.ca is not None
    return CertificateGrant(oauth, config.resolve_path(oauth.certificate_file),
                            authority=f"{server.url}/{TENANT}", ca_file=server.ca.ca_cert)


def make_grant(tmp_path: Path, server: OAuthTestServer, cert: AppCertificate, form: str = "pem",
          *, registered: AppCertificate | None = None,
          monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[CertificateGrant, str]:
    """Register an app with ``registered`` (default ``cert``) and configure ``cert`` in
    ``form``; the grant and the mailbox the app's tokens open."""
    user = f"support-{uuid.uuid4().hex[:6]}"
    client = server.add_certificate_client(user, (registered or cert).certificate)
    password = form in ("pfx", "pem-encrypted")
    if password:
        assert monkeypatch is not None
        monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    config = m365_config(tmp_path, client.client_id, cert.write(tmp_path, form),
                         password=password)
    return certificate_grant(config, server), user


@pytest.mark.parametrize("form", ["pem", "pem-encrypted", "pfx"])
def test_token_for_a_certificate(tmp_path: Path, oauth_tls_server: OAuthTestServer,
                                 app_cert: AppCertificate, form: str, http_log: list[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    grant, user = make_grant(tmp_path, oauth_tls_server, app_cert, form, monkeypatch=monkeypatch)
    client_id = grant.oauth.client_id
    before = time.time()
    token = grant.fetch()

    # a token the server issued to this app, for its mailbox, as a resource server sees it
    assert introspect(oauth_tls_server, token.value) == user
    assert token.scope == SCOPE
    assert before + oauth_tls_server.expires_in - 5 <= token.expires_at \
        <= time.time() + oauth_tls_server.expires_in
    assert oauth_tls_server.grants["client_credentials"] == 1

    # what MSAL sent: one assertion naming the certificate by its thumbprint, for this
    # token endpoint, from this client; accepted by the server's checks of exactly that
    [assertion] = oauth_tls_server.assertions
    header, claims = assertion["header"], assertion["claims"]
    if form.startswith("pem"):  # our PEM reader hands MSAL the SHA-1 thumbprint
        assert header["x5t"].rstrip("=") == thumbprint(app_cert.certificate)
        assert header["alg"] == "RS256"
    else:  # MSAL reads the .pfx itself and names the certificate by its SHA-256
        named = {header.get("x5t#S256", "").rstrip("="), header.get("x5t", "").rstrip("=")}
        assert named & {thumbprint(app_cert.certificate, "sha256"),
                        thumbprint(app_cert.certificate)}
    assert claims["aud"] == oauth_tls_server.token_url
    assert claims["iss"] == claims["sub"] == client_id
    assert claims["exp"] > time.time()

    # MSAL asked the test server only: its discovery document, then the token endpoint
    assert oauth_tls_server.discoveries == [f"/{TENANT}/v2.0/.well-known/openid-configuration"]
    assert http_log
    assert all(url.startswith(oauth_tls_server.url + "/") for url in http_log), http_log
    assert not any("microsoftonline" in url for url in http_log)


def test_build_grant_picks_the_certificate(tmp_path: Path, app_cert: AppCertificate) -> None:
    config = m365_config(tmp_path, "app-id", app_cert.write(tmp_path, "pem"))
    grant = build_grant(config, config.oauth["m365"])
    assert isinstance(grant, CertificateGrant)
    assert grant.certificate == tmp_path / "app.pem"
    assert "BEGIN" not in repr(grant)


def test_unknown_certificate_is_refused(tmp_path: Path, oauth_tls_server: OAuthTestServer,
                                        app_cert: AppCertificate,
                                        other_cert: AppCertificate) -> None:
    grant, _ = make_grant(tmp_path, oauth_tls_server, other_cert, registered=app_cert)
    with pytest.raises(TokenRefused) as caught:
        grant.fetch()
    assert caught.value.error == "invalid_client"
    message = str(caught.value)
    assert message.startswith("oauth m365: certificate token request")
    assert "no certificate with this thumbprint" in message  # the provider's reason
    assert f"certificate in {tmp_path / 'app.pem'} is uploaded" in message
    # nothing of the key, the certificate or the signed assertion
    pem = other_cert.key_pem().decode() + other_cert.certificate.public_bytes(
        serialization.Encoding.PEM).decode()
    for line in pem.splitlines():
        if "-----" not in line:
            assert line not in message
    assert "PRIVATE KEY" not in message
    assert "eyJ" not in message  # a JWT's first bytes, base64url of '{"'
    assert oauth_tls_server.grants["client_credentials"] == 0
    # the server saw the other certificate's thumbprint, and refused before issuing
    [assertion] = oauth_tls_server.assertions
    assert assertion["header"]["x5t"].rstrip("=") == thumbprint(other_cert.certificate)


def test_wrong_pfx_password(tmp_path: Path, oauth_tls_server: OAuthTestServer,
                            app_cert: AppCertificate, monkeypatch: pytest.MonkeyPatch) -> None:
    grant, _ = make_grant(tmp_path, oauth_tls_server, app_cert, "pfx", monkeypatch=monkeypatch)
    monkeypatch.setenv(PASSWORD_ENV, "not the password")
    with pytest.raises(TokenRefused) as caught:
        grant.fetch()
    assert caught.value.error == "invalid_client"
    assert str(caught.value).startswith("oauth m365: certificate token request")
    assert str(tmp_path / "app.pfx") in str(caught.value)
    assert "not the password" not in str(caught.value)
    assert oauth_tls_server.assertions == []


@pytest.mark.parametrize("damage, message", [
    ("corrupt", "cannot be read"), ("encrypted", "is encrypted: set certificate_password_env"),
])
def test_a_pem_key_that_cannot_be_used_is_a_config_error_before_any_request(
        damage: str, message: str, tmp_path: Path, oauth_tls_server: OAuthTestServer,
        app_cert: AppCertificate) -> None:
    """Found when the application is built, naming the key, not when MSAL first signs
    (where it would pass for a network fault and be retried forever)."""
    grant, _ = make_grant(tmp_path, oauth_tls_server, app_cert)
    pem = grant.certificate.read_text()
    begin = pem.index("-----BEGIN PRIVATE KEY-----") + len("-----BEGIN PRIVATE KEY-----\n")
    if damage == "corrupt":
        pem = pem[:begin] + "A" * 64 + pem[begin + 64:]
    else:
        pem = app_cert.key_pem(PASSWORD).decode() + pem[pem.index("-----BEGIN CERTIFICATE"):]
    grant.certificate.write_text(pem)
    with pytest.raises(ConfigError, match=message) as caught:
        grant.fetch()
    assert caught.value.key == "oauth.m365.certificate_file"
    assert "PRIVATE KEY" not in str(caught.value)
    assert oauth_tls_server.discoveries == [] and oauth_tls_server.assertions == []


def test_authority_unreachable(tmp_path: Path, oauth_tls_server: OAuthTestServer,
                               app_cert: AppCertificate) -> None:
    grant, _ = make_grant(tmp_path, oauth_tls_server, app_cert)
    oauth_tls_server.down = True  # the discovery document answers 503
    with pytest.raises(TokenUnavailable, match=r"^oauth m365: certificate token request"):
        grant.fetch()
    oauth_tls_server.down = False
    assert grant.fetch().value  # the next attempt gets through


def test_untrusted_authority_certificate(tmp_path: Path, oauth_tls_server: OAuthTestServer,
                                         app_cert: AppCertificate) -> None:
    """Without the test CA the server's certificate is not trusted: no token is asked for."""
    user = "support-untrusted"
    client = oauth_tls_server.add_certificate_client(user, app_cert.certificate)
    config = m365_config(tmp_path, client.client_id, app_cert.write(tmp_path, "pem"))
    oauth = config.oauth["m365"]
    grant = CertificateGrant(oauth, tmp_path / "app.pem",
                             authority=f"{oauth_tls_server.url}/{TENANT}")
    with pytest.raises(TokenUnavailable, match="certificate token request"):
        grant.fetch()
    assert oauth_tls_server.discoveries == []
    assert oauth_tls_server.assertions == []


def test_missing_msal(tmp_path: Path, oauth_tls_server: OAuthTestServer,
                      app_cert: AppCertificate, monkeypatch: pytest.MonkeyPatch) -> None:
    grant, _ = make_grant(tmp_path, oauth_tls_server, app_cert)
    monkeypatch.setitem(sys.modules, "msal", None)  # import msal raises ImportError
    credential = Credential("m365", grant)
    with pytest.raises(ConfigError) as caught:
        credential.access_token()
    assert "commit-email[microsoft]" in str(caught.value)
    assert caught.value.key == "oauth.m365.certificate_file"
    assert oauth_tls_server.discoveries == []


def test_token_cached_by_credential(tmp_path: Path, oauth_tls_server: OAuthTestServer,
                                    app_cert: AppCertificate) -> None:
    grant, user = make_grant(tmp_path, oauth_tls_server, app_cert)
    credential = Credential("m365", grant)
    first = credential.access_token()
    assert credential.access_token() is first
    assert credential.access_token(valid_for=600) is first
    assert oauth_tls_server.grants["client_credentials"] == 1

    # a token the mail server refused is not handed out again: the grant asks the server
    # for a new one (MSAL's own cache must not give the refused token back)
    oauth_tls_server.revoke_access_tokens(user)
    assert introspect(oauth_tls_server, first.value) is None
    credential.reject(first)
    second = credential.access_token()
    assert second.value != first.value
    assert introspect(oauth_tls_server, second.value) == user
    assert oauth_tls_server.grants["client_credentials"] == 2

    # a session that would outlive the cached token gets a new one too
    third = credential.access_token(valid_for=oauth_tls_server.expires_in)
    assert third.value not in (first.value, second.value)
    assert oauth_tls_server.grants["client_credentials"] == 3


# -- the server's checks, so that an accepted MSAL assertion means something ----------------


def post_assertion(server: OAuthTestServer, client_id: str,
                   assertion: str) -> tuple[int, dict[str, Any]]:
    assert server.ca is not None

    body = urllib.parse.urlencode({
        "grant_type": "client_credentials", "client_id": client_id, "scope": SCOPE,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion}).encode()
    context = ssl.create_default_context(cafile=server.ca.ca_cert)
    request = urllib.request.Request(server.token_url, data=body)
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.load(exc)


#: each flaw, and the reason the server gives for refusing it
FLAWS = {"expired": "expired", "audience": "'aud'", "issuer": "Issuer and Subject",
         "signature": "bad_signature", "thumbprint": "thumbprint", "replayed": "used before"}


@pytest.mark.parametrize("flaw", [None, *FLAWS])
def test_server_checks_the_assertion(oauth_tls_server: OAuthTestServer,
                                     app_cert: AppCertificate, other_cert: AppCertificate,
                                     flaw: str | None) -> None:
    client = oauth_tls_server.add_certificate_client("support-checks", app_cert.certificate)
    now = int(time.time())
    claims = {"aud": oauth_tls_server.token_url, "iss": client.client_id,
              "sub": client.client_id, "iat": now, "exp": now + 600, "jti": str(uuid.uuid4())}
    signer, named = app_cert, app_cert
    if flaw == "expired":
        claims.update(iat=now - 900, exp=now - 300)
    elif flaw == "audience":
        claims["aud"] = oauth_tls_server.url + "/other/token"
    elif flaw == "issuer":
        claims["iss"] = "someone-else"
    elif flaw == "signature":  # the registered certificate's thumbprint, another key
        signer = other_cert
    elif flaw == "thumbprint":
        named = other_cert
    assertion = jwt.encode(claims, signer.key_pem().decode(), algorithm="RS256",
                           headers={"x5t": thumbprint(named.certificate)})
    if flaw == "replayed":
        oauth_tls_server.reject_replayed_assertions = True
        assert post_assertion(oauth_tls_server, client.client_id, assertion)[0] == 200
    status, answer = post_assertion(oauth_tls_server, client.client_id, assertion)
    if flaw is None:
        assert status == 200
        assert introspect(oauth_tls_server, answer["access_token"]) == "support-checks"
    else:
        assert status in (400, 401)
        assert answer["error"] == "invalid_client"
        assert FLAWS[flaw] in answer["error_description"]
