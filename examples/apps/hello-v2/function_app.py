"""A small v2 (decorator) Python app: greeting, a route parameter, and a function that logs."""

import json
import logging

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="hello", methods=["GET", "POST"])
def hello(req: func.HttpRequest) -> func.HttpResponse:
    name = req.params.get("name")
    if not name and req.get_body():
        try:
            name = req.get_json().get("name")
        except ValueError:
            return func.HttpResponse("body must be JSON like {\"name\": \"...\"}", status_code=400)
    return func.HttpResponse(f"Hello, {name or 'world'}!")


@app.route(route="items/{item_id}", methods=["GET"])
async def get_item(req: func.HttpRequest) -> func.HttpResponse:
    item_id = req.route_params["item_id"]
    body = {"id": item_id, "name": f"item {item_id}"}
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@app.route(route="echo", methods=["POST"])
def echo(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    body = req.get_body()
    logging.info("echo received %d bytes", len(body))
    return func.HttpResponse(
        body,
        mimetype=req.headers.get("content-type", "application/octet-stream"),
        headers={"X-Invocation-Id": context.invocation_id},
    )


@app.route(route="stats", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def stats(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"status": "ok"}), mimetype="application/json")
