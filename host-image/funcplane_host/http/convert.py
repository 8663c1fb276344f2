"""aiohttp request -> RpcHttp for the worker; the worker's output -> aiohttp response."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from funcplane_protocol import FunctionRpc_pb2 as rpc
from funcplane_protocol.typed_data import HttpShape, body_bytes

_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection"})
_JSON_TYPES = ("application/json", "text/json")


def _joined(items: Any) -> dict[str, str]:
    merged: dict[str, str] = {}
    for key, value in items:
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    return merged


def build_rpc_http(request: web.Request, body: bytes, route_params: dict[str, str], shape: HttpShape,
                   http: Any) -> None:
    """Fill `http` (an RpcHttp inside the message being sent, so the body is copied only once)."""
    headers = _joined(request.headers.items())
    if shape.ignore_empty_headers:
        headers = {k: v for k, v in headers.items() if v}
    query = _joined(request.query.items())
    http.method = request.method
    http.url = str(request.url)
    if shape.nullable_maps:
        for key, value in headers.items():
            http.nullable_headers[key].value = value
        for key, value in query.items():
            http.nullable_query[key].value = value
        for key, value in route_params.items():
            http.nullable_params[key].value = value
    else:
        http.headers.update(headers)
        http.query.update(query)
        http.params.update(route_params)
    if shape.body_only:
        if shape.raw_body_bytes:
            http.body.bytes = body
        else:
            http.body.string = body.decode("utf-8", "replace")
        return
    content_type = request.content_type
    if not body:
        http.body.string = ""
    elif content_type in _JSON_TYPES:
        http.body.json = body.decode("utf-8", "replace")
    elif content_type.startswith("text/") or content_type in ("application/x-www-form-urlencoded", "application/xml"):
        http.body.string = body.decode("utf-8", "replace")
    else:
        http.body.bytes = body
    if shape.raw_body_bytes:
        http.rawBody.bytes = body
    else:
        http.rawBody.string = body.decode("utf-8", "replace")


def _cookie_header(cookie: Any) -> str:
    parts = [f"{cookie.name}={cookie.value}"]
    if cookie.HasField("domain"):
        parts.append(f"Domain={cookie.domain.value}")
    if cookie.HasField("path"):
        parts.append(f"Path={cookie.path.value}")
    if cookie.HasField("max_age"):
        parts.append(f"Max-Age={int(cookie.max_age.value)}")
    if cookie.HasField("secure") and cookie.secure.value:
        parts.append("Secure")
    if cookie.HasField("http_only") and cookie.http_only.value:
        parts.append("HttpOnly")
    same_site = rpc.RpcHttpCookie.SameSite.Name(cookie.same_site)
    if same_site in ("Lax", "Strict"):
        parts.append(f"SameSite={same_site}")
    elif same_site == "ExplicitNone":
        parts.append("SameSite=None")
    return "; ".join(parts)


def response_from_output(typed: Any | None) -> web.Response:
    """Turn the function's HTTP output (TypedData) into a response."""
    if typed is None or typed.WhichOneof("data") is None:
        return web.Response(status=204)
    if typed.WhichOneof("data") != "http":
        payload, content_type = body_bytes(typed)
        return web.Response(status=200, body=payload, headers={"Content-Type": content_type or "text/plain"})
    http = typed.http
    status = int(http.status_code) if http.status_code else 200
    if not 100 <= status <= 599:
        raise ValueError(f"status code {status} is not an HTTP status (100-599)")
    headers: CIMultiDict[str] = CIMultiDict()
    source = http.headers.items() if http.headers else ((k, v.value) for k, v in http.nullable_headers.items())
    for key, value in source:
        if key.lower() not in _HOP_BY_HOP:
            headers.add(key, value)
    payload, implied_type = body_bytes(http.body) if http.HasField("body") else (b"", None)
    if implied_type and "Content-Type" not in headers and payload:
        headers["Content-Type"] = implied_type
    for cookie in http.cookies:
        headers.add("Set-Cookie", _cookie_header(cookie))
    return web.Response(status=status, body=payload, headers=headers)
