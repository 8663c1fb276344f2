"""Pure conversions of the Python worker: RpcHttp <-> HttpRequest/HttpResponse and TypedData."""

from __future__ import annotations

import json

import azure.functions as func
import pytest

from funcplane_protocol import FunctionRpc_pb2 as pb
from funcplane_pyworker import typed_data
from funcplane_pyworker.bindings import BindingSpec, datum_from, make_decoder, make_encoder, typed_from_datum
from funcplane_pyworker.http_messages import request_from_rpc, rpc_from_response

IN = pb.BindingInfo.Direction.Value("in")
OUT = pb.BindingInfo.out


def rpc_http(**fields) -> pb.RpcHttp:
    return pb.RpcHttp(**fields)


class TestRequestFromRpc:
    def test_carries_method_url_headers_query_route_params_and_body(self) -> None:
        http = rpc_http(
            method="post",
            url="https://app.example/api/items/7?verbose=1",
            headers={"Content-Type": "application/json", "X-Trace": "t-1"},
            query={"verbose": "1"},
            params={"id": "7"},
        )
        http.body.bytes = b'{"name": "seven"}'
        request = request_from_rpc(http)
        assert request.method == "POST"
        assert request.url == "https://app.example/api/items/7?verbose=1"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["X-TRACE"] == "t-1"
        assert request.params == {"verbose": "1"}
        assert request.route_params == {"id": "7"}
        assert request.get_json() == {"name": "seven"}

    @pytest.mark.parametrize(
        "body, expected",
        [
            (pb.TypedData(bytes=b"\x00\xffraw"), b"\x00\xffraw"),
            (pb.TypedData(string="héllo"), "héllo".encode()),
            (pb.TypedData(json='{"a": 1}'), b'{"a": 1}'),
            (pb.TypedData(), b""),
        ],
    )
    def test_body_in_any_typed_data_field_becomes_bytes(self, body: pb.TypedData, expected: bytes) -> None:
        http = rpc_http(method="PUT", url="http://x/")
        http.body.CopyFrom(body)
        assert request_from_rpc(http).get_body() == expected

    def test_raw_body_is_used_when_body_is_absent(self) -> None:
        http = rpc_http(method="POST", url="http://x/")
        http.rawBody.bytes = b"raw only"
        assert request_from_rpc(http).get_body() == b"raw only"

    def test_nullable_maps_are_merged(self) -> None:
        http = rpc_http(method="GET", url="http://x/")
        http.nullable_headers["X-Empty"].SetInParent()
        http.nullable_headers["X-Set"].value = "yes"
        http.nullable_query["q"].value = "search"
        http.nullable_params["id"].value = "9"
        request = request_from_rpc(http)
        assert request.headers["x-empty"] == ""
        assert request.headers["x-set"] == "yes"
        assert request.params["q"] == "search"
        assert request.route_params["id"] == "9"


class TestRpcFromResponse:
    def test_status_headers_and_body(self) -> None:
        response = func.HttpResponse(
            '{"ok": true}', status_code=201, headers={"X-Id": "1"}, mimetype="application/json"
        )
        http = rpc_from_response(response)
        assert http.status_code == "201"
        assert http.headers["X-Id"] == "1"
        assert http.headers["Content-Type"] == "application/json; charset=utf-8"
        assert http.body.bytes == b'{"ok": true}'

    def test_explicit_content_type_wins(self) -> None:
        http = rpc_from_response(func.HttpResponse(b"<p/>", headers={"content-type": "text/html"}))
        assert http.headers == {"content-type": "text/html"}

    def test_str_and_bytes_are_200_responses(self) -> None:
        assert rpc_from_response("hi").status_code == "200"
        assert rpc_from_response("hi").body.bytes == b"hi"
        assert rpc_from_response(b"\x01").body.bytes == b"\x01"

    def test_set_cookie_headers_become_cookies(self) -> None:
        response = func.HttpResponse("x")
        response.headers.add(
            "Set-Cookie", "session=abc; Path=/; HttpOnly; Secure; Max-Age=60; SameSite=Strict"
        )
        response.headers.add("Set-Cookie", "theme=dark")
        http = rpc_from_response(response)
        assert "Set-Cookie" not in http.headers
        session, theme = http.cookies
        assert (session.name, session.value, session.path.value) == ("session", "abc", "/")
        assert session.http_only.value and session.secure.value
        assert session.max_age.value == 60.0
        assert session.same_site == pb.RpcHttpCookie.Strict
        assert (theme.name, theme.value) == ("theme", "dark")
        assert not theme.HasField("path")

    def test_repeated_headers_are_joined(self) -> None:
        response = func.HttpResponse("x")
        response.headers.add("Vary", "Accept")
        response.headers.add("Vary", "Origin")
        assert rpc_from_response(response).headers["Vary"] == "Accept, Origin"

    def test_other_values_are_rejected_naming_the_binding(self) -> None:
        with pytest.raises(TypeError, match=r"'res'.*HttpResponse.*dict"):
            rpc_from_response({"a": 1}, binding_name="res")


