"""The gRPC core's own count of a server's calls (channelz): every call the transport saw,
including those refused before any Python ran - past ``maximum_concurrent_rpcs``, over the
message-size limit, to methods that do not exist - which ``crossrec_requests_total`` cannot see.
Exported as ``crossrec_transport_calls_total{outcome="started|succeeded|failed"}``.

gRPC Python exposes channelz to Python only through its Cython layer (the ``grpcio-channelz``
package wraps the same functions as a gRPC service); when that layer lacks them the counts are
simply not exported.
"""

from __future__ import annotations

import json
import logging

log = logging.getLogger(__name__)

try:
    from grpc._cython import cygrpc

    _get_servers = cygrpc.channelz_get_servers
    _get_server = cygrpc.channelz_get_server
except (ImportError, AttributeError):  # pragma: no cover - a gRPC without channelz
    _get_servers = _get_server = None

#: The channel argument that keeps channelz on (gRPC's default, stated).
CHANNELZ_OPTION = ("grpc.enable_channelz", 1)


def server_ids() -> set[int]:
    """Channelz ids of this process's gRPC servers (empty without channelz)."""
    if _get_servers is None:
        return set()
    ids: set[int] = set()
    start = 0
    while True:
        page = json.loads(_get_servers(start))
        servers = page.get("server", [])
        ids.update(int(s["ref"]["serverId"]) for s in servers)
        if page.get("end", True) or not servers:
            return ids
        start = max(ids) + 1


def created_server(before: set[int]) -> int | None:
    """The id of the one server created since ``before`` was taken; None when that is not one
    (servers created at the same time in other threads, or no channelz)."""
    new = server_ids() - before
    return new.pop() if len(new) == 1 else None


def call_counts(server_id: int) -> dict[str, int]:
    """Calls the server's transport has seen: started, succeeded, failed."""
    if _get_server is None:
        return {}
    try:
        data = json.loads(_get_server(server_id))["server"].get("data", {})
    except (ValueError, KeyError) as exc:  # the server is gone (stopped)
        log.debug("channelz has no server %d: %s", server_id, exc)
        return {}
    return {
        "started": int(data.get("callsStarted", 0)),
        "succeeded": int(data.get("callsSucceeded", 0)),
        "failed": int(data.get("callsFailed", 0)),
    }
