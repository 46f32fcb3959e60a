"""Rate limits per client, counted in Redis, not dodged by a forged header."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from flask import Flask

from tests.api.conftest import client_for, next_client_address
from tests.api.helpers import post_file

RATE_LIMITED = "Превышен лимит запросов. Повторите позже."


def test_the_61st_predict_request_is_429_while_polling_still_works(api_app: Flask) -> None:
    client = client_for(api_app)
    unknown_job = f"/v1/jobs/{uuid.uuid4()}"
    routes = ["/v1/predict-single", "/predict-single", "/v1/predict-batch", "/predict-batch"]

    # Sixty requests across the predict routes, each refused for its content
    # (cheap), each counted; every one with a forged X-Forwarded-For.
    for index in range(60):
        response = post_file(
            client, routes[index % 4], "upload", "x.txt", b"x", "text/plain",
            headers={"X-Forwarded-For": f"203.0.113.{index}"},
        )  # fmt: skip
        assert response.status_code != 429, index
    assert response.headers["X-RateLimit-Limit"] == "60"
    assert response.headers["X-RateLimit-Remaining"] == "0"

    limited = client.post(
        "/v1/jobs", data=b"PK", content_type="application/zip",
        headers={"X-Forwarded-For": "198.51.100.7"},
    )  # fmt: skip
    legacy = client.post("/predict-single", data=b"x", content_type="image/jpeg")
    polling = client.get(unknown_job)
    other_client = client_for(api_app).post(
        "/v1/predict-single", data=b"", content_type="image/jpeg"
    )

    assert limited.status_code == legacy.status_code == 429
    body = limited.get_json()
    assert body["detail"] == RATE_LIMITED
    assert body["code"] == "rate_limited"
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    # Polling has its own budget, and another client its own.
    assert polling.status_code == 404
    assert int(polling.headers["X-RateLimit-Limit"]) == 600
    assert other_client.status_code == 400


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(trusted_proxies=1, rate_limit_predict="2 per 60 seconds")
    proxy = client_for(app)
    first, second = next_client_address(), next_client_address()

    def predict(address: str) -> int:
        return proxy.post(
            "/v1/predict-single", data=b"", content_type="image/jpeg",
            headers={"X-Forwarded-For": address},
        ).status_code  # fmt: skip

    assert [predict(first), predict(first), predict(first)] == [400, 400, 429]
    assert predict(second) == 400
    # A forged hop in front of the real one changes nothing: the proxy's own
    # entry (the rightmost) is the one trusted.
    assert predict(f"192.0.2.1, {first}") == 429


def test_rate_limiting_can_be_turned_off(make_app: Callable[..., Flask]) -> None:
    client = client_for(make_app(rate_limit_enabled=False, rate_limit_predict="1 per 60 seconds"))

    codes = {
        client.post("/v1/predict-single", data=b"", content_type="image/jpeg").status_code
        for _ in range(3)
    }

    assert codes == {400}
