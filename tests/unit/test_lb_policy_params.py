"""Load balancer policy parameters (CloudStack's) mapped to the router document's fields
(mgmt.commands.lbpolicies)."""

from __future__ import annotations

import pytest

from mgmt.api.errors import ApiError
from mgmt.commands.lbpolicies import (
    health_fields,
    seconds,
    size,
    stickiness_fields,
    stickiness_params,
)


def refused(fn, *args, **kwargs) -> str:
    with pytest.raises(ApiError) as err:
        fn(*args, **kwargs)
    assert err.value.code == 431
    return err.value.text


def params(**kv) -> list[dict[str, str]]:
    return [{"name": k.replace("_", "-"), "value": v} for k, v in kv.items()]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", 1800),
        ("3h", 10800),
        ("90s", 90),
        ("2d", 172800),
        ("1500", 2),
        ("1ms", 1),
    ],
)
def test_times_take_haproxy_units(text, expected):
    assert seconds("expire", text) == expected


def test_bad_time_and_size_name_the_parameter():
    assert "expire" in refused(seconds, "expire", "soon")
    assert "tablesize" in refused(size, "tablesize", "-1")
    assert size("tablesize", "200k") == 204_800 and size("tablesize", "7") == 7


def test_source_based_stickiness():
    fields = stickiness_fields("SourceBased", params(tablesize="1m", expire="10m"), "tcp")
    assert fields == {"table_size": 1024**2, "expire_s": 600}
    assert stickiness_params("SourceBased", fields) == {"tablesize": "1048576", "expire": "600s"}


def test_cookie_stickiness_needs_http_and_app_cookie_a_name():
    assert "protocol http" in refused(stickiness_fields, "LbCookie", [], "tcp")
    assert stickiness_fields("LbCookie", params(cookie_name="SID"), "http") == {
        "cookie_name": "SID"
    }
    text = refused(stickiness_fields, "AppCookie", params(length="20"), "http")
    assert "cookie_name" in text or "cookie-name" in text
    fields = stickiness_fields(
        "AppCookie", params(cookie_name="JSESSIONID", holdtime="1h", length="32"), "http"
    )
    assert fields == {"cookie_name": "JSESSIONID", "expire_s": 3600, "length": 32}


def test_options_the_router_does_not_offer_are_refused():
    text = refused(stickiness_fields, "LbCookie", params(nocache="true"), "http")
    assert "nocache" in text and "cookie-name" in text
    assert "cookie" in refused(stickiness_fields, "LbCookie", params(cookie_name="a b"), "http")
    assert "value" in refused(stickiness_fields, "SourceBased", [{"name": "expire"}], "tcp")


def test_health_check_fields():
    assert health_fields({"pingpath": "/health", "intervaltime": 10}) == {
        "ping_path": "/health",
        "interval_s": 10,
    }
    assert health_fields({}) == {}  # a TCP connect check with the router's defaults
    assert "pingpath" in refused(health_fields, {"pingpath": "no-slash"})
    assert "healthythreshold" in refused(health_fields, {"healthythreshold": 0})
