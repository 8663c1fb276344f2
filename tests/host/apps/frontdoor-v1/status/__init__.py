"""Answers with the status code given as ?code=."""

import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("status", status_code=int(req.params["code"]))
