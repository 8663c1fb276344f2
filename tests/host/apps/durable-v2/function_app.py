"""A Durable Functions app written against Microsoft's SDK (azure-functions-durable), unchanged
from what would be published to Azure: chaining, fan-out/fan-in, human interaction, timers,
retries, sub-orchestrations, continue-as-new, entities, and the SDK's client from HTTP functions."""

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="orchestrators/{functionName}")
@app.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client) -> func.HttpResponse:
    payload = req.get_json() if req.get_body() else None
    instance_id = await client.start_new(req.route_params["functionName"], None, payload)
    return client.create_check_status_response(req, instance_id)


@app.route(route="wait/{functionName}")
@app.durable_client_input(client_name="client")
async def http_start_and_wait(req: func.HttpRequest, client) -> func.HttpResponse:
    payload = req.get_json() if req.get_body() else None
    instance_id = await client.start_new(req.route_params["functionName"], None, payload)
    return await client.wait_for_completion_or_create_check_status_response(req, instance_id, 60000, 100)


@app.route(route="client/{instanceId}/{action}", methods=["POST", "GET"])
@app.durable_client_input(client_name="client")
async def http_client(req: func.HttpRequest, client) -> func.HttpResponse:
    instance_id = req.route_params["instanceId"]
    action = req.route_params["action"]
    if action == "status":
        status = await client.get_status(instance_id, show_history=True)
        body = {"runtimeStatus": status.runtime_status.value if status.runtime_status else None,
                "output": status.output, "customStatus": status.custom_status,
                "historyLength": len(status.historyEvents or [])}
        return func.HttpResponse(json.dumps(body), mimetype="application/json")
    if action == "raise":
        await client.raise_event(instance_id, req.params["event"], req.get_json())
    elif action == "terminate":
        await client.terminate(instance_id, "stopped by test")
    elif action == "purge":
        result = await client.purge_instance_history(instance_id)
        return func.HttpResponse(json.dumps({"deleted": result.instances_deleted}), mimetype="application/json")
    elif action == "signal":
        await client.signal_entity(df.EntityId("counter", instance_id), "add", req.get_json())
    elif action == "entity":
        state = await client.read_entity_state(df.EntityId("counter", instance_id))
        return func.HttpResponse(json.dumps({"exists": state.entity_exists, "state": state.entity_state}),
                                 mimetype="application/json")
    return func.HttpResponse(status_code=202)


@app.route(route="ping", methods=["GET"])
def ping(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("pong")


@app.orchestration_trigger(context_name="context")
def chain(context: df.DurableOrchestrationContext):
    cities = context.get_input() or ["Tokyo", "Seattle", "London"]
    greetings = []
    for city in cities:
        greetings.append((yield context.call_activity("hello", city)))
    return greetings


@app.activity_trigger(input_name="city")
def hello(city: str) -> str:
    return f"Hello {city}!"


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    count = context.get_input()
    squares = yield context.task_all([context.call_activity("square", n) for n in range(count)])
    return sum(squares)


@app.activity_trigger(input_name="value")
def square(value: int) -> int:
    return value * value


@app.orchestration_trigger(context_name="context")
def slow_chain(context: df.DurableOrchestrationContext):
    steps = context.get_input()
    total = 0
    for step in range(steps):
        total += yield context.call_activity("slow_square", step)
    return total


@app.activity_trigger(input_name="value")
def slow_square(value: int) -> int:
    time.sleep(0.2)
    return value * value


@app.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext):
    seconds = context.get_input()
    timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=seconds))
    event = context.wait_for_external_event("Approval")
    context.set_custom_status("waiting for approval")
    winner = yield context.task_any([event, timer])
    if winner == event:
        timer.cancel()
        return {"approved": event.result}
    return "timed out"


@app.orchestration_trigger(context_name="context")
def sleeper(context: df.DurableOrchestrationContext):
    started = context.current_utc_datetime
    first_id = str(context.new_uuid())
    echoed = yield context.call_activity("hello", first_id)  # recorded once, in the first episode
    yield context.create_timer(started + timedelta(seconds=1))
    elapsed = (context.current_utc_datetime - started).total_seconds()
    # Replays recompute first_id from the replayed clock: it matches only if time replays exactly.
    return {"elapsedAtLeastOne": elapsed >= 1, "uuidStable": echoed == f"Hello {first_id}!"}


