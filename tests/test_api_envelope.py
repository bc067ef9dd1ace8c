"""Unknown API routes and methods still answer in the error envelope, never HTML."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.django_db


def test_unknown_api_route_is_json_404(api_client: Any, alice: Any) -> None:
    response = api_client(alice).get("/api/no-such-thing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


def test_wrong_method_is_json_405_with_allow(api_client: Any, alice: Any) -> None:
    response = api_client(alice).client.put("/api/matters", headers=api_client(alice).headers)
    assert response.status_code == 405
    body = response.json()
    assert body["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert "GET" in response["Allow"] and "POST" in response["Allow"]


def test_html_pages_keep_their_html_404(client: Any, alice: Any) -> None:
    client.force_login(alice)
    response = client.get("/matters/not-a-uuid/")
    assert response.status_code == 404
    assert "json" not in response["Content-Type"]
