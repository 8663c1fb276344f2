"""The Python worker as a real process, driven over real gRPC by the host's side of the stream.

The test runs a grpc.aio server that plays the host: it accepts the worker's EventStream and
sends each message step by step (init, metadata, load, invoke, cancel, terminate), checking
what the worker answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import textwrap
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from funcplane_protocol import FunctionRpc_pb2 as pb
from funcplane_protocol import FunctionRpc_pb2_grpc as pb_grpc

pytestmark = pytest.mark.asyncio(loop_scope="session")

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "host-image" / "workers" / "python" / "worker.py"
HELLO_V2 = REPO / "examples" / "apps" / "hello-v2"
HELLO_V1 = REPO / "examples" / "apps" / "hello-v1"
STEP_TIMEOUT = 20.0


class HostPeer(pb_grpc.FunctionRpcServicer):
    """The host's end of one worker stream, with a step-by-step API for the test."""

    def __init__(self) -> None:
        self.inbound: asyncio.Queue[pb.StreamingMessage | None] = asyncio.Queue()
        self.outbound: asyncio.Queue[pb.StreamingMessage | None] = asyncio.Queue()
        self.logs: list[pb.RpcLog] = []
        self.connected = asyncio.Event()

    async def EventStream(self, request_iterator, context):  # noqa: N802 (generated name)
        self.connected.set()

        async def pump() -> None:
            async for message in request_iterator:
                await self.inbound.put(message)
            await self.inbound.put(None)  # the worker closed its side
            await self.outbound.put(None)  # so the host closes its own

        reader = asyncio.ensure_future(pump())
        try:
            while (message := await self.outbound.get()) is not None:
                yield message
        finally:
            reader.cancel()

    async def send(self, request_id: str = "", **content: object) -> None:
        await self.outbound.put(pb.StreamingMessage(request_id=request_id, **content))

    async def next_message(self) -> pb.StreamingMessage | None:
        """The next non-log message (logs are collected in self.logs); None when the worker closed."""
        while True:
            message = await asyncio.wait_for(self.inbound.get(), STEP_TIMEOUT)
            if message is not None and message.WhichOneof("content") == "rpc_log":
                self.logs.append(message.rpc_log)
                continue
            return message

    async def expect(self, kind: str, request_id: str | None = None):
        message = await self.next_message()
        assert message is not None, f"the worker closed the stream while {kind} was expected"
        assert message.WhichOneof("content") == kind, f"expected {kind}, got {message}"
        if request_id is not None:
            assert message.request_id == request_id
        return getattr(message, kind)

    async def request(self, kind: str, response_kind: str, message: object, request_id: str):
        await self.send(request_id, **{kind: message})
        return await self.expect(response_kind, request_id)

    # ---- lifecycle helpers -------------------------------------------------------------------

    async def initialize(self, app: Path) -> pb.WorkerInitResponse:
        response = await self.request(
            "worker_init_request",
            "worker_init_response",
            pb.WorkerInitRequest(
                host_version="4.0.0-funcplane-test",
                capabilities={"RpcHttpBodyOnly": "true", "TypedDataCollection": "true"},
                worker_directory=str(LAUNCHER.parent),
                function_app_directory=str(app),
            ),
            "init",
        )
        assert response.result.status == pb.StatusResult.Success, response
        return response

    async def index(self, app: Path) -> pb.FunctionMetadataResponse:
        return await self.request(
            "functions_metadata_request",
            "function_metadata_response",
            pb.FunctionsMetadataRequest(function_app_directory=str(app)),
            "metadata",
        )

    async def status(self) -> None:
        await self.request(
            "worker_status_request", "worker_status_response", pb.WorkerStatusRequest(), "status"
        )

    async def load(self, request: pb.FunctionLoadRequest, request_id: str) -> pb.FunctionLoadResponse:
        return await self.request("function_load_request", "function_load_response", request, request_id)

    async def invoke(self, function_id: str, invocation_id: str, inputs: dict[str, pb.TypedData]):
        await self.send_invocation(function_id, invocation_id, inputs)
        return await self.expect_invocation_response(invocation_id)

    async def send_invocation(
        self, function_id: str, invocation_id: str, inputs: dict[str, pb.TypedData]
    ) -> None:
        request = pb.InvocationRequest(invocation_id=invocation_id, function_id=function_id)
        for name, data in inputs.items():
            request.input_data.add(name=name, data=data)
        await self.send(f"req-{invocation_id}", invocation_request=request)

    async def expect_invocation_response(self, invocation_id: str) -> pb.InvocationResponse:
        response = await self.expect("invocation_response", f"req-{invocation_id}")
        assert response.invocation_id == invocation_id
        return response


