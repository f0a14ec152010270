"""Shard groups on Ray Serve: the index's shards split into groups, each group a Ray Serve
application (one deployment, ``[ray] group_replicas`` replicas) that opens the same index version
and answers searches for its shards only.

The engine stays the one gRPC front door and does everything else in its own process (profiles,
the popular and neighbour sources, features, ranking). A request's shard searches are batched per
group into one call (a Serve handle round trip costs milliseconds, not microseconds), sent to every
group concurrently, and awaited until the group's deadline: ``[ray] group_timeout_s``, and never
beyond half of what the request has left (the other half is for features, ranking and the answer).
A group that misses it, or fails, has its shards reported in ``Coverage.late_shards`` and the
answer is built from the groups that answered; with ``[ray] on_late = "fail"`` the request
fails with DEADLINE_EXCEEDED instead.

Versions: every index version gets its own applications (``crossrec-<version>-<id>-g<i>``), deployed
and ready before the engine serves the version, and deleted when the last request on the version
has finished. A swap is therefore blue-green across all groups at once, never group by group: no
response can mix versions, at the cost of both versions' groups in memory during the swap.

Groups are planned by size (:func:`plan_groups`): shards largest first, each into the group holding
the fewest items so far, so that groups balance memory and scan work.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.errors import DeadlineExceeded
from engine.retrieval.shard_search import LocalShards, ShardAnswers, ShardAsk
from indexer.artifact import IndexVersion, open_index

log = logging.getLogger(__name__)

ON_LATE = ("partial", "fail")


def plan_groups(counts: dict[str, int], groups: int) -> list[list[str]]:
    """``counts`` (shard -> items) into at most ``groups`` non-empty groups balanced by items:
    largest shard first (ties: shard id), each into the lightest group so far (ties: the first).
    Each group's shards are sorted by id."""
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    loads = [0] * min(groups, len(counts))
    members: list[list[str]] = [[] for _ in loads]
    for shard_id in sorted(counts, key=lambda s: (-counts[s], s)):
        g = loads.index(min(loads))
        loads[g] += counts[shard_id]
        members[g].append(shard_id)
    return [sorted(m) for m in members]


