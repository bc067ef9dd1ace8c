"""Request bodies within bounds: an upload past ``UPLOAD_MAX_BYTES`` is refused while it
streams in, an anonymous one is refused before its body is read, and uploads are
rate-limited per person.

Three layers, outermost first:

- the web server (``jobtracker/serve.py``, daphne) refuses a body over
  :func:`body_limit` with 413 as soon as its ``Content-Length`` or the bytes
  received so far say so, and a multipart body with no credentials at all, before
  buffering it (plain daphne would buffer the whole body to a temporary file);
- :class:`UploadGuardMiddleware` runs before anything reads the body (CSRF's
  check reads ``request.POST``): it refuses an anonymous multipart request, the
  rate limits, and then parses the body itself, through
- :class:`LimitedUploadHandler` (first in ``FILE_UPLOAD_HANDLERS``), which stops
  the parse once a file passes ``UPLOAD_MAX_BYTES``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import render
from django.urls import Resolver404, resolve
from django.utils.http import url_has_allowed_host_and_scheme

from processing import rate_limits, tokens
from processing.api.base import error_response

# Room in a multipart body for its boundaries, headers and small fields.
MULTIPART_OVERHEAD = 64 * 1024
API_PREFIX = "/api/"
# The views that accept an upload (url names): they count against the rate limits.
UPLOAD_VIEWS = {"matter-upload", "api:upload_document"}
# The only view that takes a form from someone not signed in (its fields are small).
ANONYMOUS_VIEWS = {"login"}


def body_limit() -> int:
    """The largest request body accepted: an upload of ``UPLOAD_MAX_BYTES`` and its framing."""
    return int(settings.UPLOAD_MAX_BYTES) + MULTIPART_OVERHEAD


def too_large_message() -> str:
    """The sentence a person reads when their file is over the limit."""
    return f"This file is larger than the {settings.UPLOAD_MAX_BYTES / (1024 * 1024):g} MB limit."


class UploadTooLarge(Exception):
    """The body being parsed passed the limit; nothing of it is kept.

    ``size``: the bytes of the file read when it was stopped (it is at least
    that large), or None when the body's declared length was enough to refuse it.
    """

    def __init__(self, size: int | None = None) -> None:
        self.size = size
        super().__init__("upload over the limit")


class LimitedUploadHandler(FileUploadHandler):
    """Stops a multipart parse once a file passes ``UPLOAD_MAX_BYTES`` (it counts every chunk).

    It stores nothing: each chunk goes on to the next handler (memory or a
    temporary file), which Django's parser drops when this one raises.
    """

    def handle_raw_input(
        self,
        input_data: Any,
        META: dict[str, Any],
        content_length: int,
        boundary: str,
        encoding: str | None = None,
    ) -> None:
        """Refuse at once a body that says it is longer than :func:`body_limit`."""
        self.received = 0
        if content_length > body_limit():
            raise UploadTooLarge()

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        """A file begins: its count starts at zero."""
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        """Count the chunk and pass it on; past the limit, stop the parse."""
        self.received += len(raw_data)
        if self.received > settings.UPLOAD_MAX_BYTES:
            raise UploadTooLarge(self.received)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        """The next handler makes the file."""
        return None


def refused(
    request: HttpRequest, status: int, code: str, message: str, **details: Any
) -> HttpResponse:
    """The refusal as the caller reads it: the API's error envelope, or a plain page."""
    response: HttpResponse
    if request.path.startswith(API_PREFIX):
        response = error_response(status, code, message, details)
    else:
        response = render(
            request,
            "processing/refused.html",
            {"message": message, "code": code, "back": _back(request)},
            status=status,
        )
    return response


def _back(request: HttpRequest) -> str:
    """Where the page came from, when that is this site; else the start page."""
    referer = request.META.get("HTTP_REFERER", "")
    allowed = url_has_allowed_host_and_scheme(referer, {request.get_host()})
    return referer if referer and allowed else "/"


def _person(request: HttpRequest) -> Any | None:
    """Who sends the request: the signed-in user, else the owner of a valid bearer token."""
    if request.user.is_authenticated:
        return request.user
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() == "bearer":
        return tokens.user_for_token(raw.strip())
    return None


def _view_name(request: HttpRequest) -> str:
    try:
        return str(resolve(request.path_info).view_name)
    except Resolver404:
        return ""


def anonymous_allowed(path: str) -> bool:
    """Whether a form may be posted to ``path`` without signing in (the sign-in form)."""
    try:
        return str(resolve(path).view_name) in ANONYMOUS_VIEWS
    except Resolver404:
        return False


def charge_upload(person: Any, size: int) -> None:
    """Count one upload of ``size`` bytes against the person's limits, or RateLimited."""
    count = rate_limits.Limit("uploads", settings.UPLOADS_PER_MINUTE, 60)
    volume = rate_limits.Limit("upload-bytes", settings.UPLOAD_BYTES_PER_HOUR, 3600)
    key = str(person.pk)
    rate_limits.charge(
        count,
        key,
        message=f"You uploaded more than {count.amount} files in a minute.",
    )
    gigabytes = volume.amount / 1024**3
    rate_limits.charge(
        volume,
        key,
        size,
        message=f"You uploaded more than {gigabytes:g} GB in an hour.",
    )


class UploadGuardMiddleware:
    """Bounds every multipart request before anything reads its body (see the module)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST":
            refusal = self._refusal(request)
            if refusal is not None:
                return refusal
        return self.get_response(request)

    def _refusal(self, request: HttpRequest) -> HttpResponse | None:
        """A multipart body, or any post to an upload view ("Upload anyway" sends no file)."""
        multipart = request.content_type == "multipart/form-data"
        upload_view = _view_name(request) in UPLOAD_VIEWS
        if not (multipart or upload_view):
            return None
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > body_limit():
            return self._too_large(request, content_length=length)
        person = _person(request)
        if person is None and not anonymous_allowed(request.path_info):
            if request.path.startswith(API_PREFIX):
                return error_response(
                    401,
                    "AUTHENTICATION_REQUIRED",
                    "Sign in, or send an API token as 'Authorization: Bearer …'.",
                )
            return redirect_to_login(request.get_full_path())
        if person is not None and upload_view:
            try:
                charge_upload(person, length)
            except rate_limits.RateLimited as exc:
                response: HttpResponse = refused(
                    request,
                    429,
                    "RATE_LIMITED",
                    f"{exc.message} Try again in {rate_limits.in_words(exc.retry_after)}.",
                    retry_after=exc.retry_after,
                    limit=exc.limit.amount,
                    per_seconds=exc.limit.seconds,
                )
                response["Retry-After"] = str(exc.retry_after)
                return response
        if not multipart:
            return None
        try:
            request.POST  # noqa: B018  parsed here, through LimitedUploadHandler
        except UploadTooLarge as exc:
            if exc.size is None:
                return self._too_large(request, content_length=length)
            return self._too_large(request, size=exc.size)
        except MultiPartParserError:  # no boundary, a broken part: Django's bare 400 page
            return refused(
                request, 400, "VALIDATION_ERROR", "The form data is not valid multipart."
            )
        return None

    def _too_large(self, request: HttpRequest, **details: int) -> HttpResponse:
        response: HttpResponse = refused(
            request,
            413,
            "FILE_TOO_LARGE",
            too_large_message(),
            max_bytes=settings.UPLOAD_MAX_BYTES,
            **details,
        )
        response["Connection"] = "close"
        return response
