"""A TCP proxy that adds latency: every chunk arrives ``delay`` ms after the proxy got it.

    python benchmarks/delay_proxy.py --target HOST:PORT --delay-ms D [--port P]

Listens on 127.0.0.1 (``--port 0``, the default, picks a free port) and forwards each
connection to the target. In each direction, every chunk read is delivered ``D`` ms after it
was read, in order: a one-way delay, so a command and its reply take ``2 x D`` (the round
trip time). Nothing else is limited: the proxy reads as fast as the sender writes and holds
what is in transit in memory, so many chunks can be on their way at once, as on a long
link with plenty of bandwidth. An end of stream (half-close) is delayed like data.

``tc netem`` does this in the kernel; where it is missing (this machine), this stands in.
Benchmarks run it in a child process with :class:`DelayProxy`, so its event loop never
competes with the measured code for the GIL. Started by hand, it prints one JSON line
(``{"host": ..., "port": ..., "target": ..., "delay_ms": ...}``) when it is ready and runs
until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

#: how much one read takes at most; a smaller read only means more chunks in flight
_READ_SIZE = 256 * 1024


async def _carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 delay: float) -> None:
    """Copy one direction: read chunks as they come, write each ``delay`` s after its read.

    Reading and writing are separate tasks joined by a queue, so reading never waits for
    the delay: the chunks read meanwhile are the bytes "on the wire"."""
    loop = asyncio.get_running_loop()
    in_transit: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def receive() -> None:
        try:
            while data := await reader.read(_READ_SIZE):
                in_transit.put_nowait((loop.time() + delay, data))
        finally:
            in_transit.put_nowait((loop.time() + delay, b""))  # end of stream (or reset)

    async def deliver() -> None:
        while True:
            due, data = await in_transit.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()  # the receiver's flow control still applies, as on a link

    receiving = asyncio.ensure_future(receive())
    try:
        await deliver()
    finally:
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await receiving


class _Relay:
    """Accepts connections and joins each to a new connection to the target."""

    def __init__(self, target_host: str, target_port: int, delay_ms: float) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.delay = delay_ms / 1000.0

    async def handle(self, client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(
                self.target_host, self.target_port)
        except OSError:
            client_writer.close()
            return
        # Either direction failing (a reset) ends the connection; a half-close does not.
        directions = [
            asyncio.ensure_future(_carry(client_reader, server_writer, self.delay)),
            asyncio.ensure_future(_carry(server_reader, client_writer, self.delay)),
        ]
        try:
            await asyncio.gather(*directions)
        except OSError:
            pass
        finally:
            for task in directions:
                task.cancel()
            for writer in (client_writer, server_writer):
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


async def serve(target_host: str, target_port: int, delay_ms: float, port: int = 0) -> None:
    """Run the proxy until cancelled; the ready line goes to stdout first."""
    relay = _Relay(target_host, target_port, delay_ms)
    server = await asyncio.start_server(relay.handle, "127.0.0.1", port)
    host, bound = server.sockets[0].getsockname()[:2]
    print(json.dumps({"host": host, "port": bound, "target": f"{target_host}:{target_port}",
                      "delay_ms": delay_ms}), flush=True)
    async with server:
        await server.serve_forever()


class DelayProxy:
    """The proxy in a child process, for as long as the ``with`` block lasts.

    ``with DelayProxy("127.0.0.1", 110, delay_ms=20) as proxy:`` connect to
    ``proxy.host``:``proxy.port`` for a 40 ms round trip to the target."""

    def __init__(self, target_host: str, target_port: int, *, delay_ms: float) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.delay_ms = delay_ms
        self.host = "127.0.0.1"
        self.port = 0
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> DelayProxy:
        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()),
             "--target", f"{self.target_host}:{self.target_port}",
             "--delay-ms", str(self.delay_ms)],
            stdout=subprocess.PIPE, text=True,
        )
        assert self._process.stdout is not None
        ready = self._process.stdout.readline()
        if not ready:
            self.close()
            raise RuntimeError("delay_proxy: the child process exited before it was ready")
        info = json.loads(ready)
        self.host, self.port = info["host"], info["port"]
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, required=True,
                        help="one-way delay in milliseconds (the round trip is twice this)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    if not host or not port.isdigit() or args.delay_ms < 0:
        parser.error("--target must be HOST:PORT and --delay-ms not negative")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host, int(port), args.delay_ms, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
