"""The floor: a bare nats-py responder that answers every request with its own body.

Run as its own process, like the service, so both responders get a core of their own:
`python -m benchmarks.echo NATS_URL SUBJECT`. Prints `ready` once subscribed; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import nats
from nats.aio.msg import Msg

_HEADERS = {"Flows-Status": "200"}


async def serve(url: str, subject: str) -> None:
    nc = await nats.connect(url, name="bench-echo")

    async def echo(msg: Msg) -> None:
        await nc.publish(msg.reply, msg.data, headers=_HEADERS)

    await nc.subscribe(subject, queue="echo", cb=echo)
    await nc.flush()
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await nc.drain()


def main() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(serve(sys.argv[1], sys.argv[2]))


if __name__ == "__main__":
    main()
