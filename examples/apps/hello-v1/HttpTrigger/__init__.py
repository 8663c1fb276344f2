"""A v1 (function.json) HTTP function: greets by ?name= or a JSON body {"name": ...}."""

import logging

import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    name = req.params.get("name")
    if not name and req.get_body():
        try:
            name = req.get_json().get("name")
        except ValueError:
            return func.HttpResponse("body must be JSON like {\"name\": \"...\"}", status_code=400)
    logging.info("greeting %s", name or "world")
    return func.HttpResponse(f"Hello, {name or 'world'}!")
