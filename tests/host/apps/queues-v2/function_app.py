"""A v2 (decorator) app: a queue trigger with a named queue output, and an HTTP function that
enqueues through its own queue output binding."""

import json

import azure.functions as func

app = func.FunctionApp()


@app.queue_trigger(arg_name="msg", queue_name="v2-in", connection="StorageConnection")
@app.queue_output(arg_name="out", queue_name="v2-out", connection="StorageConnection")
def relay(msg: func.QueueMessage, out: func.Out[str]) -> None:
    body = msg.get_body().decode()
    out.set(json.dumps({"relayed": body, "dequeueCount": msg.dequeue_count, "id": msg.id}))


@app.route(route="enqueue", auth_level=func.AuthLevel.ANONYMOUS)
@app.queue_output(arg_name="out", queue_name="v2-in", connection="StorageConnection")
def enqueue(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    out.set(req.get_body().decode())
    return func.HttpResponse("queued", status_code=202)
