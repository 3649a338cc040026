"""A plain NATS Services API service written with nats-py's `nats.micro`: no nats-mesh
metadata. The gateway must show it anyway.

Usage: python3 plain_service.py NATS_URL
Prints "ready" once registered, then serves `weather.forecast` until killed.
"""
import asyncio
import sys

import nats
import nats.micro


async def main(url: str) -> None:
    nc = await nats.connect(url)
    service = await nats.micro.add_service(nc, name="weather", version="1.0.0")

    async def forecast(req) -> None:
        await req.respond(b'{"sky":"clear"}')

    await service.add_endpoint(name="forecast", subject="weather.forecast", handler=forecast)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