@contextlib.asynccontextmanager
async def worker_connected(tmp_path: Path, *, new_style_arguments: bool = True) -> AsyncIterator[
    tuple[HostPeer, asyncio.subprocess.Process]
]:
    """Start a gRPC server playing the host and the real worker process that connects to it."""
    peer = HostPeer()
    server = grpc.aio.server()
    pb_grpc.add_FunctionRpcServicer_to_server(peer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    if new_style_arguments:
        arguments = [
            "--functions-uri", f"http://127.0.0.1:{port}/",
            "--functions-worker-id", "worker-1",
            "--functions-request-id", "start-1",
            "--functions-grpc-max-message-length", "2147483647",
        ]
    else:
        arguments = [
            "--host", "127.0.0.1", "--port", str(port), "--workerId", "worker-1",
            "--requestId", "start-1", "--grpcMaxMessageLength", "2147483647",
        ]
    stderr_path = tmp_path / "worker.stderr"
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(LAUNCHER), *arguments,
            stdout=stderr, stderr=stderr, cwd=str(tmp_path),
        )
    try:
        try:
            start = await peer.expect("start_stream", "start-1")
        except (TimeoutError, AssertionError) as error:
            raise AssertionError(
                f"the worker did not start its stream: {error}\n{stderr_path.read_text()}"
            ) from error
        assert start.worker_id == "worker-1"
        yield peer, process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await server.stop(grace=None)


