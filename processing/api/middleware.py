"""Keep every answer under /api/ in the contract's error envelope."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

API_PREFIX = "/api/"
FALLBACK_CODES = {
    404: ("NOT_FOUND", "There is no such API endpoint."),
    405: ("METHOD_NOT_ALLOWED", "This endpoint does not accept that HTTP method."),
}


class ApiErrorEnvelopeMiddleware:
    """Turn the framework's HTML 404/405 for unknown API routes or methods into JSON."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            request.path.startswith(API_PREFIX)
            and response.status_code in FALLBACK_CODES
            and "json" not in response.get("Content-Type", "")
        ):
            code, message = FALLBACK_CODES[response.status_code]
            details: dict[str, object] = {"path": request.path, "method": request.method}
            if response.status_code == 405 and response.has_header("Allow"):
                details["allowed"] = [m.strip() for m in response["Allow"].split(",")]
            replacement = JsonResponse(
                {"error": {"code": code, "message": message, "details": details}},
                status=response.status_code,
            )
            if response.has_header("Allow"):
                replacement["Allow"] = response["Allow"]
            return replacement
        return response