@app.orchestration_trigger(context_name="context")
def retrying(context: df.DurableOrchestrationContext):
    options = df.RetryOptions(first_retry_interval_in_milliseconds=50, max_number_of_attempts=3)
    job = {"key": context.instance_id, "failures": context.get_input()}
    try:
        return (yield context.call_activity_with_retry("flaky", options, job))
    except Exception as error:  # the last attempt's failure reaches the orchestrator
        return f"gave up: {error}"


@app.activity_trigger(input_name="job")
def flaky(job: dict) -> str:
    marker = Path(os.environ["DURABLE_TEST_STATE"]) / f"attempts-{job['key']}"
    attempt = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(attempt))
    if attempt <= job["failures"]:
        raise ValueError(f"attempt {attempt} failed")
    return f"succeeded on attempt {attempt}"


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    children = [context.call_sub_orchestrator("chain", [city]) for city in context.get_input()]
    results = yield context.task_all(children)
    named = yield context.call_sub_orchestrator("chain", ["Oslo"], f"{context.instance_id}-named")
    return [r[0] for r in results] + named


@app.orchestration_trigger(context_name="context")
def looping(context: df.DurableOrchestrationContext):
    state = context.get_input()
    if state["n"] >= state["until"]:
        return state
    square_value = yield context.call_activity("square", state["n"])
    context.continue_as_new({"n": state["n"] + 1, "until": state["until"], "sum": state["sum"] + square_value})


@app.orchestration_trigger(context_name="context")
def failing(context: df.DurableOrchestrationContext):
    yield context.call_activity("hello", "first")
    raise RuntimeError("the orchestrator gave up")


@app.orchestration_trigger(context_name="context")
def waiter(context: df.DurableOrchestrationContext):
    context.set_custom_status({"stage": "waiting"})
    value = yield context.wait_for_external_event("go")
    return value


@app.entity_trigger(context_name="context")
def counter(context: df.DurableEntityContext):
    value = context.get_state(lambda: 0)
    operation = context.operation_name
    if operation == "add":
        value += context.get_input()
    elif operation == "get":
        context.set_result(value)
    elif operation == "fail":
        raise ValueError("counter refuses")
    context.set_state(value)


@app.orchestration_trigger(context_name="context")
def entity_user(context: df.DurableOrchestrationContext):
    entity = df.EntityId("counter", context.get_input())
    context.signal_entity(entity, "add", 5)
    yield context.call_entity(entity, "add", 10)
    value = yield context.call_entity(entity, "get")
    try:
        yield context.call_entity(entity, "fail")
        failed = False
    except Exception:
        failed = True
    return {"value": value, "failureSeen": failed}


@app.orchestration_trigger(context_name="context")
def fragile(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("flaky", {"key": context.instance_id, "failures": 1}))


@app.orchestration_trigger(context_name="context")
def http_caller(context: df.DurableOrchestrationContext):
    response = yield context.call_http("GET", context.get_input())
    return {"status": response["statusCode"], "content": response["content"]}


@app.orchestration_trigger(context_name="context")
def approval_then_pause(context: df.DurableOrchestrationContext):
    now = context.current_utc_datetime
    timeout = context.create_timer(now + timedelta(seconds=3))
    event = context.wait_for_external_event("Approval")
    winner = yield context.task_any([event, timeout])
    if winner == event:
        timeout.cancel()
    # The cancelled timeout falls due during this pause; it must not fire into the history.
    yield context.create_timer(now + timedelta(seconds=4))
    return "approved" if winner == event else "timed out"


def _wait_for_gate(name: str) -> None:
    """Block until the test opens a gate (a file), at most a minute: a test device only, since real
    orchestrator code never blocks."""
    gate = Path(os.environ["DURABLE_TEST_STATE"]) / f"gate-{name}"
    deadline = time.monotonic() + 60
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


@app.orchestration_trigger(context_name="context")
def held(context: df.DurableOrchestrationContext):
    if not context.is_replaying:
        _wait_for_gate("orchestrators")
    return (yield context.call_activity("gated", context.get_input()))


@app.activity_trigger(input_name="value")
def gated(value: int) -> int:
    _wait_for_gate("activities")
    return value


@app.orchestration_trigger(context_name="context")
def long_wait(context: df.DurableOrchestrationContext):
    # Longer than the longest single timer the host advertises (6 days): with replay schema V3 the
    # SDK waits in a chain of 3-day timers.
    yield context.create_timer(context.current_utc_datetime + timedelta(days=7))
    return "woke"
