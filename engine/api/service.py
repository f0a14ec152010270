"""The gRPC service: ``crossrec.v1.RecommendService`` on ``grpc.aio``.

Each RPC validates its request, runs the engine's blocking work (FAISS, SQLite) in a bounded
thread pool, and honours the call's deadline (or the configured default). Every error becomes a
status here and only here: :func:`engine.errors.to_status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import grpc
from grpc_status import rpc_status

from crossrec.v1 import recommend_pb2, service_pb2, service_pb2_grpc
from engine.api import validation
from engine.api.responses import to_response
from engine.core import Engine, Route
from engine.errors import EngineError, InvalidRequest, Overloaded, status_code, to_status
from engine.feedback.metrics import Metrics

#: RPCs whose work takes a deadline and stops at its next stage once it has passed.
_STOPPABLE = frozenset({"Recommend", "RecommendBatch"})
#: RPCs bounded by their caller's deadline alone, not ``limits.max_deadline_s`` (which bounds the
#: work a query can buy): a swap opens and verifies a whole version - seconds at a million items,
#: longer when Ray deploys shard groups - and one cut off there would still complete after its
#: caller had been told it failed. Without a caller's deadline it is waited for.
_CALLER_BOUNDED = frozenset({"SwapVersion"})
#: RPCs held to the bulkhead (:func:`bulk_workers`).
_BULK_WORK = frozenset({"RecommendBatch"})
#: Requests of one RecommendBatch answered at once when shard searches are batched ([gpu]), so
#: that their searches merge (engine/retrieval/batching.py); without batching, one after another.
BATCH_FAN_OUT = 16
_NO_LIMIT = contextlib.nullcontext()


def bulk_workers(workers: int) -> int:
    """Workers RecommendBatch calls may hold at once: half, at least one."""
    return max(1, workers // 2)


def bulk_admission(server) -> int:
    """RecommendBatch calls admitted at once (running or waiting): their workers and half the
    queue."""
    return bulk_workers(server.workers) + server.max_queued // 2


log = logging.getLogger(__name__)


class RecommendService(service_pb2_grpc.RecommendServiceServicer):
    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self.server = engine.config.server
        self.limits = engine.config.limits
        self.default_share = engine.config.retrieval.default_cross_category_share
        self.executor = ThreadPoolExecutor(
            max_workers=self.server.workers, thread_name_prefix="crossrec"
        )
        self.fan_out = (
            ThreadPoolExecutor(max_workers=BATCH_FAN_OUT, thread_name_prefix="crossrec-batch")
            if engine.config.gpu.batched
            else None
        )
        # At most `workers` calls run; up to `max_queued` more wait for a worker (within their
        # deadline); beyond that a call is shed at once with RESOURCE_EXHAUSTED, so callers can
        # back off instead of queueing until their deadlines pass.
        self._slots = asyncio.Semaphore(self.server.workers)
        # A bulkhead: batches may hold at most half the workers, so that a few heavy batches
        # (100 requests each) never leave single Recommend calls waiting for a worker.
        self._bulk_slots = asyncio.Semaphore(bulk_workers(self.server.workers))
        self._in_flight = 0
        # Batches in flight: they may hold at most half the queue too, so that waiting batches
        # never shed the single calls the idle workers could run.
        self._bulk_in_flight = 0

    async def _run(self, method: str, context: grpc.aio.ServicerContext, fn, *args):
        start = time.perf_counter()
        code = "OK"
        admitted = running = False
        try:
            if self._in_flight >= self.server.workers + self.server.max_queued:
                raise Overloaded(
                    f"engine overloaded: {self._in_flight} calls in flight "
                    f"({self.server.workers} running, {self.server.max_queued} queued); "
                    "retry with backoff"
                )
            batch = method in _BULK_WORK
            if batch and self._bulk_in_flight >= bulk_admission(self.server):
                raise Overloaded(
                    f"engine overloaded with batches: {self._bulk_in_flight} RecommendBatch calls "
                    "in flight; retry with backoff"
                )
            self._in_flight += 1
            self._bulk_in_flight += batch
            admitted = True
            remaining = context.time_remaining()
            call = functools.partial(fn, *args)
            timeout: float | None
            if method in _CALLER_BOUNDED:
                timeout = None if remaining is None else max(remaining, 0.0)
            else:
                bounded = self.limits.default_deadline_s if remaining is None else max(remaining, 0)
                timeout = min(bounded, self.limits.max_deadline_s)  # a client cannot buy more work
                # The work itself stops at its next stage once the deadline has passed (the
                # executor thread would otherwise run on for a client that has gone).
                if method in _STOPPABLE:
                    call = functools.partial(call, deadline=time.monotonic() + timeout)
            # asyncio.timeout + `async with` on the semaphore: a slot taken is always given back,
            # even when the deadline cancels the wait right after acquiring it.
            async with asyncio.timeout(timeout):
                bulk = self._bulk_slots if method in _BULK_WORK else _NO_LIMIT
                async with bulk, self._slots:
                    running = True
                    return await asyncio.get_running_loop().run_in_executor(self.executor, call)
        except asyncio.CancelledError:
            # The client went away or its deadline passed before ours fired: count it as what it
            # was.
            remaining = context.time_remaining()
            code = "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
            raise
        except Exception as exc:  # every failure leaves as a status, here
            status = to_status(exc)
            code = status_code(status.code).name
            if isinstance(exc, (InvalidRequest, TimeoutError, Overloaded)):
                log.info("%s rejected: %s", method, status.message)
            elif isinstance(exc, EngineError):  # deliberate (store full, swap refused): one line
                log.warning("%s refused: %s", method, status.message)
            else:
                log.exception("%s failed", method)
            await context.abort_with_status(rpc_status.to_status(status))
        finally:
            if admitted:
                self._in_flight -= 1
                self._bulk_in_flight -= method in _BULK_WORK
                if not running:  # its deadline passed (or its client left) while it queued
                    self.metrics.expired_in_queue(method)
            self.metrics.call(method, code, time.perf_counter() - start)

    # -- RPCs ---------------------------------------------------------------------------------
    async def Recommend(self, request, context):
        return await self._run("Recommend", context, self._recommend, request, "")

    async def RecommendBatch(self, request, context):
        return await self._run("RecommendBatch", context, self._recommend_batch, request)

    async def IngestEvents(self, request, context):
        return await self._run("IngestEvents", context, self._ingest, request)

    async def DeleteUser(self, request, context):
        return await self._run("DeleteUser", context, self._delete, request)

    async def GetStatus(self, request, context):
        return await self._run("GetStatus", context, self._status, request)

    async def SwapVersion(self, request, context):
        return await self._run("SwapVersion", context, self._swap, request)

    # -- blocking work (executor threads) ----------------------------------------------------------
    def _recommend(
        self, request, prefix: str, deadline: float | None = None
    ) -> recommend_pb2.RecommendResponse:
        route = self.engine.route(request.user_id)
        parsed = validation.recommend_request(
            request,
            self.limits,
            route.served.recommender.categories,
            int(time.time() * 1e6),
            prefix,
            self.default_share,
        )
        return self._answer(route, request, parsed, deadline)

    def _answer(
        self, route: Route, request, parsed, deadline: float | None = None
    ) -> recommend_pb2.RecommendResponse:
        """Run one validated request against the arm and version it was validated with."""
        user_id, recent, query = parsed
        rec = self.engine.recommend(
            user_id, recent, query, route, explain_items=request.explain, deadline=deadline
        )
        t0 = time.perf_counter()
        response = to_response(rec)
        # "retrieve": the recommender from targets to the chosen items (the profile's store read is
        # its own stage); "respond": building the response message.
        stages = rec.result.stage_seconds
        stages = {
            **stages,
            "retrieve": sum(v for k, v in stages.items() if k != "profile"),
            "respond": time.perf_counter() - t0,
        }
        self.metrics.answered(stages, rec.result.stage_counts)
        return response

    def _recommend_batch(
        self, request, deadline: float | None = None
    ) -> recommend_pb2.RecommendBatchResponse:
        validation.batch_size(request.requests, self.limits)
        # Validate all first (once each, against one version), so a bad request anywhere rejects
        # the batch before any work.
        now_us = int(time.time() * 1e6)
        parsed, violations = [], []
        for i, r in enumerate(request.requests):
            route = self.engine.route(r.user_id)
            try:
                parsed.append(
                    (
                        route,
                        validation.recommend_request(
                            r,
                            self.limits,
                            route.served.recommender.categories,
                            now_us,
                            f"requests[{i}].",
                            self.default_share,
                        ),
                    )
                )
            except InvalidRequest as exc:
                violations += exc.violations
        if violations:
            raise InvalidRequest(violations)
        jobs = list(zip(request.requests, parsed, strict=True))

        def answer(job) -> recommend_pb2.RecommendResponse:
            r, (route, p) = job
            return self._answer(route, r, p, deadline)

        if self.fan_out is not None and len(jobs) > 1:
            return recommend_pb2.RecommendBatchResponse(responses=self.fan_out.map(answer, jobs))
        return recommend_pb2.RecommendBatchResponse(responses=[answer(j) for j in jobs])

    def _ingest(self, request) -> service_pb2.IngestEventsResponse:
        events = validation.ingest_events(
            request.events, self.limits, self.engine.user_key, int(time.time() * 1e6)
        )
        done = self.engine.ingest(events)
        self.metrics.ingested.inc(done.stored)
        return service_pb2.IngestEventsResponse(
            accepted_count=done.stored,
            duplicate_count=done.duplicates,
            unknown_item_count=done.unknown_items,
            conflict_count=done.conflicts,
            expired_count=done.expired,
        )

    def _delete(self, request) -> service_pb2.DeleteUserResponse:
        deleted = self.engine.delete_user(validation.delete_user(request))
        return service_pb2.DeleteUserResponse(deleted_event_count=deleted, existed=deleted > 0)

    def _swap(self, request) -> service_pb2.SwapVersionResponse:
        arm, artifact, model = validation.swap_version(request)
        served, changed = self.engine.versions.swap(arm, artifact, model)
        return service_pb2.SwapVersionResponse(
            arm=arm,
            index_version=served.version.version,
            model_version=served.model_version,
            changed=changed,
        )

    def _status(self, request) -> service_pb2.GetStatusResponse:
        s = self.engine.status()
        response = service_pb2.GetStatusResponse(
            index_version=s.get("index_version", ""),
            model_version=s.get("model_version", ""),
            item_count=s.get("item_count", 0),
            category_count=s.get("category_count", 0),
            shard_count=s.get("shard_count", 0),
            user_count=s["user_count"],
            event_count=s["event_count"],
            engine_version=s["engine_version"],
            gpu=s["gpu"],
            arms=[service_pb2.ArmStatus(**a) for a in s["arms"]],
        )
        response.started_at.FromNanoseconds(int(s["started_at"] * 1e9))
        if "index_loaded_at" in s:
            response.index_loaded_at.FromNanoseconds(int(s["index_loaded_at"] * 1e9))
        return response


class _Undecodable:
    """A request body the method's message type could not parse."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class _TooLarge:
    """A request body over its method's size limit (never parsed)."""

    def __init__(self, size: int, limit: int) -> None:
        self.size, self.limit = size, limit


