"""RpcHttp <-> azure.functions.HttpRequest / HttpResponse."""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from http.cookies import CookieError, SimpleCookie
from typing import Any

import azure.functions as func

from funcplane_pyworker.protocol import pb

_SAME_SITE = {
    "lax": pb.RpcHttpCookie.Lax,
    "strict": pb.RpcHttpCookie.Strict,
    "none": pb.RpcHttpCookie.ExplicitNone,
}


def _merged(plain: Mapping[str, str], nullable: Mapping[str, Any]) -> dict[str, str]:
    """One dict from a plain map and its nullable twin (hosts send either, by capability)."""
    merged = dict(plain)
    for key, holder in nullable.items():
        merged[key] = holder.value if holder.HasField("value") else ""
    return merged


def body_bytes(data: pb.TypedData | None) -> bytes:
    """An HTTP body as bytes, whatever TypedData field carries it."""
    kind = data.WhichOneof("data") if data is not None else None
    if kind is None:
        return b""
    assert data is not None
    value = getattr(data, kind)
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if kind in ("int", "double"):
        return str(value).encode("ascii")
    raise TypeError(f"an HTTP body cannot be carried as TypedData.{kind}")


def request_from_rpc(http: pb.RpcHttp) -> func.HttpRequest:
    """The HttpRequest a function receives for an RpcHttp trigger value."""
    body_source = http.body if http.HasField("body") else http.rawBody
    return func.HttpRequest(
        method=http.method,
        url=http.url,
        headers=_merged(http.headers, http.nullable_headers),
        params=_merged(http.query, http.nullable_query),
        route_params=_merged(http.params, http.nullable_params),
        body=body_bytes(body_source),
    )


def rpc_from_response(value: Any, *, binding_name: str = "$return") -> pb.RpcHttp:
    """The RpcHttp for what a function produced on an HTTP output binding.

    Accepts an HttpResponse, or a str/bytes body that becomes a 200 response.
    """
    if isinstance(value, (str, bytes, bytearray)):
        value = func.HttpResponse(bytes(value) if not isinstance(value, str) else value)
    if not isinstance(value, func.HttpResponse):
        raise TypeError(
            f"HTTP output binding {binding_name!r} expects azure.functions.HttpResponse, str or "
            f"bytes, got {type(value).__name__}"
        )
    rpc = pb.RpcHttp(status_code=str(int(value.status_code)))
    for name, header_value in value.headers.items():
        if name.lower() == "set-cookie":
            rpc.cookies.append(_cookie_from_header(header_value))
        elif name in rpc.headers:
            rpc.headers[name] = f"{rpc.headers[name]}, {header_value}"
        else:
            rpc.headers[name] = header_value
    if not any(name.lower() == "content-type" for name in rpc.headers):
        rpc.headers["Content-Type"] = f"{value.mimetype}; charset={value.charset}"
    rpc.body.bytes = value.get_body()
    return rpc


def _cookie_from_header(header_value: str) -> pb.RpcHttpCookie:
    """An RpcHttpCookie from one Set-Cookie header value."""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header_value)
    except CookieError as error:
        raise ValueError(f"invalid Set-Cookie header {header_value!r}: {error}") from error
    if len(jar) != 1:
        raise ValueError(f"a Set-Cookie header must set exactly one cookie, got {header_value!r}")
    morsel = next(iter(jar.values()))
    cookie = pb.RpcHttpCookie(name=morsel.key, value=morsel.value)
    if morsel["domain"]:
        cookie.domain.value = morsel["domain"]
    if morsel["path"]:
        cookie.path.value = morsel["path"]
    if morsel["secure"]:
        cookie.secure.value = True
    if morsel["httponly"]:
        cookie.http_only.value = True
    if morsel["max-age"]:
        cookie.max_age.value = float(morsel["max-age"])
    if morsel["samesite"]:
        cookie.same_site = _SAME_SITE.get(
            str(morsel["samesite"]).lower(), pb.RpcHttpCookie.SameSite.Value("None")
        )
    if morsel["expires"]:
        cookie.expires.value.FromDatetime(parsedate_to_datetime(morsel["expires"]))
    return cookie
