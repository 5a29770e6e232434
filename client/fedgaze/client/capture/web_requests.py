"""The capture service's JSON API: the request bodies it validates and the errors it answers.

A :class:`RequestError` becomes the JSON reply ``{"error": message, "field": name or null}``
with its HTTP status; pydantic's validation errors are turned into one naming the first bad
field.
"""

from __future__ import annotations

from http import HTTPStatus

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["Calibration", "NextRequest", "RequestError", "validation_error"]


class RequestError(Exception):
    """A request the service refuses: HTTP status, message and the offending field."""

    def __init__(self, status: HTTPStatus, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


class Calibration(BaseModel):
    """The body of ``POST /api/v1/calibration``."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    precision: float = Field(ge=0.0, le=100.0)
    task_id: int | None = Field(default=None, ge=0)


class NextRequest(BaseModel):
    """The body of ``POST /api/v1/next`` (none for ``GET``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    prompt: str | None = Field(default=None, max_length=100_000)


def validation_error(err: ValidationError) -> RequestError:
    """The refusal naming the first field pydantic found wrong."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return RequestError(HTTPStatus.BAD_REQUEST, f"{where}: {first['msg']}", where)