class TestTypedData:
    @pytest.mark.parametrize(
        "data, expected",
        [
            (pb.TypedData(string="s"), "s"),
            (pb.TypedData(json='{"k": [1, 2]}'), {"k": [1, 2]}),
            (pb.TypedData(bytes=b"b"), b"b"),
            (pb.TypedData(stream=b"st"), b"st"),
            (pb.TypedData(int=-5), -5),
            (pb.TypedData(double=2.5), 2.5),
            (pb.TypedData(collection_string=pb.CollectionString(string=["a", "b"])), ["a", "b"]),
            (pb.TypedData(collection_bytes=pb.CollectionBytes(bytes=[b"a"])), [b"a"]),
            (pb.TypedData(collection_double=pb.CollectionDouble(double=[1.5])), [1.5]),
            (pb.TypedData(collection_sint64=pb.CollectionSInt64(sint64=[-1, 2])), [-1, 2]),
            (pb.TypedData(), None),
        ],
    )
    def test_decode_keeps_the_senders_shape(self, data: pb.TypedData, expected: object) -> None:
        assert typed_data.decode(data) == expected

    def test_decode_follows_str_and_bytes_annotations(self) -> None:
        assert typed_data.decode(pb.TypedData(json='{"a": 1}'), str) == '{"a": 1}'
        assert typed_data.decode(pb.TypedData(bytes="é".encode()), str) == "é"
        assert typed_data.decode(pb.TypedData(string="é"), bytes) == "é".encode()

    def test_decode_http_gives_an_http_request(self) -> None:
        request = typed_data.decode(pb.TypedData(http=rpc_http(method="GET", url="http://x/")))
        assert isinstance(request, func.HttpRequest) and request.method == "GET"

    @pytest.mark.parametrize(
        "value, field, wire",
        [
            ("text", "string", "text"),
            (b"\x00", "bytes", b"\x00"),
            (7, "int", 7),
            (0.25, "double", 0.25),
            (True, "json", "true"),
            ({"a": [1]}, "json", '{"a": [1]}'),
            ([1, "x"], "json", '[1, "x"]'),
        ],
    )
    def test_encode_picks_the_specific_field(self, value: object, field: str, wire: object) -> None:
        data = typed_data.encode(value)
        assert data.WhichOneof("data") == field
        assert getattr(data, field) == wire

    def test_encode_none_is_empty_and_unknown_types_are_rejected(self) -> None:
        assert typed_data.encode(None).WhichOneof("data") is None
        with pytest.raises(TypeError, match="object"):
            typed_data.encode(object())


class TestLibraryConverters:
    def test_queue_trigger_decodes_to_a_queue_message_with_metadata(self) -> None:
        decode = make_decoder(BindingSpec("msg", "queueTrigger", IN), func.QueueMessage)
        message = decode(pb.TypedData(string="payload"), {"Id": pb.TypedData(json=json.dumps("m-1"))})
        assert isinstance(message, func.QueueMessage)
        assert message.get_body() == b"payload"
        assert message.id == "m-1"

    def test_plain_annotation_skips_the_library_object(self) -> None:
        decode = make_decoder(BindingSpec("msg", "queueTrigger", IN), str)
        assert decode(pb.TypedData(string="payload"), {}) == "payload"

    def test_queue_output_encodes_strings(self) -> None:
        encode = make_encoder(BindingSpec("out", "queue", OUT), str)
        assert encode("x").string == "x"

    def test_unknown_binding_types_fall_back_to_typed_data(self) -> None:
        decode = make_decoder(BindingSpec("v", "customBinding", IN), None)
        assert decode(pb.TypedData(json="[1]"), {}) == [1]
        assert make_encoder(BindingSpec("v", "customBinding", OUT), None)({"a": 1}).json == '{"a": 1}'

    def test_http_output_binding_encodes_responses(self) -> None:
        encode = make_encoder(BindingSpec("$return", "http", OUT), func.HttpResponse)
        assert encode(func.HttpResponse("ok", status_code=202)).http.status_code == "202"

    @pytest.mark.parametrize(
        "data",
        [
            pb.TypedData(string="s"),
            pb.TypedData(json="{}"),
            pb.TypedData(bytes=b"b"),
            pb.TypedData(int=3),
            pb.TypedData(double=1.5),
            pb.TypedData(collection_string=pb.CollectionString(string=["a"])),
            pb.TypedData(collection_sint64=pb.CollectionSInt64(sint64=[4])),
        ],
    )
    def test_datum_round_trip(self, data: pb.TypedData) -> None:
        datum = datum_from(data)
        if datum.type.startswith("collection_"):
            datum.value = datum.python_value  # encoders hand back plain lists
        assert typed_from_datum(datum) == data
