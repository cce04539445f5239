"""Handshake security: bearer tokens (HMAC-signed JWT or a static list) and the Origin allow-list. Pure.

A token comes from `Authorization: Bearer <token>` or the `token` query parameter (browsers cannot
set headers on a WebSocket). When authentication is on, the token decides the session a client
may use: the JWT claim `sid` (or `session_id`), or the session a static token maps to; an empty
session means the token may see every session (an operator token).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs

import jwt


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a connection is, and the session it is bound to ("" = any session)."""

    user_id: str = ""
    session_id: str = ""
    #: "none" (auth off), "jwt" or "static".
    method: str = "none"


ANONYMOUS = Principal()


class HandshakeRefused(Exception):
    """The handshake is refused with an HTTP status (401 or 403) and a reason for the body."""

    def __init__(self, status: int, reason: str, label: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        #: Short metric label, e.g. "missing_token".
        self.label = label


def bearer_token(authorization: str | None, query: str) -> str | None:
    """The token from an `Authorization: Bearer` header, else from the `token` query parameter."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    values = parse_qs(query).get("token")
    return values[0] if values and values[0] else None


class Authenticator:
    def __init__(
        self,
        jwt_secret: str = "",
        jwt_audience: str = "",
        static_tokens: Mapping[str, str] | None = None,
        leeway_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.jwt_secret = jwt_secret
        self.jwt_audience = jwt_audience
        self.static_tokens = dict(static_tokens or {})
        self.leeway = leeway_seconds
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return bool(self.jwt_secret or self.static_tokens)

    def authenticate(self, token: str | None) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        if not token:
            raise HandshakeRefused(
                401, "missing token: send 'Authorization: Bearer <token>' or ?token=", "missing_token"
            )
        for known, session in self.static_tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return Principal(user_id="", session_id=session, method="static")
        if not self.jwt_secret:
            raise HandshakeRefused(401, "invalid token", "invalid_token")
        try:
            claims = jwt.decode(
                token,
                self.jwt_secret,
                algorithms=["HS256"],
                audience=self.jwt_audience or None,
                leeway=self.leeway,
                options={"require": ["exp"], "verify_aud": bool(self.jwt_audience)},
            )
        except jwt.ExpiredSignatureError:
            raise HandshakeRefused(401, "token expired", "expired_token") from None
        except jwt.InvalidAudienceError:
            raise HandshakeRefused(401, f"token audience is not {self.jwt_audience!r}", "invalid_token") from None
        except jwt.MissingRequiredClaimError as exc:
            raise HandshakeRefused(401, f"token lacks the {exc.claim!r} claim", "invalid_token") from None
        except jwt.InvalidTokenError as exc:
            raise HandshakeRefused(401, f"invalid token: {exc}", "invalid_token") from None
        session = claims.get("sid") or claims.get("session_id") or ""
        return Principal(user_id=str(claims.get("sub", "")), session_id=str(session), method="jwt")


class OriginPolicy:
    """Browsers always send Origin; an empty allow-list or "*" allows every origin.

    Requests without an Origin header (non-browser clients, which could forge one anyway) are
    allowed unless `require_origin` is set.
    """

    def __init__(self, allowed: Sequence[str], require_origin: bool = False) -> None:
        self.allowed = frozenset(o.rstrip("/") for o in allowed)
        self.require_origin = require_origin

    def check(self, origin: str | None) -> None:
        if origin is None:
            if self.require_origin:
                raise HandshakeRefused(403, "an Origin header is required", "origin")
            return
        if not self.allowed or "*" in self.allowed or origin.rstrip("/") in self.allowed:
            return
        raise HandshakeRefused(403, f"origin {origin} is not allowed", "origin")
