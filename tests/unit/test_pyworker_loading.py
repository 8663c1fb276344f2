"""The Python worker's command line, function/binding matching and worker indexing."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import azure.functions as func
import pytest

from funcplane_protocol import FunctionRpc_pb2 as pb
from funcplane_pyworker.bindings import BindingSpec
from funcplane_pyworker.functions import FunctionLoadError, build_function
from funcplane_pyworker.indexing import index_app
from funcplane_pyworker.options import OptionsError, parse_options

REPO = Path(__file__).resolve().parents[2]
IN = pb.BindingInfo.Direction.Value("in")
OUT = pb.BindingInfo.out
HTTP = [BindingSpec("req", "httpTrigger", IN), BindingSpec("$return", "http", OUT)]


class TestOptions:
    def test_legacy_arguments(self) -> None:
        options = parse_options(
            ["--host", "127.0.0.1", "--port", "5001", "--workerId", "w", "--requestId", "r",
             "--grpcMaxMessageLength", "1048576"]
        )
        assert (options.target, options.worker_id, options.request_id, options.max_message_length) == (
            "127.0.0.1:5001", "w", "r", 1048576,
        )

    def test_functions_uri_arguments_and_unknown_extras(self) -> None:
        options = parse_options(
            ["--functions-uri", "http://[::1]:7071/", "--functions-worker-id", "w2",
             "--functions-request-id", "r2", "--functions-grpc-max-message-length", "0",
             "--some-future-flag", "x"]
        )
        assert (options.target, options.worker_id, options.request_id) == ("[::1]:7071", "w2", "r2")
        assert options.max_message_length is None

    @pytest.mark.parametrize(
        "argv, mentions",
        [
            (["--workerId", "w"], "--host"),
            (["--host", "h", "--port", "1"], "worker id"),
            (["--functions-uri", "not-a-uri", "--functions-worker-id", "w"], "--functions-uri"),
        ],
    )
    def test_missing_or_bad_arguments_are_named(self, argv: list[str], mentions: str) -> None:
        with pytest.raises(OptionsError, match=mentions):
            parse_options(argv)


def greet(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.params.get("name", "x"))


class TestBuildFunction:
    def test_http_function_converts_request_and_response(self) -> None:
        loaded = build_function(
            function_id="1", name="greet", directory="/app", user_function=greet, bindings=HTTP
        )
        http = pb.RpcHttp(method="GET", url="http://x/", query={"name": "Ada"})
        request = loaded.inputs["req"](pb.TypedData(http=http), {})
        assert loaded.return_encoder is not None
        assert loaded.return_encoder(loaded.user_function(request)).http.body.bytes == b"Ada"
        assert not loaded.is_async and loaded.context_parameter is None

    def test_out_parameters_context_and_async_are_recognised(self) -> None:
        async def handler(req, context: func.Context, result: func.Out[str], optional: int = 3) -> None:
            return None

        loaded = build_function(
            function_id="1", name="handler", directory="/app", user_function=handler,
            bindings=[BindingSpec("req", "httpTrigger", IN), BindingSpec("result", "queue", OUT)],
        )
        assert loaded.is_async
        assert loaded.context_parameter == "context"
        assert set(loaded.outputs) == {"result"} and set(loaded.inputs) == {"req"}
        assert loaded.return_encoder is None

    def test_mismatched_names_are_reported_both_ways(self) -> None:
        def handler(request):
            return None

        with pytest.raises(FunctionLoadError) as raised:
            build_function(function_id="1", name="f", directory="/", user_function=handler, bindings=HTTP)
        message = str(raised.value)
        assert "parameter 'request' has no binding" in message
        assert "binding 'req' (httpTrigger) has no parameter" in message

    def test_durable_triggers_return_results_implicitly(self) -> None:
        def activity(name: str) -> str:
            return f"hi {name}"

        loaded = build_function(
            function_id="1", name="activity", directory="/", user_function=activity,
            bindings=[BindingSpec("name", "activityTrigger", IN)],
        )
        assert loaded.return_encoder is not None
        assert json.loads(loaded.return_encoder("hi x").json) == "hi x"


class TestIndexing:
    def test_sample_v2_app(self) -> None:
        app = REPO / "examples" / "apps" / "hello-v2"
        indexed = index_app(app)
        assert indexed is not None
        by_name = {function.metadata.name: function for function in indexed}
        assert set(by_name) == {"hello", "get_item", "echo", "stats"}
        stats = by_name["stats"].metadata
        trigger = json.loads(stats.raw_bindings[0])
        assert trigger["type"] == "httpTrigger" and trigger["authLevel"].lower() == "function"
        assert stats.properties["worker_indexed"] == "True"
        assert all(function.loaded is not None for function in indexed)
        assert index_app(app)[0].metadata.function_id == indexed[0].metadata.function_id

    def test_app_without_function_app_py_is_left_to_the_host(self) -> None:
        assert index_app(REPO / "examples" / "apps" / "hello-v1") is None

    def test_one_bad_function_does_not_hide_the_others(self, tmp_path: Path) -> None:
        (tmp_path / "function_app.py").write_text(textwrap.dedent("""
            import azure.functions as func

            app = func.FunctionApp()

            @app.route(route="ok")
            def ok(req: func.HttpRequest) -> str:
                return "ok"

            @app.route(route="bad")
            def bad(request: func.HttpRequest) -> str:
                return "bad"
        """))
        indexed = {function.metadata.name: function for function in index_app(tmp_path) or []}
        assert indexed["ok"].metadata.status.status == pb.StatusResult.Success
        assert indexed["bad"].loaded is None
        assert indexed["bad"].metadata.status.status == pb.StatusResult.Failure
        assert "'request'" in indexed["bad"].metadata.status.exception.message

    def test_app_without_a_function_app_object_is_an_error(self, tmp_path: Path) -> None:
        (tmp_path / "function_app.py").write_text("x = 1\n")
        with pytest.raises(FunctionLoadError, match="FunctionApp"):
            index_app(tmp_path)


def test_sample_v1_function_runs_directly() -> None:
    """The v1 sample's entry point behaves as its function.json promises."""
    from funcplane_pyworker.loader import load_entry_point

    app = REPO / "examples" / "apps" / "hello-v1"
    main = load_entry_point(
        script_root=app, directory=str(app / "HttpTrigger"), script_file="__init__.py", entry_point=""
    )
    bindings = json.loads((app / "HttpTrigger" / "function.json").read_text())["bindings"]
    assert {b["name"] for b in bindings} == {"req", "$return"}
    response = main(func.HttpRequest("GET", "http://x/", params={"name": "Lin"}, body=b""))
    assert response.get_body() == b"Hello, Lin!"
    assert asyncio.iscoroutinefunction(main) is False


def test_durable_activity_input_is_the_parsed_payload() -> None:
    def activity(name: str) -> str:
        return name

    loaded = build_function(
        function_id="1", name="activity", directory="/", user_function=activity,
        bindings=[BindingSpec("name", "activityTrigger", IN)],
    )
    assert loaded.inputs["name"](pb.TypedData(json='"Tokyo"'), {}) == "Tokyo"


def test_worker_config_is_in_azure_format_and_points_at_the_launcher() -> None:
    worker_dir = REPO / "host-image" / "workers" / "python"
    description = json.loads((worker_dir / "worker.config.json").read_text())["description"]
    assert description["language"] == "python"
    assert description["extensions"] == [".py"]
    assert description["workerIndexing"] == "true"
    assert description["defaultRuntimeVersion"] in description["supportedRuntimeVersions"]
    assert (worker_dir / description["defaultWorkerPath"]).is_file()
    assert description["defaultExecutablePath"] in ("python", "python3")
