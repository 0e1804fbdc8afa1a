#!/usr/bin/env python3
"""echo-tls-asyncio.py - the TLS echo benchmark's Python baseline.

    python3 bench/echo-tls-asyncio.py [-H HOST] -p PORT --cert FILE --key FILE

asyncio.start_server with ssl=: an ssl.SSLContext (PROTOCOL_TLS_SERVER,
Python's defaults: TLS 1.2 and 1.3) loaded with the same certificate and
key as the other servers, one handler coroutine per connection that reads
up to 16 KiB (as the C servers' buffers hold) and writes it back, awaiting
drain, until EOF.  No uvloop.  asyncio sets TCP_NODELAY on its TCP
transports.  "listening" goes to stderr when ready; SIGTERM or SIGINT
closes the server and exits with status 0.
"""
import argparse
import asyncio
import signal
import ssl
import sys

BUF_SIZE = 16 * 1024


async def echo(reader, writer):
    try:
        while True:
            data = await reader.read(BUF_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def main(host, port, cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    server = await asyncio.start_server(echo, host, port, ssl=ctx,
                                        reuse_address=True, backlog=4096)
    print(f"echo-tls-asyncio: listening on {host}:{port}", file=sys.stderr,
          flush=True)
    await stop
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="asyncio TLS echo server")
    parser.add_argument("-H", dest="host", default="127.0.0.1")
    parser.add_argument("-p", dest="port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port, args.cert, args.key))
