"""``commit-email auth login``: a person signs in once and the refresh token is kept.

Two flows, both for ``grant = "refresh_token"`` sections:

- the **device code** flow (RFC 8628), Microsoft's choice for a machine without a browser:
  the command prints a URL and a code, the person enters the code on any device and signs
  in, and the command, polling the token endpoint meanwhile, receives the tokens;
- the **loopback** authorization-code flow with PKCE (RFC 8252 §7.3, RFC 7636), Google's
  for installed apps: the command listens on ``127.0.0.1`` on a free port, prints the
  sign-in URL, and the browser comes back to it with the code, which is exchanged for
  the tokens (Google's device flow does not allow the mail scope).

Either way the refresh token goes to ``state_dir/oauth/NAME.json`` through
:class:`~commit_email.oauth.RefreshTokenStore` (0600, atomic). Nothing here is imported by
``run``.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import logging
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from .errors import ConfigError, TokenRefused, TokenUnavailable
from .oauth import Opener, RefreshTokenStore, endpoints, post_token_request, refresh_token_path

if TYPE_CHECKING:
    from .config import Config, OAuthConfig

__all__ = ["choose_flow", "device_code_login", "login", "loopback_login"]

log = logging.getLogger(__name__)

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def choose_flow(oauth: OAuthConfig, requested: str = "") -> str:
    """``device`` or ``browser``: the one asked for, else the provider's (Microsoft: device
    code; Google: the loopback browser flow; generic: device code when it has a device
    endpoint)."""
    if requested:
        return requested
    if oauth.provider == "google":
        return "browser"
    if oauth.provider == "microsoft" or oauth.device_url:
        return "device"
    if endpoints(oauth).authorize_url:
        return "browser"
    raise ConfigError("set device_url or authorize_url to sign in",
                      key=f"oauth.{oauth.name}.device_url")


def login(config: Config, name: str, out: TextIO, *, flow: str = "",
          timeout: float = 900.0, opener: Opener | None = None,
          sleep: Callable[[float], None] = time.sleep) -> str:
    """Sign in for ``[oauth.NAME]`` and keep its refresh token; returns where it is kept."""
    try:
        oauth = config.oauth[name]
    except KeyError:
        known = ", ".join(sorted(config.oauth)) or "none"
        raise ConfigError(f"no section [oauth.{name}] (sections: {known})") from None
    if oauth.grant != "refresh_token":
        raise ConfigError(f"grant {oauth.grant!r} needs no sign-in (auth login is for "
                          "grant = \"refresh_token\")", key=f"oauth.{name}.grant")
    store = RefreshTokenStore(refresh_token_path(config, name))
    chosen = choose_flow(oauth, flow)
    if chosen == "device":
        refresh = device_code_login(oauth, out, timeout=timeout, opener=opener, sleep=sleep)
    else:
        refresh = loopback_login(oauth, out, timeout=timeout, opener=opener)
    store.save(refresh, client_id=oauth.client_id)
    return str(store.path)


def _client_form(oauth: OAuthConfig) -> dict[str, str]:
    form = {"client_id": oauth.client_id}
    secret = oauth.resolved_client_secret()
    if secret:
        form["client_secret"] = secret
    return form


def _refresh_token_of(data: dict[str, Any], oauth: OAuthConfig) -> str:
    refresh = data.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:
        hint = " (add offline_access to scope)" if oauth.provider == "microsoft" else ""
        raise TokenRefused(f"oauth {oauth.name}: signed in, but the provider issued no refresh "
                           f"token{hint}", error="no_refresh_token")
    return refresh


def device_code_login(oauth: OAuthConfig, out: TextIO, *, timeout: float = 900.0,
                      opener: Opener | None = None,
                      sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic) -> str:
    """The RFC 8628 flow; returns the refresh token."""
    ep = endpoints(oauth)
    if not ep.device_url:
        raise ConfigError("no device authorization endpoint", key=f"oauth.{oauth.name}.device_url")
    what = f"oauth {oauth.name}: device authorization"
    form = _client_form(oauth)
    if ep.scope:
        form["scope"] = ep.scope
    start = post_token_request(ep.device_url, form, timeout=oauth.timeout, what=what,
                               opener=opener)
    device_code = start.get("device_code")
    if not isinstance(device_code, str):
        raise TokenUnavailable(f"{what}: the answer has no device_code")
    uri = start.get("verification_uri") or start.get("verification_url") or ""
    print(f"To sign in, open {uri} and enter the code {start.get('user_code', '?')}",
          file=out, flush=True)
    interval = max(float(start.get("interval") or 5), 1.0)
    deadline = clock() + min(timeout, float(start.get("expires_in") or timeout))
    poll = {**_client_form(oauth), "grant_type": DEVICE_GRANT, "device_code": device_code}
    while True:
        sleep(interval)
        try:
            data = post_token_request(ep.token_url, poll, timeout=oauth.timeout,
                                      what=f"oauth {oauth.name}: sign-in", opener=opener)
        except TokenRefused as exc:
            if exc.error == "authorization_pending":
                pass
            elif exc.error == "slow_down":
                interval += 5  # RFC 8628 §3.5
            else:
                raise
        else:
            return _refresh_token_of(data, oauth)
        if clock() > deadline:
            raise TokenRefused(f"oauth {oauth.name}: nobody signed in within "
                               f"{timeout:g} s", error="expired_token")


class _Redirect(http.server.BaseHTTPRequestHandler):
    """The one request the browser makes back to the loopback address."""

    server: _LoopbackServer

    def do_GET(self) -> None:
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        if "code" not in query and "error" not in query:
            self.send_response(404)
            self.end_headers()
            return
        self.server.result = query
        ok = "code" in query and query.get("state") == self.server.state
        body = (b"Signed in: you can close this window." if ok
                else b"Sign-in failed: see the command's output.")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.done.set()

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _LoopbackServer(http.server.HTTPServer):
    def __init__(self, state: str) -> None:
        super().__init__(("127.0.0.1", 0), _Redirect)
        self.state = state
        self.result: dict[str, str] | None = None
        self.done = threading.Event()


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def loopback_login(oauth: OAuthConfig, out: TextIO, *, timeout: float = 900.0,
                   opener: Opener | None = None) -> str:
    """The loopback authorization-code flow with PKCE; returns the refresh token."""
    ep = endpoints(oauth)
    if not ep.authorize_url:
        raise ConfigError("no authorization endpoint", key=f"oauth.{oauth.name}.authorize_url")
    state = secrets.token_urlsafe(16)
    verifier, challenge = _pkce()
    server = _LoopbackServer(state)
    redirect_uri = f"http://127.0.0.1:{server.server_port}/"
    params = {"response_type": "code", "client_id": oauth.client_id,
              "redirect_uri": redirect_uri, "state": state, "code_challenge": challenge,
              "code_challenge_method": "S256"}
    if ep.scope:
        params["scope"] = ep.scope
    if oauth.provider == "google":
        params.update(access_type="offline", prompt="consent")  # else no refresh token
    sep = "&" if "?" in ep.authorize_url else "?"
    url = ep.authorize_url + sep + urllib.parse.urlencode(params)
    thread = threading.Thread(target=server.serve_forever, args=(0.1,),
                              name="commit-email-auth-login", daemon=True)
    thread.start()
    try:
        print(f"To sign in, open this address in a browser on this machine:\n{url}\n"
              f"(waiting on {redirect_uri} for the browser to come back)", file=out, flush=True)
        if not server.done.wait(timeout):
            raise TokenRefused(f"oauth {oauth.name}: nobody signed in within {timeout:g} s",
                               error="expired_token")
    finally:
        server.shutdown()
        server.server_close()
    result = server.result or {}
    if "error" in result:
        said = result.get("error_description") or result["error"]
        raise TokenRefused(f"oauth {oauth.name}: sign-in refused ({said})",
                           error=result["error"])
    if result.get("state") != state:
        raise TokenRefused(f"oauth {oauth.name}: the answer's state does not match (an old or "
                           "forged redirect); try again", error="invalid_state")
    form = {**_client_form(oauth), "grant_type": "authorization_code",
            "code": result.get("code", ""), "redirect_uri": redirect_uri,
            "code_verifier": verifier}
    data = post_token_request(ep.token_url, form, timeout=oauth.timeout,
                              what=f"oauth {oauth.name}: code exchange", opener=opener)
    return _refresh_token_of(data, oauth)
