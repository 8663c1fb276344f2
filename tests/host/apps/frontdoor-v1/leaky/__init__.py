"""Fails with a secret in its exception text (which must not reach the caller)."""

import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("db password=hunter2")
