"""FunctionApp: one app and its production slot."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from .base import (
    FREE_FORM,
    QUANTITY,
    FileSource,
    KeyReference,
    Model,
    Setting,
    cel,
    validations,
)
from .conditions import DEGRADED, PROGRESSING, READY, ConditionedStatus, Reason, condition

Plan = Literal["consumption", "premium", "dedicated"]

# Slots per plan, production included (Azure's limits); dedicated may lower its own up to 20.
PLAN_SLOT_LIMITS: dict[str, int] = {"consumption": 2, "premium": 3, "dedicated": 20}
# Scale-out ceilings per plan (instances per app).
PLAN_MAX_REPLICAS: dict[str, int] = {"consumption": 200, "premium": 100, "dedicated": 30}

PRODUCTION = "production"
MAX_SETTINGS = 256
DEFAULT_HOST_IMAGE = "ghcr.io/funcplane/host:0.1.0"


class Runtime(Model):
    name: Literal["python", "node", "dotnet-isolated", "java", "powershell", "custom"] = Field(
        description="Language worker runtime (FUNCTIONS_WORKER_RUNTIME).")
    version: str | None = Field(None, description="Runtime version (FUNCTIONS_WORKER_RUNTIME_VERSION), e.g. 3.12.")
    worker_process_count: int | None = Field(
        None, ge=1, le=10, description="Worker processes per language (FUNCTIONS_WORKER_PROCESS_COUNT).")


class Autoscale(Model):
    """The operator's metrics-driven scaler (README "Scaling"); the defaults are Knative's KPA windows."""

    enabled: bool = Field(False, description="Scale each instance from its hosts' concurrency; the operator then "
                                             "owns the Deployments' replicas and spec.replicas is only the start.")
    target_utilization_percent: int = Field(
        70, ge=1, le=100, description="HTTP: share of a pod's concurrency limit to fill before adding pods.")
    target_concurrency: int = Field(
        100, ge=1, le=10000, description="HTTP: per-pod concurrency used when the host reports no limit for a "
                                         "function (no dynamic concurrency and no static maximum).")
    stable_window_seconds: int = Field(60, ge=6, le=3600, description="Demand is averaged over this window.")
    panic_window_seconds: int = Field(6, ge=2, le=600, description="Short window that reacts to bursts.")
    panic_threshold_percent: int = Field(
        200, ge=110, le=1000, description="Panic (scale out on the short window, never in) when it asks for this "
                                          "share of the ready pods.")
    scale_down_delay_seconds: int = Field(
        60, ge=0, le=3600, description="Scale in only to the highest count wanted over this long.")
    max_scale_down_rate: float = Field(
        2.0, ge=1.0, le=100.0, description="One step keeps at least current / rate pods.")

    model_config = ConfigDict(json_schema_extra=validations(
        cel("self.panicWindowSeconds < self.stableWindowSeconds",
            "panicWindowSeconds must be shorter than stableWindowSeconds", ".panicWindowSeconds"),
    ))


class ScaleBounds(Model):
    min_replicas: int = Field(1, ge=0, description="Fewest pods per instance (0: queue-only apps scale to zero).")
    max_replicas: int = Field(10, ge=1, description="Most pods per instance (plan-dependent ceiling).")
    autoscale: Autoscale = Field(default_factory=Autoscale)

    model_config = ConfigDict(json_schema_extra=validations(
        cel("self.minReplicas <= self.maxReplicas", "minReplicas must be <= maxReplicas", ".minReplicas"),
    ))


class Concurrency(Model):
    http_per_instance: int | None = Field(
        None, ge=1, description="Static HTTP concurrency per pod; unset = host default by memory.")
    dynamic: bool = Field(False, description="Enable dynamic concurrency (host.json dynamicConcurrencyEnabled).")
    snapshot_persistence: bool = Field(True, description="Persist learned concurrency (snapshotPersistenceEnabled).")


class Resources(Model):
    requests: dict[str, Any] = Field(
        default_factory=lambda: {"cpu": "100m", "memory": "256Mi"},
        json_schema_extra={"additionalProperties": QUANTITY},
        description="Resource requests per pod.")
    limits: dict[str, Any] | None = Field(
        None, json_schema_extra={"additionalProperties": QUANTITY}, description="Resource limits per pod.")


class Warmup(Model):
    path: str = Field("/admin/warmup", pattern=r"^/", description="Warm-up path called on every pod before a swap.")
    accepted_statuses: list[int] = Field(
        default_factory=lambda: [200], min_length=1, max_length=10, description="HTTP statuses that count as warm.")
    timeout_seconds: int = Field(300, ge=1, le=3600, description="Give up (and revert) after this long.")


class DurableStore(Model):
    kind: Literal["sqlite", "postgresql"] = Field(
        "sqlite", description="sqlite: a file on the pod's state volume, for one pod per slot; postgresql: a "
                              "database that all pods of the task hub share (work passes between them by leases).")
    connection: KeyReference | None = Field(
        None, description="postgresql: the Secret key that holds the connection string.")
    lease_seconds: int = Field(
        15, ge=1, le=300, description="postgresql: how long a lost pod's work stays claimed before others take it.")
    volume_claim: str | None = Field(
        None, min_length=1, description="sqlite: PersistentVolumeClaim for the state directory; without one "
                                        "the store is in an emptyDir and goes with the pod.")

    model_config = ConfigDict(json_schema_extra=validations(
        cel("self.kind != 'postgresql' || has(self.connection)",
            "a postgresql store needs connection (a Secret key holding the connection string)", ".connection"),
    ))


class Durable(Model):
    """Durable Functions: the task hub and where it is stored."""

    hub_name: str | None = Field(
        None, pattern=r"^[A-Za-z][A-Za-z0-9]{2,49}$",
        description="Task hub for every slot; default: the app name plus the slot name outside production.")
    store: DurableStore = Field(default_factory=DurableStore)


class Toleration(Model):
    """A taint the app's pods tolerate (Kubernetes' Toleration, as it is written in a pod)."""

    key: str | None = Field(None, description="Taint key; empty with operator Exists matches every taint.")
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Exists, or Equal to value.")
    value: str | None = Field(None, description="Taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect; empty matches every effect.")
    toleration_seconds: int | None = Field(None, description="NoExecute: how long the pod stays bound.")


class SlotContent(Model):
    """What a deploy to a slot replaces: code and settings."""

    code: FileSource | None = Field(None, description="The app's code; exactly one source.")
    settings: list[Setting] = Field(
        default_factory=list, max_length=MAX_SETTINGS, json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="App settings (environment variables).")


class FunctionAppSpec(SlotContent):
    image: str = Field(DEFAULT_HOST_IMAGE, min_length=1, description="Function host image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    code: FileSource = Field(description="The production slot's code; exactly one source.")
    runtime: Runtime
    host_json: dict[str, Any] | None = Field(
        None, json_schema_extra=FREE_FORM, description="Deep-merged over the app's host.json.")
    plan: Plan = Field("consumption", description="Hosting plan; limits slots (2/3/up to 20 incl. production).")
    slot_limit: int | None = Field(
        None, ge=1, le=20, description="Dedicated plan only: slots allowed, production included (default 20).")
    replicas: int = Field(1, ge=0, description="Desired pods per instance (scale subresource).")
    scale: ScaleBounds = Field(default_factory=ScaleBounds)
    concurrency: Concurrency = Field(default_factory=Concurrency)
    resources: Resources = Field(default_factory=Resources)
    pod_annotations: dict[str, str] = Field(default_factory=dict, description="Merged into the pod template.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="The pods' nodeSelector: node labels a node must have to run them.")
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Taints the pods tolerate (e.g. of dedicated nodes).")
    warmup: Warmup = Field(default_factory=Warmup)
    function_timeout_seconds: int = Field(
        300, ge=1, le=3600, description="host.json functionTimeout; pods get this long (+30 s) to drain.")
    durable: Durable | None = Field(None, description="Durable Functions task hub and store.")

    model_config = ConfigDict(json_schema_extra=validations(
        cel("!has(self.slotLimit) || self.plan == 'dedicated'",
            "slotLimit is only allowed on the dedicated plan (consumption allows 2 slots, premium 3)",
            ".slotLimit"),
        cel("!has(self.durable) || (has(self.durable.store) && has(self.durable.store.kind) && "
            "self.durable.store.kind == 'postgresql') || self.scale.maxReplicas <= 1",
            "a sqlite durable store serves one pod: set scale.maxReplicas to 1, or use a postgresql store",
            ".durable"),
        cel("self.scale.maxReplicas <= (self.plan == 'consumption' ? 200 : self.plan == 'premium' ? 100 : 30)",
            "scale.maxReplicas exceeds the plan's ceiling (consumption 200, premium 100, dedicated 30)",
            ".scale.maxReplicas"),
    ))

    def slot_limit_total(self) -> int:
        if self.plan == "dedicated" and self.slot_limit:
            return self.slot_limit
        return PLAN_SLOT_LIMITS[self.plan]

    def clamped_replicas(self) -> int:
        return max(self.scale.min_replicas, min(self.replicas, self.scale.max_replicas))

    @property
    def autoscaled(self) -> bool:
        return self.scale.autoscale.enabled


class DeployedContent(Model):
    """The content an instance runs: what was last deployed to it."""

    code: FileSource | None = None
    settings: list[Setting] = Field(default_factory=list)


class SlotPointer(Model):
    instance: str = Field(description="Instance this slot's Service selects.")
    deployed_hash: str = Field(description="Hash of the slot spec content last deployed.")
    service: str
    hostname: str


class QueueRef(Model):
    queue_name: str = Field(description="The trigger's queueName as written (%Setting% references unresolved).")
    connection: str = Field(description="The app setting that holds the connection string.")


class ScaleStatus(Model):
    """The scaler's last decision for one instance (written only when a decision changes replicas)."""

    desired_replicas: int = Field(description="Replicas the scaler decided.")
    current_replicas: int = Field(description="The Deployment's replicas before the decision.")
    function: str = Field("", description="The function whose demand decided.")
    metric: str = Field("", description="What it measured: http (in-flight + queued) or queue (length).")
    value: float = Field(0.0, description="The metric's averaged value over the window that decided.")
    mode: str = Field("", description="stable or panic.")
    reason: str = Field("", description="Why, in words.")
    last_decision_time: str = Field("", description="When the decision was written (RFC 3339, ms).")
    queues: dict[str, QueueRef] = Field(
        default_factory=dict, description="Queue functions -> their queue, read by the operator with no pod.")


