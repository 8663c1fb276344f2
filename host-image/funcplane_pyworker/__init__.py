"""funcplane's Python language worker.

The host starts it as a separate process; it connects back over gRPC
(``FunctionRpc.EventStream``), loads the app's Python functions and runs invocations.
"""

from __future__ import annotations

WORKER_VERSION = "0.1.0"
RUNTIME_NAME = "python"
