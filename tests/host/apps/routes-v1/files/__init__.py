"""Optional route parameter."""

import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    name = req.route_params.get("name") or "(none)"
    return func.HttpResponse(f"{req.method} file {name}")
