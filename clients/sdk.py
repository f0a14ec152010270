"""Typed Python client of the crossrec engine (sync and asyncio). Callers never touch protobufs.

    with CrossrecClient("localhost:50051") as client:
        client.ingest([Event("u1", "i42", "purchase")])
        for item in client.recommend("u1", k=10).items:
            print(item.item_id, item.category, item.score)

Every call has a deadline (``timeout`` seconds, per call or per client). Retries are left to gRPC's
own retry policy, set on the channel for UNAVAILABLE only; every RPC is safe to retry because
ingestion is idempotent (events carry ids, assigned here when the caller gives none) and the rest
do not change state or are idempotent (DeleteUser). Both clients run the same :class:`Call` per
RPC (``clients/messages.py``); they differ only in how they wait.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from clients import messages as m
from clients.messages import (  # noqa: F401  (the SDK's public names)
    ACTION,
    OBJECTIVE,
    CrossrecError,
    Event,
    IngestResult,
    Recommendations,
    RecommendedItem,
    RecommendOptions,
    Status,
    rpc_error,
)
from crossrec.v1 import service_pb2_grpc

_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "crossrec.v1.RecommendService"}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
#: Each client its own connection (not one shared by every channel of the process to the same
#: address): an engine serving with several processes spreads connections over them.
CHANNEL_OPTIONS = [
    ("grpc.enable_retries", 1),
    ("grpc.service_config", _SERVICE_CONFIG),
    ("grpc.use_local_subchannel_pool", 1),
]


@dataclass(frozen=True)
class Connection:
    """How to reach an engine beyond its address: a bearer ``token`` (sent as ``authorization``
    metadata on every call), and TLS: ``tls_ca`` (PEM file of the CA that signed the server's
    certificate; set it to use TLS), ``tls_cert`` / ``tls_key`` (a client certificate, when the
    engine requires one), ``server_name`` (the name to check the server's certificate against,
    when it differs from the target's host)."""

    token: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    server_name: str = ""

    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        return (("authorization", f"Bearer {self.token}"),) if self.token else None

    def channel(self, target: str, aio: bool = False):
        options = list(CHANNEL_OPTIONS)
        if not self.tls_ca:
            make = grpc.aio.insecure_channel if aio else grpc.insecure_channel
            return make(target, options=options)
        from pathlib import Path

        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(self.tls_ca).read_bytes(),
            private_key=Path(self.tls_key).read_bytes() if self.tls_key else None,
            certificate_chain=Path(self.tls_cert).read_bytes() if self.tls_cert else None,
        )
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        if aio:
            return grpc.aio.secure_channel(target, credentials, options=options)
        return grpc.secure_channel(target, credentials, options=options)


class _Client:
    """What both clients share: the channel, the token, the stub, the default deadline."""

    def __init__(self, channel, connection: Connection, timeout: float) -> None:
        self._channel = channel
        self._metadata = connection.metadata()
        self._stub = service_pb2_grpc.RecommendServiceStub(channel)
        self.timeout = timeout

    def _timeout(self, call: m.Call, timeout: float | None) -> float:
        """The caller's deadline when given, else the client's, raised to what the call needs."""
        return timeout or max(self.timeout, call.min_timeout or 0.0)


class CrossrecClient(_Client):
    """Blocking client. ``timeout``: default deadline of every call, seconds; ``connection``:
    token and TLS settings (default: plaintext, no token)."""

    def __init__(
        self,
        target: str,
        timeout: float = 2.0,
        channel: grpc.Channel | None = None,
        connection: Connection = Connection(),
    ) -> None:
        self.target = target
        super().__init__(channel or connection.channel(target), connection, timeout)

    def __enter__(self) -> CrossrecClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _run(self, call: m.Call, timeout: float | None):
        method = getattr(self._stub, call.method)
        try:
            response = method(
                call.request, timeout=self._timeout(call, timeout), metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise rpc_error(exc) from None
        return call.parse(response)

    def recommend(
        self, user_id: str = "", timeout: float | None = None, **options
    ) -> Recommendations:
        return self._run(m.recommend_call(user_id, RecommendOptions(**options)), timeout)

    def recommend_batch(
        self, requests: Iterable[tuple[str, RecommendOptions]], timeout: float | None = None
    ) -> list[Recommendations]:
        return self._run(m.recommend_batch_call(requests), timeout)

    def ingest(self, events: Iterable[Event], timeout: float | None = None) -> IngestResult:
        return self._run(m.ingest_call(events), timeout)

    def delete_user(self, user_id: str, timeout: float | None = None) -> int:
        return self._run(m.delete_user_call(user_id), timeout)

    def status(self, timeout: float | None = None) -> Status:
        return self._run(m.status_call(), timeout)

    def swap_version(
        self,
        artifact: str = "",
        model: str = "",
        retrieval_only: bool = False,
        arm: str = "a",
        timeout: float | None = None,
    ) -> tuple[str, str, bool]:
        """Serve another index version (and model) for ``arm``; empty paths: the arm's
        configured roots as their LATEST names them now. Returns (index version, model version,
        changed). Needs the admin role."""
        return self._run(m.swap_version_call(artifact, model, retrieval_only, arm), timeout)


class AsyncCrossrecClient(_Client):
    """The same API for asyncio (``grpc.aio``)."""

    def __init__(
        self, target: str, timeout: float = 2.0, connection: Connection = Connection()
    ) -> None:
        super().__init__(connection.channel(target, aio=True), connection, timeout)

    async def __aenter__(self) -> AsyncCrossrecClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _run(self, call: m.Call, timeout: float | None):
        method = getattr(self._stub, call.method)
        try:
            response = await method(
                call.request, timeout=self._timeout(call, timeout), metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc) from None
        return call.parse(response)

    async def recommend(
        self, user_id: str = "", timeout: float | None = None, **options
    ) -> Recommendations:
        return await self._run(m.recommend_call(user_id, RecommendOptions(**options)), timeout)

    async def recommend_batch(
        self, requests: Iterable[tuple[str, RecommendOptions]], timeout: float | None = None
    ) -> list[Recommendations]:
        return await self._run(m.recommend_batch_call(requests), timeout)

    async def ingest(self, events: Iterable[Event], timeout: float | None = None) -> IngestResult:
        return await self._run(m.ingest_call(events), timeout)

    async def delete_user(self, user_id: str, timeout: float | None = None) -> int:
        return await self._run(m.delete_user_call(user_id), timeout)

    async def status(self, timeout: float | None = None) -> Status:
        return await self._run(m.status_call(), timeout)

    async def swap_version(
        self,
        artifact: str = "",
        model: str = "",
        retrieval_only: bool = False,
        arm: str = "a",
        timeout: float | None = None,
    ) -> tuple[str, str, bool]:
        """As :meth:`CrossrecClient.swap_version`."""
        return await self._run(m.swap_version_call(artifact, model, retrieval_only, arm), timeout)
