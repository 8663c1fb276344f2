"""One invocation through the worker's invoke path (in process): ASGI apps, durable triggers."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import azure.functions as func

from funcplane_protocol import FunctionRpc_pb2 as pb
from funcplane_pyworker.bindings import BindingSpec
from funcplane_pyworker.functions import build_function
from funcplane_pyworker.indexing import index_app
from funcplane_pyworker.invoker import invoke, new_function_threads

ASGI_APP = '''
    import azure.functions as func


    async def asgi_app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = (await receive()).get("body", b"")
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"content-type", b"text/plain"), (b"x-path", scope["path"].encode())]})
        await send({"type": "http.response.body", "body": b"asgi:" + body})


    app = func.AsgiFunctionApp(app=asgi_app, http_auth_level=func.AuthLevel.ANONYMOUS)
'''


def run(coroutine):
    return asyncio.run(coroutine)


def test_asgi_function_app_serves_through_the_worker(tmp_path: Path) -> None:
    (tmp_path / "function_app.py").write_text(textwrap.dedent(ASGI_APP))
    (indexed,) = index_app(tmp_path) or []
    trigger = json.loads(indexed.metadata.raw_bindings[0])
    assert trigger["route"] == "/{*route}"
    request = pb.InvocationRequest(invocation_id="i-1", function_id=indexed.metadata.function_id)
    http = pb.RpcHttp(method="POST", url="http://localhost/api/things/1", headers={"host": "localhost"})
    http.body.bytes = b"payload"
    request.input_data.add(name="req", data=pb.TypedData(http=http))
    assert indexed.loaded is not None
    response = run(invoke(indexed.loaded, request, new_function_threads()))
    assert response.result.status == pb.StatusResult.Success, response.result.exception.message
    assert response.return_value.http.status_code == "201"
    assert response.return_value.http.headers["x-path"] == "/api/things/1"
    assert response.return_value.http.body.bytes == b"asgi:payload"


def test_orchestration_trigger_gets_the_library_context_and_returns_json() -> None:
    def orchestrator(context: func.OrchestrationContext) -> str:
        state = json.loads(context.body)
        return json.dumps({"isDone": True, "output": state["input"].upper()})

    loaded = build_function(
        function_id="o", name="orchestrator", directory="/", user_function=orchestrator,
        bindings=[BindingSpec("context", "orchestrationTrigger", pb.BindingInfo.Direction.Value("in"))],
    )
    request = pb.InvocationRequest(invocation_id="i-2", function_id="o")
    request.input_data.add(name="context", data=pb.TypedData(string=json.dumps({"input": "abc"})))
    response = run(invoke(loaded, request, new_function_threads()))
    assert response.result.status == pb.StatusResult.Success, response.result.exception.message
    assert response.return_value.WhichOneof("data") == "json"
    assert json.loads(response.return_value.json) == {"isDone": True, "output": "ABC"}