class InstanceStatus(Model):
    content: DeployedContent = Field(default_factory=DeployedContent)
    content_hash: str = Field("", description="Hash of the content it runs.")
    deployed_from: str = Field("", description="Slot whose spec content was deployed to it.")
    sticky_settings_from: str | None = Field(
        None, description="Slot whose sticky settings it runs with; unset = the slot pointing to it.")
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    ready: bool = False
    workers: dict[str, int] = Field(default_factory=dict, description="Declared worker -> pods that run it.")
    task_hub: str | None = Field(None, description="Durable task hub its hosts use (with spec.durable).")
    scale: ScaleStatus | None = Field(None, description="The scaler's last decision (spec.scale.autoscale).")


class FunctionAppStatus(ConditionedStatus):
    slots: dict[str, SlotPointer] = Field(default_factory=dict, description="Slot name -> instance pointer.")
    instances: dict[str, InstanceStatus] = Field(default_factory=dict, description="Instance id -> what it runs.")
    active_instance: str | None = Field(None, description="Instance the production slot points to.")
    slot_count: int = 0
    replicas: int = Field(0, description="Pods of the production instance (scale subresource).")
    selector: str | None = Field(None, description="Label selector of the production instance's pods.")
    hostname: str | None = None
    task_hub: str | None = Field(
        None, description="Durable task hub of the production slot (with spec.durable); each slot's instance "
                          "shows its own under instances.")

    def mark_rollout(self, not_ready: list[str], progressing: list[str], stalled: list[str],
                     generation: int | None, failing: list[str] | None = None) -> None:
        """Ready, Progressing and Degraded from the slots' rollouts; each list describes what is in that state
        (`failing`: why pods do not become ready, from their status)."""
        failing = failing or []
        self.observed_generation = generation
        self.set_conditions(
            condition(READY, not not_ready, Reason.INSTANCES_NOT_READY if not_ready else Reason.ALL_INSTANCES_READY,
                      "not ready: " + ", ".join(not_ready) if not_ready else "every slot's instance is ready",
                      generation),
            condition(PROGRESSING, bool(progressing), Reason.ROLLING_OUT if progressing else Reason.STABLE,
                      ("rolling out: " + ", ".join(progressing)) if progressing else "no rollout in progress",
                      generation),
            condition(DEGRADED, bool(stalled or failing),
                      Reason.ROLLOUT_STALLED if stalled else Reason.PODS_FAILING if failing else Reason.AS_EXPECTED,
                      "; ".join(stalled + failing)[:1000], generation),
        )

    def mark_invalid_spec(self, message: str, generation: int | None) -> None:
        self.set_conditions(condition(DEGRADED, True, Reason.INVALID_SPEC, message[:1000], generation))

    def status_patch(self, before: ConditionedStatus) -> dict[str, Any]:
        """The whole status, with slots and instances that are gone removed."""
        wire = self.wire()
        for key in ("slots", "instances"):
            for gone in set(getattr(before, key, {})) - set(getattr(self, key)):
                wire.setdefault(key, {})[gone] = None
        return wire


class FunctionApp(Model):
    api_version: str = "funcplane.io/v1alpha1"
    kind: str = "FunctionApp"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: FunctionAppSpec
    status: FunctionAppStatus = Field(default_factory=FunctionAppStatus)
