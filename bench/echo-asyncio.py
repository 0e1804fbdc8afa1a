#!/usr/bin/env python3
"""echo-asyncio.py - the echo benchmark's Python baseline.

    python3 bench/echo-asyncio.py [-H HOST] -p PORT     (default 127.0.0.1)

An asyncio.Protocol echo server, the fastest way to write one in plain
asyncio (no uvloop): data_received writes the bytes straight back.  asyncio
sets TCP_NODELAY on its TCP transports.  "listening" goes to stderr when
ready; SIGTERM or SIGINT closes the server and exits with status 0.
"""
import argparse
import asyncio
import signal
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def main(host, port):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    server = await loop.create_server(Echo, host, port, reuse_address=True,
                                      backlog=4096)
    print(f"echo-asyncio: listening on {host}:{port}", file=sys.stderr,
          flush=True)
    await stop
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="asyncio echo server")
    parser.add_argument("-H", dest="host", default="127.0.0.1")
    parser.add_argument("-p", dest="port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