def http_request(
    method: str = "GET",
    url: str = "http://localhost/api/",
    *,
    query: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> pb.TypedData:
    http = pb.RpcHttp(method=method, url=url, headers=headers or {}, query=query or {}, params=params or {})
    http.body.bytes = body
    return pb.TypedData(http=http)


def write_app(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def v1_load_request(app: Path, folder: str, bindings: Iterable[tuple[str, str, int]], entry_point: str = ""):
    """A FunctionLoadRequest as a host-indexing host sends it for a function.json folder."""
    metadata = pb.RpcFunctionMetadata(
        name=folder,
        directory=str(app / folder),
        script_file=str(app / folder / "__init__.py"),
        entry_point=entry_point,
        language="python",
    )
    for name, binding_type, direction in bindings:
        metadata.bindings[name].CopyFrom(pb.BindingInfo(type=binding_type, direction=direction))
    return pb.FunctionLoadRequest(function_id=f"id-{folder}", metadata=metadata)


IN = pb.BindingInfo.Direction.Value("in")
HTTP_BINDINGS = [("req", "httpTrigger", IN), ("$return", "http", pb.BindingInfo.out)]


async def test_v2_app_full_lifecycle(tmp_path: Path) -> None:
    async with worker_connected(tmp_path) as (peer, process):
        init = await peer.initialize(HELLO_V2)
        for capability in (
            "RawHttpBodyBytes", "TypedDataCollection", "RpcHttpBodyOnly",
            "RpcHttpTriggerMetadataRemoved", "WorkerStatus", "HandlesWorkerTerminateMessage",
        ):
            assert init.capabilities[capability] == "true", capability
        assert init.worker_metadata.runtime_name == "python"
        assert init.worker_metadata.runtime_version.startswith(f"{sys.version_info[0]}.{sys.version_info[1]}")

        await peer.status()
        warmed = await peer.request(
            "worker_warmup_request", "worker_warmup_response",
            pb.WorkerWarmupRequest(worker_directory=str(LAUNCHER.parent)), "warmup",
        )
        assert warmed.result.status == pb.StatusResult.Success
        # Messages the worker has no use for are ignored without breaking the stream.
        await peer.send("", worker_heartbeat=pb.WorkerHeartbeat())
        await peer.send("", invocation_cancel=pb.InvocationCancel(invocation_id="never-started"))
        await peer.status()

        metadata = await peer.index(HELLO_V2)
        assert metadata.result.status == pb.StatusResult.Success
        assert not metadata.use_default_metadata_indexing
        functions = {f.name: f for f in metadata.function_metadata_results}
        assert set(functions) == {"hello", "get_item", "echo", "stats"}
        item = functions["get_item"]
        raw = [json.loads(binding) for binding in item.raw_bindings]
        trigger = next(b for b in raw if b["type"] == "httpTrigger")
        assert trigger["route"] == "items/{item_id}"
        assert trigger["name"] == "req"
        assert item.bindings["$return"].type == "http"
        assert item.bindings["$return"].direction == pb.BindingInfo.out
        assert item.script_file.endswith("function_app.py")
        assert item.function_id and len({f.function_id for f in functions.values()}) == 4

        loads = await peer.request(
            "function_load_request_collection",
            "function_load_response_collection",
            pb.FunctionLoadRequestCollection(
                function_load_requests=[
                    pb.FunctionLoadRequest(function_id=f.function_id, metadata=f) for f in functions.values()
                ]
            ),
            "load",
        )
        assert [r.result.status for r in loads.function_load_responses] == [pb.StatusResult.Success] * 4

        hello = await peer.invoke(functions["hello"].function_id, "inv-hello", {
            "req": http_request(query={"name": "Ada"}),
        })
        assert hello.result.status == pb.StatusResult.Success, hello.result.exception.message
        assert hello.return_value.http.status_code == "200"
        assert hello.return_value.http.body.bytes == b"Hello, Ada!"
        assert hello.return_value.http.headers["Content-Type"].startswith("text/plain")

        item_response = await peer.invoke(item.function_id, "inv-item", {
            "req": http_request(params={"item_id": "42"}),
        })
        assert item_response.result.status == pb.StatusResult.Success, item_response.result.exception.message
        assert json.loads(item_response.return_value.http.body.bytes) == {"id": "42", "name": "item 42"}
        assert item_response.return_value.http.headers["Content-Type"].startswith("application/json")

        echoed = await peer.invoke(functions["echo"].function_id, "inv-echo", {
            "req": http_request("POST", headers={"Content-Type": "application/json"}, body=b'{"a": 1}'),
        })
        assert echoed.result.status == pb.StatusResult.Success, echoed.result.exception.message
        assert echoed.return_value.http.body.bytes == b'{"a": 1}'
        assert echoed.return_value.http.headers["X-Invocation-Id"] == "inv-echo"
        echo_logs = [log for log in peer.logs if log.invocation_id == "inv-echo"]
        assert [log.message for log in echo_logs] == ["echo received 8 bytes"]
        assert echo_logs[0].category == "root"
        assert echo_logs[0].level == pb.RpcLog.Information
        assert echo_logs[0].log_category == pb.RpcLog.User

        await peer.send("terminate", worker_terminate=pb.WorkerTerminate(grace_period=Duration(seconds=5)))
        assert await peer.next_message() is None, "the worker should close its stream on terminate"
        assert await asyncio.wait_for(process.wait(), STEP_TIMEOUT) == 0


async def test_v1_app_with_host_indexing_and_legacy_arguments(tmp_path: Path) -> None:
    async with worker_connected(tmp_path, new_style_arguments=False) as (peer, _process):
        await peer.initialize(HELLO_V1)
        metadata = await peer.index(HELLO_V1)
        assert metadata.use_default_metadata_indexing, "no function_app.py: the host should index"
        assert metadata.result.status == pb.StatusResult.Success

        loaded = await peer.load(v1_load_request(HELLO_V1, "HttpTrigger", HTTP_BINDINGS), "load")
        assert loaded.function_id == "id-HttpTrigger"
        assert loaded.result.status == pb.StatusResult.Success, loaded.result.exception.message

        greeting = await peer.invoke("id-HttpTrigger", "inv-1", {
            "req": http_request("POST", body=b'{"name": "Grace"}'),
        })
        assert greeting.result.status == pb.StatusResult.Success, greeting.result.exception.message
        assert greeting.return_value.http.body.bytes == b"Hello, Grace!"
        assert [log.message for log in peer.logs if log.invocation_id == "inv-1"] == ["greeting Grace"]

        bad_json = await peer.invoke("id-HttpTrigger", "inv-2", {"req": http_request("POST", body=b"{nope")})
        assert bad_json.return_value.http.status_code == "400"


async def test_failures_stay_inside_their_function(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", {
        "host.json": '{"version": "2.0"}',
        "Broken/__init__.py": """
            import not_a_module_anywhere

            def main(req):
                return "never"
        """,
        "Raises/__init__.py": """
            def main(req):
                raise ValueError("boom from user code")
        """,
        "WrongReturn/__init__.py": """
            def main(req):
                return {"not": "an HttpResponse"}
        """,
        "Exits/__init__.py": """
            import sys

            def main(req):
                sys.exit(3)
        """,
        "Mismatch/__init__.py": """
            def main(request):
                return "parameter name does not match the binding"
        """,
        "Good/__init__.py": """
            from ..shared import greeting

            def main(req):
                return greeting()
        """,
        "shared/__init__.py": """
            def greeting():
                return "still alive"
        """,
    })
    async with worker_connected(tmp_path) as (peer, _process):
        await peer.initialize(app)
        results = {}
        for folder in ("Broken", "Raises", "WrongReturn", "Exits", "Mismatch", "Good"):
            response = await peer.load(v1_load_request(app, folder, HTTP_BINDINGS), f"load-{folder}")
            results[folder] = response.result
        broken = results.pop("Broken")
        assert broken.status == pb.StatusResult.Failure
        assert "'Broken'" in broken.exception.message
        assert "not_a_module_anywhere" in broken.exception.message
        mismatch = results.pop("Mismatch")
        assert mismatch.status == pb.StatusResult.Failure
        assert "'request'" in mismatch.exception.message and "'req'" in mismatch.exception.message
        assert {name: r.status for name, r in results.items()} == {
            name: pb.StatusResult.Success for name in results
        }

        raised = await peer.invoke("id-Raises", "inv-raise", {"req": http_request()})
        assert raised.result.status == pb.StatusResult.Failure
        assert raised.result.exception.message == "ValueError: boom from user code"
        assert "Raises/__init__.py" in raised.result.exception.stack_trace
        assert "Raises/__init__.py" in raised.result.exception.source
        assert not raised.HasField("return_value")

        wrong = await peer.invoke("id-WrongReturn", "inv-wrong", {"req": http_request()})
        assert wrong.result.status == pb.StatusResult.Failure
        assert "HttpResponse" in wrong.result.exception.message and "dict" in wrong.result.exception.message

        exited = await peer.invoke("id-Exits", "inv-exit", {"req": http_request()})
        assert exited.result.status == pb.StatusResult.Failure
        assert "SystemExit" in exited.result.exception.message

        unknown = await peer.invoke("id-Broken", "inv-unknown", {"req": http_request()})
        assert unknown.result.status == pb.StatusResult.Failure
        assert "id-Broken" in unknown.result.exception.message

        good = await peer.invoke("id-Good", "inv-good", {"req": http_request()})
        assert good.result.status == pb.StatusResult.Success, good.result.exception.message
        assert good.return_value.http.body.bytes == b"still alive"


async def test_v2_app_that_fails_to_import_reports_indexing_failure(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", {
        "host.json": '{"version": "2.0"}',
        "function_app.py": """
            import azure.functions as func

            app = func.FunctionApp()
            raise RuntimeError("configuration missing: set MY_SETTING")
        """,
    })
    async with worker_connected(tmp_path) as (peer, _process):
        await peer.initialize(app)
        metadata = await peer.index(app)
        assert metadata.result.status == pb.StatusResult.Failure
        assert "configuration missing: set MY_SETTING" in metadata.result.exception.message
        assert "function_app.py" in metadata.result.exception.stack_trace
        # The worker is still serving.
        await peer.status()


