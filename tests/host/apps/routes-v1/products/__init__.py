"""Echoes the int route parameter as JSON."""

import json

import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"id": req.route_params["id"]}), mimetype="application/json")