#: Methods whose body may be as large as ``[limits] max_message_bytes``; every other one is held
#: to ``max_request_bytes``.
_BULK = frozenset({"RecommendBatch", "IngestEvents"})


def _safe(deserializer, limit: int):
    def parse(data: bytes):
        if len(data) > limit:
            return _TooLarge(len(data), limit)
        try:
            return deserializer(data)
        except Exception as exc:  # protobuf's DecodeError, or anything a corrupt body provokes
            return _Undecodable(exc)

    return parse


def add_service(service: RecommendService, server: grpc.aio.Server) -> None:
    """Register ``service`` on ``server`` as the generated stub code does, except that a request
    body that does not parse (invalid UTF-8 in a string, a truncated message) gets
    INVALID_ARGUMENT, one log line and a count, instead of gRPC's UNKNOWN and a logged traceback
    on every call; and that a body over its method's limit (``[limits] max_request_bytes``
    except for RecommendBatch and IngestEvents) gets RESOURCE_EXHAUSTED without being parsed."""

    class _Wrapping:
        def add_generic_rpc_handlers(self, handlers) -> None:  # the generated code calls both
            pass

        def add_registered_method_handlers(self, name: str, handlers: dict) -> None:
            wrapped = {m: _wrap(service, m, h) for m, h in handlers.items()}
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, wrapped),))
            server.add_registered_method_handlers(name, wrapped)

    # The generated code only calls the two methods above.
    service_pb2_grpc.add_RecommendServiceServicer_to_server(service, cast(Any, _Wrapping()))


def _wrap(service: RecommendService, method: str, handler):
    behaviour = handler.unary_unary
    limits = service.limits
    limit = limits.max_message_bytes
    if method not in _BULK:
        limit = min(limits.max_request_bytes, limit)

    async def guarded(request, context):
        if isinstance(request, _TooLarge):
            service.metrics.call(method, "RESOURCE_EXHAUSTED")
            log.info("%s rejected: a body of %d bytes", method, request.size)
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"a {method} request of {request.size} bytes is over the {request.limit} allowed "
                "([limits] max_request_bytes; RecommendBatch and IngestEvents take up to "
                "max_message_bytes)",
            )
        if isinstance(request, _Undecodable):
            service.metrics.call(method, "INVALID_ARGUMENT")
            log.info("%s rejected: undecodable request (%s)", method, request.error)
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request body could not be decoded as a {method} request",
            )
        return await behaviour(request, context)

    return grpc.unary_unary_rpc_method_handler(
        guarded,
        request_deserializer=_safe(handler.request_deserializer, limit),
        response_serializer=handler.response_serializer,
    )
