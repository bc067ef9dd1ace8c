"""The web server: daphne, with request bodies bounded while they stream in.

``python -m jobtracker.serve [daphne's arguments]`` is daphne's own command line
with one change. Daphne (through Twisted) receives a request's whole body into a
temporary file before the application sees the request, so no check in Django
can stop a 200 MB upload from being read and written to disk first. Here the
request refuses, as soon as its ``Content-Length`` or the bytes received so far
pass :func:`processing.upload_limits.body_limit`, with 413 ``FILE_TOO_LARGE``, as
well as a multipart body sent with no credentials at all (no session cookie, no
``Authorization`` header: 401 for the API, the login page otherwise); it then
stops reading and closes the connection. Django checks everything again
(:mod:`processing.upload_limits`), also under any other server.
"""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import quote

from daphne import http_protocol
from daphne.cli import CommandLineInterface

# Seconds the refused connection stays open, not read, so that the client reads
# the answer before the connection is reset under what it is still sending.
LINGER_SECONDS = 2.0


def _answer(path: str, status: str, code: str, message: str) -> bytes:
    """A complete HTTP response: the API's error envelope, or a short page."""
    headers = [f"HTTP/1.1 {status}", "Connection: close"]
    if code == "AUTHENTICATION_REQUIRED" and not path.startswith("/api/"):
        headers += [f"Location: /login/?next={quote(path)}", "Content-Length: 0"]
        return ("\r\n".join(headers) + "\r\n\r\n").encode()
    if path.startswith("/api/"):
        body = json.dumps({"error": {"code": code, "message": message, "details": {}}}).encode()
        headers.append("Content-Type: application/json")
    else:
        body = (
            f"<!doctype html><title>Not accepted</title><h1>Not accepted</h1>"
            f'<p id="refusal">{message} ({code})</p>'
        ).encode()
        headers.append("Content-Type: text/html; charset=utf-8")
    headers.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


class BoundedWebRequest(http_protocol.WebRequest):  # type: ignore[misc]
    """daphne's request, refusing an over-long or anonymous upload before buffering it."""

    refused = False
    received = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Twisted would parse a form body itself, in memory, before daphne hands it to
        # Django (which parses it again, bounded), and answer one it cannot parse with a
        # bare 400 with no headers; Django alone parses it, and says why it refuses.
        self._parsePOSTFormSubmission = False

    def gotLength(self, length: int | None) -> None:
        """The headers are in: refuse now what they already show to be refused."""
        from django.conf import settings

        from processing.upload_limits import anonymous_allowed, body_limit, too_large_message

        super().gotLength(length)
        path = self._path()
        if length is not None and length > body_limit():
            self._refuse(path, "413 Payload Too Large", "FILE_TOO_LARGE", too_large_message())
            return
        content_type = (self.requestHeaders.getRawHeaders(b"content-type") or [b""])[0]
        anonymous = not self.requestHeaders.hasHeader(b"authorization") and not (
            self.received_cookies.get(settings.SESSION_COOKIE_NAME.encode())
        )
        multipart = content_type.lower().startswith(b"multipart/")
        if multipart and anonymous and not anonymous_allowed(path):
            self._refuse(
                path,
                "401 Unauthorized" if path.startswith("/api/") else "302 Found",
                "AUTHENTICATION_REQUIRED",
                "Sign in, or send an API token as 'Authorization: Bearer …'.",
            )

    def handleContentChunk(self, data: bytes) -> None:
        """Keep the chunk unless the body has passed the limit (or was refused)."""
        from processing.upload_limits import body_limit, too_large_message

        if self.refused:
            return
        self.received += len(data)
        if self.received > body_limit():
            path = self._path()
            self._refuse(path, "413 Payload Too Large", "FILE_TOO_LARGE", too_large_message())
            return
        super().handleContentChunk(data)

    def process(self) -> Any:
        """Hand the request to the application, unless it was refused (answered already)."""
        if self.refused:
            return None
        return super().process()

    def _path(self) -> str:
        raw = getattr(self.channel, "_path", b"/") or b"/"
        return str(raw.decode("latin-1").split("?", 1)[0])

    def _refuse(self, path: str, status: str, code: str, message: str) -> None:
        """Answer, stop reading, and close the connection a little later."""
        from twisted.internet import reactor

        self.refused = True
        transport = self.channel.transport
        transport.write(_answer(path, status, code, message))
        transport.pauseProducing()
        clock: Any = reactor  # typed as the bare module; it is the running reactor
        clock.callLater(LINGER_SECONDS, transport.abortConnection)


class BoundedHTTPFactory(http_protocol.HTTPFactory):  # type: ignore[misc]
    """daphne's factory, making :class:`BoundedWebRequest` requests."""

    def buildProtocol(self, addr: Any) -> Any:
        """A connection whose requests are bounded."""
        protocol = super().buildProtocol(addr)
        if protocol is not None:
            protocol.requestFactory = BoundedWebRequest
        return protocol


def main(argv: list[str] | None = None) -> None:
    """Run daphne's command line with bounded request bodies."""
    import daphne.server

    daphne.server.HTTPFactory = BoundedHTTPFactory
    CommandLineInterface().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
