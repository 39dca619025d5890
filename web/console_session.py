"""The web console's sessions and CSRF tokens (docs/ui.md): signed cookies, nothing stored per login.

A session cookie is ``<sid>.<expiry>.<authed>.<signature>``: a random id (`secrets.token_urlsafe`),
its expiry (Unix seconds), whether the API key was given (1) or not (0: an anonymous session, which
only carries the CSRF token of the login form, or of every form when no key is configured), and an
HMAC-SHA256 of the three under a server secret. The secret is derived from GPU_SERVER_API_KEY, so
every server of a deployment sharing the key accepts the same cookies and a new key ends every
session; without a key it is random per process (the sessions then authorise nothing).

The CSRF token of a session is an HMAC of its id under the same secret: per session, checked with
`hmac.compare_digest`, never stored. Logging out revokes the session's id on this server until the
cookie would have expired anyway, in a map bounded to `MAX_REVOKED` ids (the oldest logouts drop out
first), so a long-running server does not grow.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

SESSION_TTL_S = 12 * 3600
MAX_REVOKED = 10_000
COOKIE_NAME = "gbt_console"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Session:
    """A verified session: its id, expiry (Unix seconds) and whether the API key was given."""

    sid: str
    expires: int
    authed: bool
    token: str  # the cookie value


class SessionSigner:
    """Makes and checks session cookies and CSRF tokens (HMAC under one secret); remembers logouts."""

    def __init__(self, api_key: str | None, ttl_s: int = SESSION_TTL_S, max_revoked: int = MAX_REVOKED) -> None:
        base = api_key.encode("utf-8", "surrogateescape") if api_key else secrets.token_bytes(32)
        self._secret = hmac.new(base, b"gpu_backtest console sessions v1", hashlib.sha256).digest()
        self.ttl_s = ttl_s
        self.max_revoked = max_revoked
        self._revoked: OrderedDict[str, int] = OrderedDict()

    def _sign(self, purpose: bytes, text: str) -> str:
        return _b64(hmac.new(self._secret, purpose + b"|" + text.encode("ascii"), hashlib.sha256).digest())

    def new(self, authed: bool, now: float | None = None) -> Session:
        """A fresh session (a new random id: logging in never keeps the anonymous session's id)."""
        sid = secrets.token_urlsafe(18)
        expires = int(now if now is not None else time.time()) + self.ttl_s
        payload = f"{sid}.{expires}.{int(authed)}"
        return Session(sid, expires, authed, f"{payload}.{self._sign(b'session', payload)}")

    def verify(self, token: str | None, now: float | None = None) -> Session | None:
        """The session a cookie value stands for; None when it is malformed, forged, expired or revoked."""
        if not token or len(token) > 200 or not token.isascii():
            return None
        parts = token.split(".")
        if len(parts) != 4 or parts[2] not in ("0", "1") or not parts[1].isdigit():
            return None
        sid, expires, authed, sig = parts
        if not hmac.compare_digest(sig.encode("ascii"), self._sign(b"session", f"{sid}.{expires}.{authed}")
                                   .encode("ascii")):
            return None
        if int(expires) <= (now if now is not None else time.time()) or sid in self._revoked:
            return None
        return Session(sid, int(expires), authed == "1", token)

    def csrf_token(self, session: Session) -> str:
        """The session's CSRF token (what every form carries)."""
        return self._sign(b"csrf", session.sid)

    def csrf_ok(self, session: Session | None, given: str | None) -> bool:
        """Whether ``given`` is ``session``'s CSRF token (constant-time comparison)."""
        if session is None or not given or not given.isascii():
            return False
        return hmac.compare_digest(given.encode("ascii"), self.csrf_token(session).encode("ascii"))

    def revoke(self, session: Session, now: float | None = None) -> None:
        """Log out: ``session`` is refused from now on (until its expiry; bounded memory)."""
        now = now if now is not None else time.time()
        self._revoked[session.sid] = session.expires
        self._revoked.move_to_end(session.sid)
        if len(self._revoked) > self.max_revoked:
            for sid in [s for s, exp in self._revoked.items() if exp <= now]:
                del self._revoked[sid]
            while len(self._revoked) > self.max_revoked:
                self._revoked.popitem(last=False)

    @property
    def revoked_count(self) -> int:
        """How many logged-out sessions are remembered."""
        return len(self._revoked)
