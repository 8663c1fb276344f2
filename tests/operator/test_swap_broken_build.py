"""A swap whose source slot runs a broken build: its pods run and turn Ready (kwok), but the host
behind them cannot serve the app, so the warm-up refuses with the reason, the swap fails in
WarmingUp and reverts, and production keeps serving. Real operator, real hosts (pod runner)."""

from __future__ import annotations

import re
from typing import Any

from swap_support import (  # noqa: F401 - fixtures used by name
    APP, Invariants, Operator, Shop, manifests, operator, serving, shop,
)
from support import eventually

BROKEN_FUNCTION_APP_PY = '''
import azure.functions as func
import not_a_module_anywhere  # the build forgot a dependency

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
'''


def test_swap_of_a_broken_build_fails_in_warm_up_and_reverts(shop: Shop, operator: Operator,
                                                             pod_runner: Any) -> None:
    objects = manifests(timeout_seconds=15)
    staging_code = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "shop-code-v2")
    staging_code["data"]["function_app.py"] = BROKEN_FUNCTION_APP_PY
    shop.apply(objects)
    eventually(shop.ready, timeout=120, interval=0.5, what="app and staging slot Ready")
    before = shop.pointers()
    production_before = serving(shop, "production")

    with Invariants(shop) as invariants:
        request_id = shop.request_swap()
        record = shop.finished(request_id)
    assert record["result"] == "Failed", record
    # Failed warming up, naming the pod, the host's 503 and the file and error that broke the build.
    assert re.search(rf"pod {before['staging']}-[a-z0-9]+-[a-z0-9]+ is not warm after \d+s: warm-up answered 503",
                     record["message"]), record
    assert "function_app.py" in record["message"] and "not_a_module_anywhere" in record["message"], record
    assert "WarmingUp" in record["durations"] and "Flipping" not in record["durations"]
    assert all(not p["warm"] for p in record["pods"]), record["pods"]
    # Reverted, production untouched and serving throughout.
    assert shop.pointers() == before
    assert shop.service_selector("production") == before["production"]
    assert serving(shop, "production") == production_before
    assert invariants.samples > 5 and not invariants.violations, invariants.violations