CONCURRENCY_APP = {
    "host.json": '{"version": "2.0"}',
    "function_app.py": """
        import asyncio
        import logging
        import os
        import time
        from pathlib import Path

        import azure.functions as func

        app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
        RELEASE = Path(os.environ.get("RELEASE_FILE", "release"))


        @app.route(route="blocking")
        def blocking(req: func.HttpRequest) -> str:
            # A sync function that holds its thread until the test releases it.
            deadline = time.monotonic() + 30
            while not RELEASE.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            return "released" if RELEASE.exists() else "timed out"


        @app.route(route="quick")
        def quick(req: func.HttpRequest) -> str:
            return "quick"


        @app.route(route="forever")
        async def forever(req: func.HttpRequest, context: func.Context) -> str:
            context.logger.warning("waiting forever")
            await asyncio.sleep(3600)
            return "unreachable"


        @app.route(route="waits")
        async def waits(req: func.HttpRequest) -> str:
            while not RELEASE.exists():
                await asyncio.sleep(0.01)
            logging.info("finished after release")
            return "drained"


        @app.route(route="stuck")
        def stuck(req: func.HttpRequest) -> str:
            time.sleep(3600)  # ignores every cancellation
            return "unreachable"


        @app.route(route="setting")
        def setting(req: func.HttpRequest) -> str:
            return os.environ.get("GREETING_SETTING", "unset")
    """,
}


