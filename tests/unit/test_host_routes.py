"""Route templates of HTTP triggers."""

from __future__ import annotations

import pytest

from funcplane_host.app.routes import RouteTable, RouteTemplateError, compile_route


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("hello", "/hello", {}),
        ("hello", "/HELLO/", {}),
        ("products/{id}", "/products/abc", {"id": "abc"}),
        ("products/{id:int}", "/products/42", {"id": "42"}),
        ("products/{id:int}", "/products/x", None),
        ("files/{name?}", "/files", {}),
        ("files/{name?}", "/files/a.txt", {"name": "a.txt"}),
        ("static/{*rest}", "/static/css/site.css", {"rest": "css/site.css"}),
        ("flags/{on:bool}", "/flags/True", {"on": "True"}),
        ("users/{id:guid}", "/users/3f2504e0-4f89-11d3-9a0c-0305e82c3301", {"id": "3f2504e0-4f89-11d3-9a0c-0305e82c3301"}),
        ("a/{x}/b/{y:alpha}", "/a/1/b/zz", {"x": "1", "y": "zz"}),
        ("a/{x}/b/{y:alpha}", "/a/1/b/2", None),
    ],
)
def test_compile_and_match(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert compile_route(template).match(path) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("a/{id:number}", "unknown constraint 'number'"),
        ("a/{x?}/b", "optional {x?} must be last"),
        ("a/{*rest}/b", "catch-all {*rest} must be last"),
        ("a/{x}/{x}", "parameter 'x' appears twice"),
        ("a/pre{x}", "must be a literal or one parameter"),
    ],
)
def test_bad_templates_name_the_problem(template: str, message: str) -> None:
    with pytest.raises(RouteTemplateError, match=message.replace("{", r"\{").replace("}", r"\}")
                       .replace("?", r"\?").replace("*", r"\*")):
        compile_route(template)


def test_table_prefers_literals_and_reports_wrong_method() -> None:
    table: RouteTable[str] = RouteTable()
    table.add("items/{id}", frozenset({"GET"}), "by-id")
    table.add("items/new", frozenset({"GET"}), "new")
    table.add("items", None, "any")
    assert table.resolve("GET", "/items/new") == ("new", {})
    assert table.resolve("GET", "/items/7") == ("by-id", {"id": "7"})
    assert table.resolve("DELETE", "/items") == ("any", {})
    assert table.resolve("POST", "/items/7") is False
    assert table.resolve("GET", "/nothing") is None
