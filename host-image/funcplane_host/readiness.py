"""Whether the host can serve its app: the one answer behind /readyz, /admin/warmup and host status.

Ready means "this app can serve": the configuration is valid, the app directory exists, every
worker the app needs has a ready process that reported the app's functions, those functions were
loaded, and at least one of them loaded. A function that failed on its own is reported but leaves
the others serving; a failure of the app as a whole (a function_app.py that does not import, no
functions found, every function failed) makes the host not ready, with the file and error named.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from funcplane_host.app.catalog import FunctionCatalog
from funcplane_host.workers.supervisor import WorkerPool

# How many function errors a "nothing loaded" reason quotes.
QUOTED_FUNCTION_ERRORS = 3


class Readiness(NamedTuple):
    """`ready, reasons = host.readiness()` unpacks it; `reason` is the one-line form."""

    ready: bool
    reasons: list[str]

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


class ReadinessSource(Protocol):
    state: str
    config_errors: list[str]
    catalog: FunctionCatalog
    pools: dict[str, WorkerPool]

    @property
    def registry_errors(self) -> list[str]: ...

    @property
    def extension_errors(self) -> list[str]: ...


def app_problems(catalog: FunctionCatalog) -> list[str]:
    """Failures of the app as a whole (function name ""), e.g. its function_app.py failed to import."""
    return [error.reason for error in catalog.errors if not error.name]


def readiness_of(host: ReadinessSource) -> Readiness:
    reasons: list[str] = []
    if host.state != "running":
        reasons.append(f"host is {host.state}")
    reasons.extend(host.config_errors)
    reasons.extend(host.registry_errors)
    reasons.extend(host.extension_errors)
    catalog = host.catalog
    reasons.extend(app_problems(catalog))
    for language, pool in host.pools.items():
        if not pool.is_ready:
            reasons.append(pool.unavailable_reason())
        elif not catalog.is_indexed(language):
            reasons.append(f"{language} worker has not reported the app's functions yet")
    if not reasons and not catalog.all_loaded():
        pending = [n for n, s in catalog.states.items() if s.status == "indexed"]
        reasons.append(f"functions not loaded yet: {', '.join(sorted(pending))}")
    # A disabled function counts: it is switched off on purpose, not broken.
    if not reasons and not any(state.status == "loaded" or catalog.definitions[name].disabled
                               for name, state in catalog.states.items()):
        failed = [f"{e.name}: {e.reason}" for e in catalog.errors if e.name][:QUOTED_FUNCTION_ERRORS]
        reasons.append("the app has no function that loaded" + (f" ({'; '.join(failed)})" if failed else ""))
    return Readiness(not reasons, reasons)


def serving_problem(host: ReadinessSource) -> str | None:
    """Why a request for a route the host does not know may still be one it will serve (503, not
    404): the host is starting, its workers have not reported the app's functions yet, or the app
    cannot be served at all."""
    if host.state in ("created", "starting"):
        return "the host is starting"
    problems = [*host.config_errors, *app_problems(host.catalog)]
    if problems:
        return "the app cannot be served: " + "; ".join(problems)
    waiting = [pool for language, pool in host.pools.items() if not host.catalog.is_indexed(language)]
    failed = [pool.unavailable_reason() for pool in waiting if pool.broken]
    if failed:
        return "; ".join(failed)
    if waiting:
        languages = ", ".join(pool.description.language for pool in waiting)
        return f"the host is starting: the {languages} worker has not reported the app's functions yet"
    return None
