"""host.json extensions.http limits of the front door: defaults and errors that name the field."""

from __future__ import annotations

import re

import pytest

from funcplane_host.app.front_door import FrontDoorOptions, HttpOptionsError


def test_front_door_options_default_to_azure_limits_and_name_bad_fields() -> None:
    options = FrontDoorOptions.from_host_json({"version": "2.0"})
    assert (options.max_body_size, options.body_memory) == (100 * 1024 * 1024, 100 * 1024 * 1024)
    assert (options.headers_timeout, options.body_timeout, options.drain_grace) == (30.0, 230.0, 10.0)
    tuned = FrontDoorOptions.from_host_json({"extensions": {"http": {
        "maxRequestBodySize": 1000, "maxRequestBodyMemory": 5000, "requestBodyTimeout": "00:00:02",
        "drainGracePeriod": "00:00:00", "routePrefix": "v1"}}})
    assert (tuned.max_body_size, tuned.body_memory, tuned.body_timeout, tuned.drain_grace) == (1000, 5000, 2.0, 0.0)
    for section, message in [
        ({"maxRequestBodySize": "10"}, "extensions.http.maxRequestBodySize: Input should be a valid integer"),
        ({"maxRequestBodySize": 0}, "extensions.http.maxRequestBodySize: Input should be greater than or equal to 1"),
        ({"requestHeadersTimeout": "99"}, "extensions.http.requestHeadersTimeout: '99' is not a time span"),
        ({"requestBodyTimeout": "00:00:00"}, "extensions.http.requestBodyTimeout: '00:00:00' must be longer than zero"),
        ({"maxRequestBodySize": 10, "maxRequestBodyMemory": 5}, "maxRequestBodyMemory (5) must be at least"),
    ]:
        with pytest.raises(HttpOptionsError, match=re.escape(message)):
            FrontDoorOptions.from_host_json({"extensions": {"http": section}})
