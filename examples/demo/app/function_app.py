"""The demo app: answers with its release and the slot settings it runs with.

`funcplane demo` deploys it twice: release 1.0 to production and 2.0 to the staging slot
(`release.txt` is the only difference between the two ConfigMaps).
"""

import json
import os
from pathlib import Path

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

RELEASE_FILE = Path(__file__).with_name("release.txt")
RELEASE = RELEASE_FILE.read_text().strip() if RELEASE_FILE.exists() else "dev"


@app.route(route="hello", methods=["GET"])
def hello(req: func.HttpRequest) -> func.HttpResponse:
    body = {
        "release": RELEASE,
        "greeting": os.environ.get("GREETING", ""),
        "environment": os.environ.get("ENVIRONMENT", ""),
        "name": req.params.get("name", "world"),
    }
    return func.HttpResponse(json.dumps(body), mimetype="application/json")
