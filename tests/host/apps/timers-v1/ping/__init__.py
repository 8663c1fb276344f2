"""An HTTP function beside the timers: it must keep serving whatever the timers do."""

import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("pong")