async def _load_v2(peer: HostPeer, app: Path) -> dict[str, str]:
    await peer.initialize(app)
    metadata = await peer.index(app)
    assert metadata.result.status == pb.StatusResult.Success, metadata.result.exception.message
    ids = {}
    for function in metadata.function_metadata_results:
        request = pb.FunctionLoadRequest(function_id=function.function_id, metadata=function)
        loaded = await peer.load(request, f"load-{function.name}")
        assert loaded.result.status == pb.StatusResult.Success, loaded.result.exception.message
        ids[function.name] = function.function_id
    return ids


async def test_sync_functions_do_not_block_the_stream_and_cancel_works(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", CONCURRENCY_APP)
    release = tmp_path / "release"
    async with worker_connected(tmp_path) as (peer, _process):
        ids = await _load_v2(peer, app)
        reloaded = await peer.request(
            "function_environment_reload_request", "function_environment_reload_response",
            pb.FunctionEnvironmentReloadRequest(
                environment_variables={"GREETING_SETTING": "hola", "RELEASE_FILE": str(release),
                                       "PATH": "/usr/bin:/bin"},
                function_app_directory=str(app),
            ),
            "reload",
        )
        assert reloaded.result.status == pb.StatusResult.Success
        assert reloaded.capabilities["WorkerStatus"] == "true"
        setting = await peer.invoke(ids["setting"], "inv-setting", {"req": http_request()})
        assert setting.return_value.http.body.bytes == b"hola"

        await peer.send_invocation(ids["blocking"], "inv-blocking", {"req": http_request()})
        quick = await peer.invoke(ids["quick"], "inv-quick", {"req": http_request()})
        assert quick.return_value.http.body.bytes == b"quick", "a blocked sync function held up the stream"
        release.touch()
        blocking = await peer.expect_invocation_response("inv-blocking")
        assert blocking.return_value.http.body.bytes == b"released"

        await peer.send_invocation(ids["forever"], "inv-forever", {"req": http_request()})
        # Once its log line arrives the invocation is running; then cancel it.
        while not any(log.invocation_id == "inv-forever" for log in peer.logs):
            await peer.send("status", worker_status_request=pb.WorkerStatusRequest())
            await peer.expect("worker_status_response", "status")
        log = next(log for log in peer.logs if log.invocation_id == "inv-forever")
        assert log.category == "Function.forever.User" and log.level == pb.RpcLog.Warning
        await peer.send("", invocation_cancel=pb.InvocationCancel(invocation_id="inv-forever"))
        cancelled = await peer.expect_invocation_response("inv-forever")
        assert cancelled.result.status == pb.StatusResult.Cancelled


async def test_terminate_finishes_running_invocations_then_exits(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", CONCURRENCY_APP)
    release = tmp_path / "release"
    async with worker_connected(tmp_path) as (peer, process):
        ids = await _load_v2(peer, app)
        await peer.request(
            "function_environment_reload_request", "function_environment_reload_response",
            pb.FunctionEnvironmentReloadRequest(environment_variables={"RELEASE_FILE": str(release)}),
            "reload",
        )
        await peer.send_invocation(ids["waits"], "inv-waits", {"req": http_request()})
        await peer.send("terminate", worker_terminate=pb.WorkerTerminate(grace_period=Duration(seconds=30)))
        await peer.send_invocation(ids["quick"], "inv-late", {"req": http_request()})
        late = await peer.expect_invocation_response("inv-late")
        assert late.result.status == pb.StatusResult.Failure
        assert "terminating" in late.result.exception.message
        release.touch()
        drained = await peer.expect_invocation_response("inv-waits")
        assert drained.result.status == pb.StatusResult.Success
        assert drained.return_value.http.body.bytes == b"drained"
        assert "finished after release" in [log.message for log in peer.logs]
        assert await peer.next_message() is None
        assert await asyncio.wait_for(process.wait(), STEP_TIMEOUT) == 0


async def test_non_http_bindings_use_typed_data(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", {
        "host.json": '{"version": "2.0"}',
        "Queue/__init__.py": """
            import azure.functions as func

            def main(msg: func.QueueMessage, numbers: list, outq: func.Out[str]) -> dict:
                outq.set(msg.get_body().decode().upper())
                return {"id": msg.id, "sum": sum(numbers)}
        """,
    })
    async with worker_connected(tmp_path) as (peer, _process):
        await peer.initialize(app)
        loaded = await peer.load(
            v1_load_request(app, "Queue", [
                ("msg", "queueTrigger", IN),
                ("numbers", "customInput", IN),
                ("outq", "queue", pb.BindingInfo.out),
                ("$return", "customOutput", pb.BindingInfo.out),
            ]),
            "load",
        )
        assert loaded.result.status == pb.StatusResult.Success, loaded.result.exception.message
        request = pb.InvocationRequest(invocation_id="inv-q", function_id="id-Queue")
        request.input_data.add(name="msg", data=pb.TypedData(string="hello queue"))
        request.input_data.add(
            name="numbers", data=pb.TypedData(collection_sint64=pb.CollectionSInt64(sint64=[1, 2, 39]))
        )
        request.trigger_metadata["Id"].json = json.dumps("message-7")
        await peer.send("req-inv-q", invocation_request=request)
        response = await peer.expect_invocation_response("inv-q")
        assert response.result.status == pb.StatusResult.Success, response.result.exception.message
        assert json.loads(response.return_value.json) == {"id": "message-7", "sum": 42}
        outputs = {binding.name: binding.data for binding in response.output_data}
        assert outputs["outq"].string == "HELLO QUEUE"


async def test_terminate_gives_up_on_stuck_functions_after_the_grace_period(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app", CONCURRENCY_APP)
    async with worker_connected(tmp_path) as (peer, process):
        ids = await _load_v2(peer, app)
        await peer.send_invocation(ids["stuck"], "inv-stuck", {"req": http_request()})
        await peer.status()
        short_grace = pb.WorkerTerminate(grace_period=Duration(nanos=200_000_000))
        await peer.send("terminate", worker_terminate=short_grace)
        stuck = await peer.expect_invocation_response("inv-stuck")
        assert stuck.result.status == pb.StatusResult.Cancelled
        assert await peer.next_message() is None
        assert await asyncio.wait_for(process.wait(), STEP_TIMEOUT) == 0


async def test_worker_indexed_functions_load_without_a_metadata_request(tmp_path: Path) -> None:
    """A host that kept the metadata from an earlier worker process may load straight away,
    under ids of its own."""
    async with worker_connected(tmp_path) as (peer, _process):
        await peer.initialize(HELLO_V2)

        def remembered(name: str) -> pb.FunctionLoadRequest:
            return pb.FunctionLoadRequest(
                function_id=f"host-{name}",
                metadata=pb.RpcFunctionMetadata(
                    name=name, directory=str(HELLO_V2), script_file=str(HELLO_V2 / "function_app.py"),
                    entry_point=name, language="python", properties={"worker_indexed": "True"},
                ),
            )

        loaded = await peer.load(remembered("hello"), "l1")
        assert loaded.result.status == pb.StatusResult.Success, loaded.result.exception.message
        missing = await peer.load(remembered("gone"), "l2")
        assert missing.result.status == pb.StatusResult.Failure
        assert "'gone'" in missing.result.exception.message and "hello" in missing.result.exception.message

        greeting = await peer.invoke("host-hello", "inv-1", {"req": http_request(query={"name": "Bo"})})
        assert greeting.return_value.http.body.bytes == b"Hello, Bo!"


async def test_worker_exits_when_the_host_closes_the_stream(tmp_path: Path) -> None:
    async with worker_connected(tmp_path) as (peer, process):
        await peer.initialize(HELLO_V1)
        await peer.outbound.put(None)  # the host ends its side of the stream
        assert await asyncio.wait_for(process.wait(), STEP_TIMEOUT) == 0
