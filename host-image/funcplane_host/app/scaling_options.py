"""host.json options for queue triggers and concurrency, validated with pydantic.

- `extensions.queues`: Azure's queue options and defaults (batchSize 16, newBatchThreshold
  batchSize/2 x worker processes, maxDequeueCount 5, visibilityTimeout 0, maxPollingInterval 1 min,
  messageEncoding base64).
- `concurrency`: Azure's dynamic concurrency options (off by default, maximum 500, CPU threshold
  0.8, snapshots on) plus funcplane's `saturationThrottleEnabled` (on): the per-function Little's-law
  signal beyond Azure's throttles.
- `funcplane.queues.messageLease`: how long a running message stays hidden before its renewal
  (renewed at half); a crashed host's messages reappear after it.
- `funcplane.functions.<name>`: per-function overrides of the queue options and a per-function
  `maximumConcurrency` (a static limit for HTTP functions, the ceiling of dynamic concurrency).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from funcplane_host.app.timespan import parse_timespan

MAX_BATCH_SIZE = 32  # Azure Queue Storage returns at most 32 messages per receive


def _seconds(value: Any, field_name: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return parse_timespan(value, field_name=field_name)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class QueueOverrides(_Strict):
    batch_size: int | None = Field(None, alias="batchSize", ge=1, le=MAX_BATCH_SIZE)
    new_batch_threshold: int | None = Field(None, alias="newBatchThreshold", ge=0)
    max_dequeue_count: int | None = Field(None, alias="maxDequeueCount", ge=1)
    visibility_timeout: float | None = Field(None, alias="visibilityTimeout", ge=0)
    maximum_concurrency: int | None = Field(None, alias="maximumConcurrency", ge=1)

    @field_validator("visibility_timeout", mode="before")
    @classmethod
    def _timespan(cls, value: Any) -> Any:
        return None if value is None else _seconds(value, "visibilityTimeout")


class QueuesOptions(_Strict):
    batch_size: int = Field(16, alias="batchSize", ge=1, le=MAX_BATCH_SIZE)
    # None: Azure's default, batchSize / 2 x the number of worker processes.
    new_batch_threshold: int | None = Field(None, alias="newBatchThreshold", ge=0)
    max_dequeue_count: int = Field(5, alias="maxDequeueCount", ge=1)
    visibility_timeout: float = Field(0.0, alias="visibilityTimeout", ge=0)
    max_polling_interval: float = Field(60.0, alias="maxPollingInterval", ge=0.1)
    message_encoding: Literal["base64", "none"] = Field("base64", alias="messageEncoding")

    @field_validator("visibility_timeout", "max_polling_interval", mode="before")
    @classmethod
    def _timespan(cls, value: Any) -> Any:
        return _seconds(value, "time span")

    @field_validator("message_encoding", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class ConcurrencyOptions(_Strict):
    dynamic_concurrency_enabled: bool = Field(False, alias="dynamicConcurrencyEnabled")
    maximum_function_concurrency: int = Field(500, alias="maximumFunctionConcurrency")
    cpu_threshold: float = Field(0.8, alias="cpuThreshold", gt=0, lt=1)
    snapshot_persistence_enabled: bool = Field(True, alias="snapshotPersistenceEnabled")
    saturation_throttle_enabled: bool = Field(True, alias="saturationThrottleEnabled")

    @field_validator("maximum_function_concurrency")
    @classmethod
    def _maximum(cls, value: int) -> int:
        if value < 1 and value != -1:
            raise ValueError("must be a positive integer or -1 (unbounded)")
        return value


class ScalingOptions(_Strict):
    queues: QueuesOptions = QueuesOptions()
    concurrency: ConcurrencyOptions = ConcurrencyOptions()
    message_lease: float = 60.0
    functions: dict[str, QueueOverrides] = Field(default_factory=dict)

    def for_function(self, name: str) -> QueueOverrides:
        for key, overrides in self.functions.items():
            if key.lower() == name.lower():
                return overrides
        return QueueOverrides()


def _section(raw: dict[str, Any], *path: str) -> dict[str, Any]:
    node: Any = raw
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return {}
    if not isinstance(node, dict):
        raise ValueError(f"host.json {'.'.join(path)}: must be an object")
    return node


def _canonical_keys(section: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """Azure reads host.json keys case-insensitively; so do we (unknown keys are still refused)."""
    names = {(info.alias or name).lower(): info.alias or name for name, info in model.model_fields.items()}
    return {names.get(key.lower(), key) if isinstance(key, str) else key: value for key, value in section.items()}


def _describe(error: ValidationError, prefix: str) -> str:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        problems.append(f"host.json {prefix}{'.' if where else ''}{where}: {item['msg']}")
    return "; ".join(problems)


def parse_scaling_options(raw: dict[str, Any]) -> ScalingOptions:
    """The options above from a merged host.json; ValueError names the field and the fix."""
    queues_raw = _section(raw, "extensions", "queues")
    concurrency_raw = _section(raw, "concurrency")
    own = _section(raw, "funcplane")
    try:
        queues = QueuesOptions.model_validate(_canonical_keys(queues_raw, QueuesOptions))
    except ValidationError as error:
        raise ValueError(_describe(error, "extensions.queues")) from None
    try:
        concurrency = ConcurrencyOptions.model_validate(_canonical_keys(concurrency_raw, ConcurrencyOptions))
    except ValidationError as error:
        raise ValueError(_describe(error, "concurrency")) from None
    lease_raw = _section(own, "queues").get("messageLease", 60.0)
    lease = _seconds(lease_raw, "host.json funcplane.queues.messageLease")
    if lease < 1:
        raise ValueError("host.json funcplane.queues.messageLease: must be at least 1 second")
    functions: dict[str, QueueOverrides] = {}
    for name, overrides in _section(own, "functions").items():
        try:
            if not isinstance(overrides, dict):
                raise ValueError(f"host.json funcplane.functions.{name}: must be an object")
            functions[name] = QueueOverrides.model_validate(_canonical_keys(overrides, QueueOverrides))
        except ValidationError as error:
            raise ValueError(_describe(error, f"funcplane.functions.{name}")) from None
    return ScalingOptions(queues=queues, concurrency=concurrency, message_lease=lease, functions=functions)
