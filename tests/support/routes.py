"""The app's routes as (method, path) pairs, and the ones that carry no operator data: what the
scope and audit tests walk."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

# Routes that carry no operator data: the schema and its pages, the console's static shell,
# health, aggregate metrics (counts, no names or places), the login itself, and Twilio's
# webhooks, SMS and calls (signed by Twilio, not by an operator: tests/dispatcher/test_dispatch_flow.py,
# test_voice.py).
NOT_OPERATOR_DATA = {
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/"),
    ("GET", "/console"),
    ("GET", "/console/static"),
    ("GET", "/favicon.ico"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("POST", "/api/auth/token"),
    ("POST", "/twilio/status"),
    ("POST", "/twilio/inbound"),
    ("POST", "/twilio/call/status"),
    ("POST", "/twilio/call/gather"),
    # Aliyun's pushes (the push token in the path, not an operator: tests/dispatcher/test_aliyun*.py).
    ("POST", "/aliyun/sms/report/{token}"),
    ("POST", "/aliyun/sms/up/{token}"),
    ("POST", "/aliyun/voice/report/{token}"),
}


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for route in iter_route_contexts(app.routes):
        path = route.path
        assert path is not None
        for method in route.methods or {"GET"}:  # a Mount (static files) answers GET
            if method != "HEAD":
                out.add((method, path))
    return out
