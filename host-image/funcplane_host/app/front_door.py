"""Limits and timeouts of the HTTP front door, from host.json `extensions.http`, parsed with the rest of
host.json (app/host_json.py), so an invalid value is a configuration error like any other.

Keys (all optional; Azure's own keys in that section, such as routePrefix and the concurrency
throttles, are in app/host_json.py):

- maxRequestBodySize: bytes, default 104857600 (100 MB, Azure's limit). Larger bodies get 413.
- maxRequestBodyMemory: bytes of request bodies held in memory at once across all requests,
  default = maxRequestBodySize. Requests beyond it wait for memory to free up.
- requestHeadersTimeout: time span, default "00:00:30" (Kestrel's default). A connection whose
  request line and headers take longer is answered 408 and closed.
- requestBodyTimeout: time span, default "00:03:50" (Azure's 230 s request limit). A body
  (including the wait for body memory) that takes longer is answered 408.
- drainGracePeriod: time span, default "00:00:10". After POST /admin/drain the host reports not
  ready at once but keeps serving new requests this long (endpoints take a while to drop the
  pod), then refuses them and waits for in-flight work.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from funcplane_host.app.timespan import parse_timespan

SECTION = "host.json extensions.http"
DEFAULT_MAX_BODY_SIZE = 100 * 1024 * 1024
DEFAULT_HEADERS_TIMEOUT = 30.0
DEFAULT_BODY_TIMEOUT = 230.0
DEFAULT_DRAIN_GRACE = 10.0


class HttpOptionsError(ValueError):
    """extensions.http holds a value the front door cannot use; the message names the field."""


def _seconds(value: Any, *, allow_zero: bool) -> float:
    try:
        seconds = parse_timespan(value, field_name="time span")
    except ValueError:
        raise ValueError(f"{value!r} is not a time span; write it as hh:mm:ss, e.g. \"00:00:30\"") from None
    if seconds <= 0 and not allow_zero:
        raise ValueError(f"{value!r} must be longer than zero")
    return seconds


class FrontDoorOptions(BaseModel):
    """The front door's limits, in bytes and seconds."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    max_body_size: int = Field(DEFAULT_MAX_BODY_SIZE, alias="maxRequestBodySize", ge=1, strict=True)
    max_body_memory: int | None = Field(None, alias="maxRequestBodyMemory", ge=1, strict=True)
    headers_timeout: float = Field(DEFAULT_HEADERS_TIMEOUT, alias="requestHeadersTimeout")
    body_timeout: float = Field(DEFAULT_BODY_TIMEOUT, alias="requestBodyTimeout")
    drain_grace: float = Field(DEFAULT_DRAIN_GRACE, alias="drainGracePeriod")

    @field_validator("headers_timeout", "body_timeout", mode="before")
    @classmethod
    def _positive_span(cls, value: Any) -> float:
        return _seconds(value, allow_zero=False)

    @field_validator("drain_grace", mode="before")
    @classmethod
    def _span(cls, value: Any) -> float:
        return _seconds(value, allow_zero=True)

    @model_validator(mode="after")
    def _memory_holds_one_body(self) -> FrontDoorOptions:
        if self.max_body_memory is not None and self.max_body_memory < self.max_body_size:
            raise ValueError(f"maxRequestBodyMemory ({self.max_body_memory}) must be at least "
                             f"maxRequestBodySize ({self.max_body_size}): one largest body must fit")
        return self

    @property
    def body_memory(self) -> int:
        return self.max_body_memory if self.max_body_memory is not None else self.max_body_size

    @classmethod
    def from_host_json(cls, raw: dict[str, Any]) -> FrontDoorOptions:
        extensions = raw.get("extensions")
        section = extensions.get("http") if isinstance(extensions, dict) else None
        if not isinstance(section, dict):
            return cls()
        try:
            return cls.model_validate(section)
        except ValidationError as error:
            problems = []
            for problem in error.errors():
                where = ".".join(str(part) for part in problem["loc"])
                message = problem["msg"].removeprefix("Value error, ")
                problems.append(f"{SECTION}{'.' + where if where else ''}: {message}")
            raise HttpOptionsError("; ".join(problems)) from None
