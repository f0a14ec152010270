"""Access control: bearer tokens with roles, checked before any RPC runs.

==========  ===========================================================================
role        may call
==========  ===========================================================================
``query``   Recommend, RecommendBatch, GetStatus
``ingest``  the above and IngestEvents
``admin``   everything: also DeleteUser and SwapVersion
==========  ===========================================================================

A call carries ``authorization: Bearer <token>`` metadata. No token, or one that matches no
configured token: ``UNAUTHENTICATED``; a token whose role does not cover the method:
``PERMISSION_DENIED``. Tokens are compared in constant time against every configured token (no early
exit, so the time does not tell how close a guess was), and never logged or counted by value: a
rejection logs the method and the reason only. Health checks and server reflection stay open
unless ``[auth] protect_health`` is set (then any valid token opens them).

Tokens come from ``[auth] tokens`` (``"role:token,role:token"``, e.g. from the environment as
``CROSSREC_AUTH__TOKENS``) and/or ``[auth] tokens_file`` (one ``role token`` pair per line, ``#``
comments). With no token configured, access control is off (the default, on 127.0.0.1).
"""

from __future__ import annotations

import hmac
import logging
import time
from pathlib import Path

import grpc

log = logging.getLogger(__name__)

SERVICE = "/crossrec.v1.RecommendService/"
ROLES = {
    "query": frozenset({"Recommend", "RecommendBatch", "GetStatus"}),
    "ingest": frozenset({"Recommend", "RecommendBatch", "GetStatus", "IngestEvents"}),
    "admin": frozenset(
        {"Recommend", "RecommendBatch", "GetStatus", "IngestEvents", "DeleteUser", "SwapVersion"}
    ),
}


#: Method names that may become a metric label: ours, health and reflection. Anything else a
#: caller makes up is counted under "unknown", so refused calls cannot grow the metrics.
KNOWN_METHODS = ROLES["admin"] | {
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}
#: At most this many refusal lines are logged per ``_LOG_WINDOW_S``; the rest are counted and the
#: count is reported with the next line logged.
_LOG_LINES, _LOG_WINDOW_S = 10, 10.0


class AuthConfigError(ValueError):
    """Tokens configured wrongly (unknown role, empty or repeated token)."""


def parse_tokens(inline: str, file: str) -> list[tuple[bytes, str]]:
    """(token, role) pairs from ``[auth] tokens`` and ``tokens_file``; raises
    :class:`AuthConfigError` naming the entry (by position, never by value) that is wrong."""
    entries: list[tuple[str, str, str]] = []  # (role, token, where)
    for i, item in enumerate(p for p in inline.split(",") if p.strip()):
        role, _, token = item.strip().partition(":")
        entries.append((role.strip(), token.strip(), f"auth.tokens entry {i + 1}"))
    if file:
        for n, line in enumerate(Path(file).read_text().splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if line:
                role, _, token = line.partition(" ")
                entries.append((role.strip(), token.strip(), f"{file}:{n}"))
    out, seen = [], set()
    for role, token, where in entries:
        if role not in ROLES:
            # Never echoed: a malformed entry ("query=SECRET", "admin SECRET" inline) puts the
            # token where the role should be.
            raise AuthConfigError(
                f"{where}: not a known role followed by a token; entries are 'role:token' inline "
                f"or 'role token' per line in the file, roles {sorted(ROLES)}"
            )
        if len(token) < 16:
            raise AuthConfigError(f"{where}: a token needs at least 16 characters")
        if token in seen:
            raise AuthConfigError(f"{where}: the same token is configured twice")
        seen.add(token)
        out.append((token.encode(), role))
    return out


class TokenAuth(grpc.aio.ServerInterceptor):
    """The interceptor the server installs when tokens are configured."""

    def __init__(self, tokens: list[tuple[bytes, str]], protect_health: bool, metrics) -> None:
        self.tokens = tokens
        self.protect_health = protect_health
        self.metrics = metrics
        self._window_start = float("-inf")
        self._logged = 0
        self._suppressed = 0

    def role_of(self, token: bytes) -> str | None:
        role = None
        for known, known_role in self.tokens:  # every comparison runs: no early exit
            if hmac.compare_digest(known, token):
                role = known_role
        return role

    async def intercept_service(self, continuation, details):
        method = details.method
        ours = method.startswith(SERVICE)
        if not ours and not self.protect_health:
            return await continuation(details)
        name = method.removeprefix(SERVICE) if ours else method
        token = _bearer(details.invocation_metadata)
        role = self.role_of(token) if token is not None else None
        if role is None:
            reason = "no bearer token" if token is None else "unknown token"
            return self._refuse(name, grpc.StatusCode.UNAUTHENTICATED, reason)
        if ours and name not in ROLES[role]:
            return self._refuse(
                name, grpc.StatusCode.PERMISSION_DENIED, f"role {role} may not call {name}"
            )
        return await continuation(details)

    def _refuse(self, method: str, code: grpc.StatusCode, reason: str):
        known = method in KNOWN_METHODS
        label = method if known else "unknown"
        self._log_refusal(method if known else f"unknown method {method[:64]!r}", reason)
        self.metrics.call(label, code.name)

        async def refuse(requests, context):
            await context.abort(code, f"{reason}: {label} needs a token with a role allowing it")

        # Registered as client-streaming although every method is unary: a streaming handler is
        # started before any message is received, and this one never reads its stream, so the
        # body of a refused call is never taken in (400 refused 3.9 MB calls held 1.4 GB).
        return grpc.stream_unary_rpc_method_handler(refuse)

    def _log_refusal(self, what: str, reason: str) -> None:
        """One INFO line per refusal, at most ``_LOG_LINES`` per window (a flood of refused calls
        must not fill the disk); what was left out is counted on the next line."""
        now = time.monotonic()
        if now - self._window_start >= _LOG_WINDOW_S:
            self._window_start, self._logged = now, 0
        if self._logged >= _LOG_LINES:
            self._suppressed += 1
            return
        self._logged += 1
        more = f" ({self._suppressed} more refusals not logged)" if self._suppressed else ""
        self._suppressed = 0
        log.info("%s refused: %s%s", what, reason, more)


def _bearer(metadata) -> bytes | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip().encode()
            return b""  # present but malformed: an unknown token
    return None


def server_credentials(cert_file: str, key_file: str, client_ca_file: str):
    """TLS credentials for the server; with ``client_ca_file`` clients must present a
    certificate it signed."""
    key = Path(key_file).read_bytes()
    cert = Path(cert_file).read_bytes()
    if client_ca_file:
        return grpc.ssl_server_credentials(
            [(key, cert)],
            root_certificates=Path(client_ca_file).read_bytes(),
            require_client_auth=True,
        )
    return grpc.ssl_server_credentials([(key, cert)])
