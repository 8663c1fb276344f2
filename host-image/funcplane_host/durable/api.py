"""The durable HTTP management API (Azure's routes and status codes).

Served twice: under /runtime/webhooks/durabletask/ (guarded by the `durabletask_extension`
system key or the master key, carried as `code=` in the URLs the client binding hands out) and
under /durabletask/ for loopback callers only (the SDK's rpcBaseUrl, as Azure's local listener).
Every answer is JSON or empty: the SDK parses each response body as JSON.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from funcplane_host.durable.engine import (
    TERMINAL,
    DurableRequestError,
    entity_id_of,
    split_entity_id,
    status_payload,
)
from funcplane_host.durable.extension import RPC_BASE, WEBHOOK_BASE
from funcplane_host.durable.history import iso_utc, parse_json_text, parse_time
from funcplane_host.keys import presented_key

if TYPE_CHECKING:
    from funcplane_host.durable.engine import DurableEngine
    from funcplane_host.durable.extension import DurableExtension

_LOOPBACK = ("127.0.0.1", "::1")
_RUNNING = ("Running", "Pending", "ContinuedAsNew", "Suspended")
_JSON_TYPES = ("application/json", "text/json")
CONTINUATION_HEADER = "x-ms-continuation-token"


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(payload), content_type="application/json", headers=headers)


def _empty(status: int) -> web.Response:
    return web.Response(status=status)


def _problem(status: int, message: str) -> web.Response:
    # "ExceptionMessage" is the key the SDK reads to raise a useful error.
    return _json({"Message": message, "ExceptionMessage": message}, status)


def _flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    return default if value is None or value == "" else value.strip().lower() == "true"


def _time_filter(request: web.Request, name: str) -> float | None:
    value = request.query.get(name)
    if not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise DurableRequestError(400, f"{name}={value!r} is not an ISO-8601 time") from None


class DurableApi:
    def __init__(self, extension: DurableExtension) -> None:
        self.extension = extension

    def register(self, app: web.Application) -> None:
        app.router.add_route("*", WEBHOOK_BASE + "/{tail:.*}", self.webhook)
        app.router.add_route("*", RPC_BASE + "/{tail:.*}", self.rpc)

    # ---- entry points ----------------------------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.StreamResponse:
        keys = self.extension.host.keys
        if not keys.empty:
            presented = presented_key(request)
            system_key = self.extension.system_key
            allowed = keys.is_master(presented) or (bool(presented) and presented == system_key)
            if not allowed:
                return _problem(401, "the durable task API needs the durabletask_extension system key or the "
                                     "master key (code query parameter or x-functions-key header)")
        return await self._route(request, f"{request.scheme}://{request.host}{WEBHOOK_BASE}")

    async def rpc(self, request: web.Request) -> web.StreamResponse:
        if request.remote not in _LOOPBACK:
            return _problem(403, f"{RPC_BASE}/ serves loopback callers only; use {WEBHOOK_BASE}/ with a key")
        return await self._route(request, f"{request.scheme}://{request.host}{WEBHOOK_BASE}")

    async def _route(self, request: web.Request, base: str) -> web.StreamResponse:
        extension = self.extension
        engine = extension.engine
        if engine is None:
            if extension.error is not None and extension.wanted:
                return _problem(503, f"durable task hub unavailable: {extension.error}")
            if not extension.wanted:
                return _problem(404, "this app has no durable functions (orchestrationTrigger, activityTrigger, "
                                     "entityTrigger or durableClient bindings)")
            return _problem(503, f"durable task hub {extension.hub} is starting; try again")
        parts = [p for p in request.match_info["tail"].split("/") if p]
        method = request.method
        try:
            if parts and parts[0] == "orchestrators" and method == "POST" and len(parts) in (2, 3):
                return await self._start(engine, request, base, parts[1], parts[2] if len(parts) == 3 else None)
            if parts and parts[0] == "instances":
                return await self._instances(engine, request, base, parts[1:], method)
            if parts and parts[0] == "entities" and len(parts) == 3:
                return await self._entity(engine, request, parts[1], parts[2], method)
            if parts and parts[0] == "entities" and len(parts) <= 2 and method == "GET":
                return await self._entity_query(engine, request, parts[1] if len(parts) == 2 else None)
        except DurableRequestError as error:
            return _problem(error.status, str(error))
        return _problem(404, f"no durable task API route for {method} {request.path}")

    # ---- orchestrations --------------------------------------------------------------------------

    async def _body_text(self, request: web.Request, engine: DurableEngine, what: str) -> str | None:
        """The request body as a JSON text (None when empty); a non-JSON body is a 400."""
        engine.check_size(request.content_length or 0, what)
        raw = await request.read()
        if not raw.strip():
            return None
        engine.check_size(len(raw), what)
        try:
            return json.dumps(json.loads(raw))
        except ValueError:
            raise DurableRequestError(400, f"{what} must be JSON") from None

    def _check_status(self, base: str, instance_id: str) -> dict[str, Any]:
        urls = self.extension.client_value()["managementUrls"]
        client_base = self.extension.client_value()["baseUrl"]
        shown = {"id": instance_id}
        for key, url in urls.items():
            if key != "id":
                shown[key] = url.replace("INSTANCEID", instance_id).replace(client_base, base)
        return shown

    def _accepted(self, base: str, instance_id: str) -> web.Response:
        body = self._check_status(base, instance_id)
        return _json(body, 202, {"Location": body["statusQueryGetUri"], "Retry-After": "10"})

    async def _start(self, engine: DurableEngine, request: web.Request, base: str, name: str,
                     instance_id: str | None) -> web.Response:
        input_text = await self._body_text(request, engine, "orchestration input")
        created = await engine.start_instance(name, instance_id, input_text)
        timeout = request.query.get("timeout")
        if timeout:
            return await self._wait(engine, request, base, created, timeout)
        return self._accepted(base, created)

    async def _wait(self, engine: DurableEngine, request: web.Request, base: str, instance_id: str,
                    timeout_text: str) -> web.Response:
        try:
            timeout = float(timeout_text)
            interval = float(request.query.get("pollingInterval") or 1)
        except ValueError:
            raise DurableRequestError(400, "timeout and pollingInterval must be numbers of seconds") from None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = await engine.store.instance(instance_id, history=False)
            if row is not None and row.status in TERMINAL:
                if row.status == "Completed":
                    return _json(parse_json_text(row.output))
                return _json(status_payload(row), 500 if row.status == "Failed" else 200)
            await asyncio.sleep(max(0.05, min(interval, deadline - time.monotonic())))
        return self._accepted(base, instance_id)

    async def _instances(self, engine: DurableEngine, request: web.Request, base: str, parts: list[str],
                         method: str) -> web.StreamResponse:
        if not parts:
            if method == "GET":
                return await self._list(engine, request)
            if method == "DELETE":
                return await self._purge_by(engine, request)
            raise DurableRequestError(405, f"{method} is not allowed on instances/")
        instance_id = parts[0]
        if len(parts) == 1:
            if method == "GET":
                return await self._status(engine, request, instance_id)
            if method == "DELETE":
                deleted = await engine.store.purge([instance_id])
                return _json({"instancesDeleted": deleted}) if deleted else _empty(404)
            raise DurableRequestError(405, f"{method} is not allowed on an instance")
        if method != "POST":
            raise DurableRequestError(405, f"{method} is not allowed on instances/{{id}}/{parts[1]}")
        operation = parts[1]
        reason = request.query.get("reason", "")
        if operation == "raiseEvent" and len(parts) == 3:
            if request.content_type not in _JSON_TYPES:
                raise DurableRequestError(400, "the event data must be sent with Content-Type: application/json")
            data = await self._body_text(request, engine, "event data")
            await engine.send_control(instance_id, "event", name=parts[2], input=data)
            return _empty(202)
        if operation in ("terminate", "suspend", "resume") and len(parts) == 2:
            await engine.send_control(instance_id, operation, reason=reason)
            return _empty(202)
        if operation == "rewind" and len(parts) == 2:
            await engine.rewind(instance_id, reason)
            return _empty(202)
        if operation == "restart" and len(parts) == 2:
            row = await engine.store.instance(instance_id, history=False)
            if row is None:
                raise DurableRequestError(404, f"no instance with id {instance_id!r}")
            new_id = None if _flag(request, "restartWithNewInstanceId", True) else instance_id
            if new_id == instance_id and row.status not in TERMINAL:
                await engine.send_control(instance_id, "terminate", reason="restarted")
                for _ in range(200):
                    current = await engine.store.instance(instance_id, history=False)
                    if current is None or current.status in TERMINAL:
                        break
                    await asyncio.sleep(0.05)
            created = await engine.start_instance(row.name, new_id, row.input)
            return self._accepted(base, created)
        raise DurableRequestError(404, f"unknown instance operation {'/'.join(parts[1:])!r}")

    async def _status(self, engine: DurableEngine, request: web.Request, instance_id: str) -> web.Response:
        show_history = _flag(request, "showHistory", False)
        row = await engine.store.instance(instance_id, history=show_history)
        if row is None:
            return _empty(404)
        payload = status_payload(row, show_input=_flag(request, "showInput", True), show_history=show_history,
                                 show_history_output=_flag(request, "showHistoryOutput", False))
        if row.status in _RUNNING:
            location = str(request.url)
            return _json(payload, 202, {"Location": location, "Retry-After": "5"})
        if row.status == "Failed" and _flag(request, "returnInternalServerErrorOnFailure", False):
            return _json(payload, 500)
        return _json(payload, 200)

    async def _list(self, engine: DurableEngine, request: web.Request) -> web.Response:
        top, after = self._page(request)
        rows = await engine.store.query(
            created_from=_time_filter(request, "createdTimeFrom"), created_to=_time_filter(request, "createdTimeTo"),
            statuses=[s.strip() for s in request.query.get("runtimeStatus", "").split(",")],
            prefix=request.query.get("instanceIdPrefix") or None, after=after, top=(top + 1) if top else None)
        rows, headers = self._paged(rows, top, lambda row: row.instance_id)
        show_input = _flag(request, "showInput", False)
        return _json([status_payload(r, show_input=show_input) for r in rows], 200, headers)

    @staticmethod
    def _page(request: web.Request) -> tuple[int | None, str | None]:
        """`top` and the continuation token of a listing request (the last id of the previous page)."""
        top_text = request.query.get("top")
        try:
            top = int(top_text) if top_text else None
        except ValueError:
            raise DurableRequestError(400, f"top={top_text!r} is not a whole number") from None
        token = request.headers.get(CONTINUATION_HEADER)
        after = None
        if token:
            try:
                after = base64.urlsafe_b64decode(token.encode()).decode()
            except (ValueError, UnicodeDecodeError):
                raise DurableRequestError(400, f"{CONTINUATION_HEADER} is not a token this API issued") from None
        return top, after

    @staticmethod
    def _paged(rows: list[Any], top: int | None, last_id: Any) -> tuple[list[Any], dict[str, str]]:
        """At most `top` rows, and the continuation header when more follow (rows holds top + 1)."""
        if top and len(rows) > top:
            rows = rows[:top]
            return rows, {CONTINUATION_HEADER: base64.urlsafe_b64encode(last_id(rows[-1]).encode()).decode()}
        return rows, {}

    async def _entity_query(self, engine: DurableEngine, request: web.Request, name: str | None) -> web.Response:
        """Azure's entity query: entities (of one name) with their last operation time, and state
        when fetchState=true."""
        top, after = self._page(request)
        rows = await engine.store.entities(
            prefix=entity_id_of(name, "") if name else "@", updated_from=_time_filter(request, "lastOperationTimeFrom"),
            updated_to=_time_filter(request, "lastOperationTimeTo"), after=after, top=(top + 1) if top else None)
        rows, headers = self._paged(rows, top, lambda row: row[0])
        fetch_state = _flag(request, "fetchState", False)
        found = []
        for entity_id, state, updated in rows:
            entity_name, key = split_entity_id(entity_id)
            entry: dict[str, Any] = {"entityId": {"name": entity_name, "key": key}, "lastOperationTime": iso_utc(updated)}
            if fetch_state:
                entry["state"] = parse_json_text(state)
            found.append(entry)
        return _json(found, 200, headers)

    async def _purge_by(self, engine: DurableEngine, request: web.Request) -> web.Response:
        deleted = await engine.store.purge(
            created_from=_time_filter(request, "createdTimeFrom"), created_to=_time_filter(request, "createdTimeTo"),
            statuses=[s.strip() for s in request.query.get("runtimeStatus", "").split(",")])
        return _json({"instancesDeleted": deleted}) if deleted else _empty(404)

    # ---- entities --------------------------------------------------------------------------------

    async def _entity(self, engine: DurableEngine, request: web.Request, name: str, key: str,
                      method: str) -> web.Response:
        entity_id = entity_id_of(name, key)
        if method == "POST":
            operation = request.query.get("op", "")
            data = await self._body_text(request, engine, "entity operation input")
            value = json.loads(data) if data is not None else None
            # The SDK's client posts the operation input already serialized (a JSON string holding
            # JSON text); other callers post the value itself.
            await engine.signal_entity(entity_id, operation, value if isinstance(value, str) else data)
            return _empty(202)
        if method == "GET":
            exists, state = await engine.store.entity_state(entity_id)
            if not exists:
                return _empty(404)
            return web.Response(status=200, text=state if state is not None else "null",
                                content_type="application/json")
        raise DurableRequestError(405, f"{method} is not allowed on an entity")
