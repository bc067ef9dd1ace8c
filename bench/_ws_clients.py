"""Many websocket clients in one asyncio process, recording when each message arrived.

    python bench/_ws_clients.py --port PORT --spec SPEC.json

SPEC.json is a list of ``[path, label]``: one client per entry, ``path`` the request path
with its query (``/ws/matters/<id>/events?token=…``), ``label`` what the results call it
(the matter). Nothing is installed for this: no ``websockets``, ``aiohttp`` or ``wsproto``
in the venv (autobahn is, through daphne, but costs more CPU per message), so this is a
minimal RFC 6455 client on ``asyncio.Protocol``: the HTTP upgrade, unmasked frames from
the server, pongs (masked) to daphne's pings, and a close.

The receive time of a message is ``time.time()`` when its bytes reach ``data_received``
(one reading for every frame in that chunk), before any parsing. Each ``job.updated``
is recorded as ``[t, job_id, updated_at]``, each other event as ``[t, type]``.

Commands on stdin, one per line (answers on stdout):

- ``dump PATH``: write ``{"clients": [[label, records], …], "cpu_s": …}`` to PATH,
  forget the records, answer ``DUMPED n``;
- ``quit``: close every socket and exit.

Once every client has its answer to the upgrade it prints ``READY <open> <failed>``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

CONNECT_AT_ONCE = 25


def cpu_s() -> float:
    """This process's user + system CPU seconds (/proc/self/stat)."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Client(asyncio.Protocol):
    """One websocket: the upgrade, then frames; records what arrives."""

    def __init__(self, path: str, port: int, label: str) -> None:
        self.path, self.port, self.label = path, port, label
        self.buffer = bytearray()
        self.upgraded: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.records: list[list[Any]] = []
        self.fragments: list[bytes] = []
        self.closed_code: int | None = None
        self.key = base64.b64encode(os.urandom(16)).decode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self.key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        transport.write(request.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_result(False)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buffer += data
        if not self.upgraded.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buffer[: self.buffer.find(b"\r\n")])
            del self.buffer[: end + 4]
            ok = b" 101 " in status
            self.upgraded.set_result(ok)
            if not ok:
                self.transport.close()  # type: ignore[union-attr]
                return
        self._frames(now)

    def _frames(self, now: float) -> None:
        buf = self.buffer
        while len(buf) >= 2:
            opcode, fin = buf[0] & 0x0F, buf[0] & 0x80
            length, head = buf[1] & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    return
                length, head = struct.unpack_from("!H", buf, 2)[0], 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length, head = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < head + length:
                return
            payload = bytes(buf[head : head + length])
            del buf[: head + length]
            if opcode in (0x1, 0x2, 0x0):
                self.fragments.append(payload)
                if fin:
                    self._message(now, b"".join(self.fragments))
                    self.fragments = []
            elif opcode == 0x9:  # ping: answer with a masked pong
                self._send(0xA, payload)
            elif opcode == 0x8:
                self.closed_code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 0
                self._send(0x8, payload[:2])
                self.transport.close()  # type: ignore[union-attr]
                return

    def _message(self, now: float, payload: bytes) -> None:
        event = json.loads(payload)
        if event.get("type") == "job.updated":
            job = event["job"]
            self.records.append([now, job["job_id"], job["updated_at"]])
        else:
            self.records.append([now, event.get("type", "?")])

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def close(self) -> None:
        self._send(0x8, struct.pack("!H", 1000))


async def _open(loop: asyncio.AbstractEventLoop, port: int, path: str, label: str) -> Client:
    _transport, client = await loop.create_connection(
        lambda: Client(path, port, label), "127.0.0.1", port
    )
    try:
        await asyncio.wait_for(client.upgraded, 60)
    except TimeoutError:
        client.upgraded.cancel()
    return client


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--spec", required=True)
    args = parser.parse_args()
    spec = json.loads(Path(args.spec).read_text())
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)

    async def one(path: str, label: str) -> Client | None:
        async with gate:
            try:
                return await _open(loop, args.port, path, label)
            except OSError:
                return None

    clients = await asyncio.gather(*(one(path, label) for path, label in spec))
    # A consumer accepts, then closes with 4403 a caller it refuses: give that a moment.
    await asyncio.sleep(0.5)
    ok = [
        c
        for c in clients
        if c is not None
        and c.upgraded.done()
        and not c.upgraded.cancelled()
        and c.upgraded.result()
        and c.closed_code is None
    ]
    print(f"READY {len(ok)} {len(spec) - len(ok)}", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        command, _, rest = line.partition(" ")
        if command == "dump":
            data = {
                "clients": [[c.label, c.records] for c in ok],
                "closed": sum(1 for c in ok if c.closed_code is not None),
                "cpu_s": cpu_s(),
            }
            Path(rest).write_text(json.dumps(data))
            count = sum(len(c.records) for c in ok)
            for c in ok:
                c.records = []
            print(f"DUMPED {count}", flush=True)
        elif command == "quit":
            break
    for c in ok:
        c.close()
    await asyncio.sleep(0.2)


if __name__ == "__main__":
    asyncio.run(main())
