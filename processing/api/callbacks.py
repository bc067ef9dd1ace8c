"""An external stage's callback (``POST /api/jobs/{job_id}/callback``): an outside service
reports the progress and the outcome of the stage it works on.

No token: the request is signed, and the signature is the credential. ``X-Timestamp``
is the time of signing (unix seconds) and ``X-Signature`` is ``sha256=`` and the hex
HMAC-SHA256, keyed with ``settings.EXTERNAL_CALLBACK_SECRET``, of
``f"{timestamp}.".encode() + raw_body``. The checks, in order, each refusing with its
own code and changing nothing:

1. no secret configured: 401 ``CALLBACKS_NOT_CONFIGURED`` (the caller cannot
   authenticate; a 5xx would say the server is broken, and it is not);
2. a missing or wrong signature: 401 ``INVALID_SIGNATURE``, before anything else about
   the request is looked at, so an unsigned caller learns nothing;
3. a timestamp more than ``CALLBACK_MAX_AGE`` (300 s) from now, either way: 401
   ``REQUEST_EXPIRED``;
4. a body that is not the callback's JSON: 400 ``VALIDATION_ERROR``;
5. a nonce seen before: 409 ``REPLAYED_REQUEST`` (nonces are rows of
   :class:`CallbackNonce`, kept a day);
6. an unknown job: 404 ``JOB_NOT_FOUND``; a job not PROCESSING in that external stage
   (or in another attempt of it than the body's ``attempt``, when given): 409
   ``INVALID_TRANSITION``, ``details`` carrying its status and stage.

The nonce is stored in the same transaction as the transition, so a refused request
leaves no nonce behind and may be sent again once corrected.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from typing import Any, Literal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.http.request import RawPostDataException
from ninja import Router
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from processing.api.base import ApiError, json_response
from processing.api.schemas import JobEnvelope, refusals
from processing.jobs import lifecycle
from processing.models import CallbackNonce, ProcessingJob
from processing.payloads import job_payload

router = Router(tags=["external stages"])
"""Mounted on ``/jobs``."""

COUNT_MAX = 2**31 - 1
"""The largest item count a job row holds."""


class ReportedError(BaseModel):
    """What went wrong, as the outside service says: kept for staff, never shown to users."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field("", max_length=4000)
    permanent: bool = False


class CallbackIn(BaseModel):
    """A report on an external stage."""

    model_config = ConfigDict(extra="forbid")

    nonce: str = Field(min_length=1, max_length=100)
    stage: str = Field(min_length=1, max_length=100)
    event: Literal["progress", "completed", "failed"]
    items_done: int = Field(0, ge=0, le=COUNT_MAX)
    items_total: int = Field(0, ge=0, le=COUNT_MAX)
    error: ReportedError | None = None
    attempt: int | None = Field(
        None,
        ge=1,
        le=COUNT_MAX,
        description="The stage's attempt this report is about (stage_history's attempt): "
        "when given, a report on an earlier attempt is refused.",
    )


def _header(name: str, description: str) -> dict[str, Any]:
    return {
        "in": "header",
        "name": name,
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _body_schema() -> dict[str, Any]:
    """The body's JSON schema, with the nested error inlined (the document has no $defs)."""
    schema = CallbackIn.model_json_schema()
    reported = schema.pop("$defs")["ReportedError"]
    schema["properties"]["error"] = {"anyOf": [reported, {"type": "null"}], "default": None}
    return schema


def signature_of(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Signature`` of ``body`` signed at ``timestamp`` with ``secret``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def _verify(request: HttpRequest) -> bytes:
    """The raw body, once its signature and timestamp are good; ApiError otherwise."""
    secret: str = settings.EXTERNAL_CALLBACK_SECRET
    if not secret:
        raise ApiError(
            401, "CALLBACKS_NOT_CONFIGURED", "This server accepts no callbacks: none are set up."
        )
    try:
        body = request.body
    except RawPostDataException:  # a form body, already parsed: it was never a callback
        body = b""
    timestamp = request.headers.get("X-Timestamp", "")
    signature = request.headers.get("X-Signature", "")
    if not re.fullmatch(r"[0-9]{1,12}", timestamp) or not hmac.compare_digest(
        signature_of(secret, timestamp, body).encode(), signature.encode()
    ):
        raise ApiError(
            401,
            "INVALID_SIGNATURE",
            "The request's signature is missing or wrong: sign 'timestamp.body' with the "
            "shared secret (HMAC-SHA256) and send X-Timestamp and X-Signature: sha256=<hex>.",
        )
    if abs(time.time() - int(timestamp)) > settings.CALLBACK_MAX_AGE:
        raise ApiError(
            401,
            "REQUEST_EXPIRED",
            "The request's timestamp is too far from now: sign it again and send it at once.",
            max_age_seconds=settings.CALLBACK_MAX_AGE,
        )
    return body


def _parsed(body: bytes) -> CallbackIn:
    try:
        return CallbackIn.model_validate(json.loads(body))
    except ValueError as exc:  # JSON that does not parse, or does not fit (ValidationError)
        errors = (
            [
                {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                for e in exc.errors()
            ]
            if isinstance(exc, ValidationError)
            else [{"field": "", "message": "The body is not JSON."}]
        )
        raise ApiError(
            400, "VALIDATION_ERROR", "The request is not valid.", errors=errors
        ) from None


@router.post(
    "/{job_id}/callback",
    auth=None,
    response={200: JobEnvelope, **refusals(400, 401, 404, 409)},
    summary="An outside service reports on its external stage (signed with HMAC-SHA256)",
    openapi_extra={
        "parameters": [
            _header("X-Timestamp", "When the request was signed, in unix seconds."),
            _header("X-Signature", "sha256=<hex HMAC-SHA256 of 'timestamp.' + raw body>"),
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _body_schema()}},
        },
    },
)
def receive_callback(request: HttpRequest, job_id: str) -> HttpResponse:
    body = _parsed(_verify(request))
    try:
        job_uuid = uuid.UUID(job_id)
    except ValueError:
        job_uuid = None
    reported = body.error or ReportedError(message="", permanent=False)
    with transaction.atomic():
        try:
            with transaction.atomic():
                CallbackNonce.objects.create(nonce=body.nonce)
        except IntegrityError:
            raise ApiError(
                409,
                "REPLAYED_REQUEST",
                "This request was received before (its nonce is used): nothing was changed.",
            ) from None
        try:
            if job_uuid is None:
                raise ProcessingJob.DoesNotExist
            lifecycle.report_external(
                job_uuid,
                stage=body.stage,
                event=body.event,
                done=body.items_done,
                total=body.items_total,
                message=reported.message,
                permanent=reported.permanent,
                attempt=body.attempt,
            )
        except ProcessingJob.DoesNotExist:
            raise ApiError(404, "JOB_NOT_FOUND", "No job with this id.") from None
        except lifecycle.NotAwaitingCallback as exc:
            raise ApiError(
                409,
                "INVALID_TRANSITION",
                str(exc),
                current_status=exc.current,
                current_stage=exc.stage,
                requested=exc.target,
            ) from None
    job = ProcessingJob.objects.select_related("document").get(pk=job_uuid)
    return json_response({"data": job_payload(job)})
