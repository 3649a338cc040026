"""An independent NATS client (nats-py) checks that subjects and JSON are usable
outside Rust: activation request/reply, status events, Services API discovery.

Usage: python3 independent_client.py NATS_URL   (the seed topology must be served there)
Exits non-zero with a message on the first failed check.
"""
import asyncio
import json
import sys

import nats


async def main(url: str) -> None:
    nc = await nats.connect(url)
    events = []

    async def on_status(msg):
        events.append((msg.subject, json.loads(msg.data)))

    await nc.subscribe("status.>", cb=on_status)
    await nc.flush()

    # An empty body is a valid activation.
    msg = await nc.request("activate.UI", b"", timeout=10)
    reply = json.loads(msg.data)
    assert reply["node"] == "UI" and reply["outcome"] == "ok" and reply["code"] == 200, reply
    nodes = []
    stack = [reply]
    while stack:
        r = stack.pop()
        nodes.append(r["node"])
        for key in ("activation_id", "instance", "elapsed_ms", "message", "children"):
            assert key in r, (key, r)
        stack.extend(r["children"])
    assert sorted(nodes) == sorted(["UI", "D", "P", "V", "T", "DS", "TM", "H"]), nodes

    # A JSON request with a colour; the running events carry it.
    body = json.dumps({"color": "#ff00ff", "activation_id": "py-1"}).encode()
    msg = await nc.request("activate.V", body, timeout=10)
    assert json.loads(msg.data)["activation_id"] == "py-1"

    # Malformed JSON gets the Services API error headers.
    msg = await nc.request("activate.UI", b"{not json", timeout=10)
    assert msg.headers and msg.headers.get("Nats-Service-Error-Code") == "400", msg.headers

    for _ in range(200):
        if sum(1 for _, e in events if e.get("activation_id") == "py-1") >= 8:
            break
        await asyncio.sleep(0.01)
    py = [e for _, e in events if e.get("activation_id") == "py-1"]
    assert len(py) == 8, py
    running = [e for e in py if e["state"] == "running"]
    assert all(e["color"] == "#ff00ff" for e in running), running
    assert all(s.startswith("status.") for s, _ in events)

    # Discovery: $SRV.INFO.<name> answers with metadata.
    msg = await nc.request("$SRV.INFO.P", b"", timeout=5)
    info = json.loads(msg.data)
    assert info["metadata"]["mesh.downstream"] == "V,H", info
    assert info["endpoints"][0]["subject"] == "activate.P", info

    await nc.drain()
    print("independent client: all checks passed")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