class ShardGroup:
    """One group's replica: the index version at ``path`` with only ``shard_ids`` loaded."""

    def __init__(
        self, path: str, version: str, shard_ids: Sequence[str], behaviour_rerank: int
    ) -> None:
        opened = open_index(path, verify=True, shards=shard_ids)
        if opened.version != version:
            raise RuntimeError(f"{path} holds index version {opened.version}, not {version}")
        self.shards = LocalShards(
            opened, opened.items["shard"].to_numpy(), behaviour_rerank, only=set(shard_ids)
        )

    def search(
        self, queries: np.ndarray, asks: list[ShardAsk]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return self.shards.search(queries, asks).found


def connect(address: str = "") -> bool:
    """Join the Ray cluster at ``address`` ("" : start a local one with this machine's cores) and
    start Serve without an HTTP proxy (the engine is the front door), unless already done.
    Returns whether this call connected (the caller then disconnects)."""
    import ray
    from ray import serve

    started = not ray.is_initialized()
    if started:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
    serve.start(proxy_location="Disabled")
    return started


def disconnect() -> None:
    """Leave Ray (a local Ray started by :func:`connect` stops, with its Serve applications)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


class RayShards:
    """A :class:`engine.retrieval.shard_search.ShardSearcher` over one version's shard groups on
    Ray Serve.

    Build with :meth:`deploy`; the groups' applications are deleted when this object is freed (the
    last request on its version has finished) or on :meth:`close`."""

    def __init__(
        self,
        version: IndexVersion,
        groups: list[list[str]],
        handles: list,
        apps: list[str],
        behaviour_rerank: int,
        timeout_s: float,
        on_late: str,
    ) -> None:
        _check_on_late(on_late)
        self.groups = groups
        self.handles = handles
        self.apps = apps
        self.group_of = {s: g for g, ids in enumerate(groups) for s in ids}
        self.behaviour = version.behaviour_dim > 0 and behaviour_rerank > 0
        self.timeout_s = timeout_s
        self.on_late = on_late
        self._finalizer = weakref.finalize(self, _delete_apps, list(apps))

    @classmethod
    def deploy(
        cls,
        version: IndexVersion,
        groups: int,
        replicas: int = 1,
        cpus: float = 1.0,
        behaviour_rerank: int = 200,
        timeout_s: float = 0.1,
        on_late: str = "partial",
    ) -> RayShards:
        """Deploy ``version``'s shards as ``groups`` Serve applications of ``replicas`` replicas
        (``cpus`` each) and wait until every one is ready."""
        from ray import serve

        _check_on_late(on_late)  # before anything is deployed

        counts = {e.id: e.count for e in version.info.shards}
        planned = plan_groups(counts, groups)
        handles, apps = [], []
        started = time.perf_counter()
        # Each deployment its own names: loading the same version again (a swap back, a reload)
        # must not update the groups that requests in flight still use.
        deployment_id = uuid.uuid4().hex[:8]
        try:
            for i, ids in enumerate(planned):
                name = f"crossrec-{version.version}-{deployment_id}-g{i}"
                deployment: Any = serve.deployment(
                    ShardGroup,
                    name="shards",
                    num_replicas=replicas,
                    ray_actor_options={"num_cpus": cpus},
                )
                app = deployment.bind(str(version.path), version.version, ids, behaviour_rerank)
                apps.append(name)
                handles.append(serve.run(app, name=name, route_prefix=None))
        except BaseException:
            _delete_apps(apps)
            raise
        log.info(
            "index %s: %d shard groups x %d replicas ready on Ray Serve in %.1f s",
            version.version,
            len(planned),
            replicas,
            time.perf_counter() - started,
        )
        return cls(version, planned, handles, apps, behaviour_rerank, timeout_s, on_late)

    def has_behaviour(self, shard_id: str) -> bool:
        return self.behaviour and shard_id in self.group_of

    def search(
        self, queries: np.ndarray, asks: list[ShardAsk], deadline: float | None = None
    ) -> ShardAnswers:
        by_group: dict[int, list[ShardAsk]] = {}
        for ask in asks:
            by_group.setdefault(self.group_of[ask.shard_id], []).append(ask)
        q = np.ascontiguousarray(queries, dtype=np.float32)
        answers = ShardAnswers()
        sent = []
        for g, group_asks in by_group.items():
            try:
                sent.append((g, group_asks, self.handles[g].search.remote(q, group_asks)))
            except Exception as exc:  # the group is gone (deleted, or no replica left)
                self._late(answers, g, group_asks, exc)
        now = time.monotonic()
        limit = now + self.timeout_s
        if deadline is not None:
            limit = min(limit, now + max(0.0, deadline - now) / 2)
        for g, group_asks, response in sent:
            try:
                answers.found.update(response.result(timeout_s=max(0.0, limit - time.monotonic())))
            except Exception as exc:  # timed out, or the group failed: its shards are late
                with contextlib.suppress(Exception):  # a gone group cannot cancel either
                    response.cancel()
                self._late(answers, g, group_asks, exc)
        if answers.late and self.on_late == "fail":
            raise DeadlineExceeded(
                f"shard groups did not answer in time; late shards: {', '.join(answers.late)}"
            )
        return answers

    def _late(self, answers: ShardAnswers, group: int, asks: list[ShardAsk], exc: Exception):
        answers.late.extend(a.shard_id for a in asks)
        name = self.apps[group] if group < len(self.apps) else f"#{group}"
        log.warning("shard group %s did not answer: %s", name, type(exc).__name__)

    def close(self) -> None:
        """Delete the groups' applications now."""
        self._finalizer()


def _check_on_late(on_late: str) -> None:
    if on_late not in ON_LATE:
        raise ValueError(f"ray.on_late must be one of {ON_LATE}, got {on_late!r}")


def _delete_apps(apps: list[str]) -> None:
    try:
        import ray
        from ray import serve

        if not ray.is_initialized():
            return
        for name in apps:
            serve.delete(name, _blocking=False)
    except Exception as exc:  # shutting down: Ray may already be gone
        log.warning("could not delete shard group applications %s: %s", apps, exc)
