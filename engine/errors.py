"""The engine's exceptions, and the one place where they become gRPC status codes."""

from __future__ import annotations

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


class InvalidRequest(EngineError):
    """A request broke a rule; ``violations`` name each field (``requests[2].k``)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))


class NotServing(EngineError):
    """No index version is loaded yet (or it failed to load)."""

    code = grpc.StatusCode.UNAVAILABLE


class ModelMismatch(EngineError):
    """A ranker model that cannot serve with the index version it was loaded with (wrong index
    version or feature list); the engine keeps the pair it had."""

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
                for v in error.violations
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
