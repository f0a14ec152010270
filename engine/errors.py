"""The engine's exceptions, and the one place where they become gRPC status codes."""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2


class EngineError(Exception):
    """Base class of the engine's deliberate errors."""

    code = grpc.StatusCode.INTERNAL


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


#: Field violations a status carries; the rest are counted in one more entry. gRPC refuses
#: trailing metadata over ~8-16 KB (the client then sees RESOURCE_EXHAUSTED and no details), so a
#: request with hundreds of bad fields must still get a small INVALID_ARGUMENT.
MAX_VIOLATIONS = 20
#: Characters kept of one violation's description (descriptions may quote the caller's input).
MAX_DESCRIPTION = 120
#: Violations repeated in the status message (the details carry the rest).
MESSAGE_VIOLATIONS = 5


class InvalidRequest(EngineError):
    """A request broke a rule; ``violations`` name each field (``requests[2].k``). Only the first
    ``MAX_VIOLATIONS`` are reported, then one entry ``"..."`` counting the rest."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations
        self.reported = [
            FieldViolation(_clip(v.field), _clip(v.description))
            for v in violations[:MAX_VIOLATIONS]
        ]
        if len(violations) > MAX_VIOLATIONS:
            rest = len(violations) - MAX_VIOLATIONS
            self.reported.append(FieldViolation("...", f"{rest} more violation(s) not listed"))
        shown = "; ".join(f"{v.field}: {v.description}" for v in self.reported[:MESSAGE_VIOLATIONS])
        more = len(violations) - MESSAGE_VIOLATIONS
        super().__init__(shown + (f"; and {more} more" if more > 0 else ""))


def _clip(text: str) -> str:
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 3] + "..."


class NotServing(EngineError):
    """No index version is loaded yet (or it failed to load)."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(EngineError):
    """The call's deadline passed while the engine worked on it: the work stops at the next stage
    instead of running on for a client that has gone."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


def check_deadline(deadline: float | None, stage: str) -> None:
    """Raise :class:`DeadlineExceeded` when ``deadline`` (``time.monotonic()`` seconds) has
    passed; ``stage`` names where the work stopped."""
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineExceeded(f"deadline exceeded (stopped at {stage})")


class Overloaded(EngineError):
    """More calls in flight than the engine runs and queues: shed at once."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class ModelMismatch(EngineError):
    """A ranker model that cannot serve with the index version it was loaded with (wrong index
    version or feature list); the engine keeps the pair it had."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class SwapRefused(EngineError):
    """A version swap whose index or model failed to load or verify; the arm keeps its pair."""

    code = grpc.StatusCode.FAILED_PRECONDITION


def status_code(numeric: int) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` of a numeric ``google.rpc.Code``."""
    return next(c for c in grpc.StatusCode if c.value[0] == numeric)


def to_status(error: Exception) -> status_pb2.Status:
    """A ``google.rpc.Status`` for any exception; BadRequest details for invalid requests."""
    if isinstance(error, InvalidRequest):
        detail = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.reported
            ]
        )
        status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(error))
        status.details.add().Pack(detail)
        return status
    if isinstance(error, EngineError):
        return status_pb2.Status(code=error.code.value[0], message=str(error))
    if isinstance(error, TimeoutError):
        return status_pb2.Status(code=code_pb2.DEADLINE_EXCEEDED, message="deadline exceeded")
    return status_pb2.Status(
        code=code_pb2.INTERNAL, message=f"internal error: {type(error).__name__}"
    )
