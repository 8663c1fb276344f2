"""The funcplane.io/v1alpha1 API: pydantic models that are the single source of the CRDs."""

from .base import API_VERSION, GROUP, VERSION, Condition, FileSource, Setting
from .functionapp import PRODUCTION, FunctionApp, FunctionAppSpec, FunctionAppStatus
from .slot import Slot, SlotSpec, SlotStatus
from .workerconfig import WorkerConfig, WorkerConfigSpec, WorkerConfigStatus

__all__ = [
    "API_VERSION", "GROUP", "VERSION", "PRODUCTION", "Condition", "FileSource", "Setting",
    "FunctionApp", "FunctionAppSpec", "FunctionAppStatus", "Slot", "SlotSpec", "SlotStatus",
    "WorkerConfig", "WorkerConfigSpec", "WorkerConfigStatus",
]
