"""Gateway benchmark: what the HTTP front door adds to a call, how many calls/s two workers
serve, and whether a quota binds exactly across both workers.

Writes ``benchmarks/results/gateway.json`` as
``{"added_p50_ms", "added_p99_ms", "floor_p50_ms", "rps_64", "errors", "over_admitted"}``:

* ``added_*``: one idle client, response cache off, interleaved call by call: a gateway call's
  latency minus the same capability called through the in-process Mesh in the client's
  process (per round, then the percentile of those differences);
* ``floor_p50_ms``: the same client calling a bare ASGI echo app on the same server stack and
  settings (uvicorn, h11 with the head deadline, two workers), interleaved with the above;
* ``rps_64``: calls/s with 64 concurrent keep-alive clients in a separate process against two
  workers for ``--seconds`` (60) seconds, no quota binding; ``errors``: non-2xx answers and
  transport errors in that run;
* ``over_admitted``: a second phase where a tenant's quota (a lifetime budget of
  ``LIMIT`` calls on Redis) binds across both workers: calls admitted beyond it (429s are
  expected there, not errors).

Targets: ``added_p50_ms <= 1.5 x floor_p50_ms``, ``errors == 0``, ``over_admitted == 0``.

``--frameworks`` instead measures the same echo endpoint on Starlette and on FastAPI (same
uvicorn settings, one worker): p50 of one idle client and calls/s of 64 clients, into
``benchmarks/results/gateway_frameworks.json`` (why the gateway is built on Starlette).

Run: ``.venv/bin/python benchmarks/gateway.py [--seconds 60] [--rounds 2000]`` (starts a
private redis-server; needs redis-server on PATH).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "adapters")]

from pydantic import BaseModel  # noqa: E402

from aios_mesh.capabilities import capability  # noqa: E402

LIMIT = 2_000
CONCURRENCY = 64
BODY = {"text": "an invoice from acme for 42 EUR"}


class Text(BaseModel):
    text: str


@capability("echo")
def echo(payload: Text) -> Text:
    """Answer the text as it came (the cheapest capability: the benchmark measures the hop)."""
    return payload


CAPABILITIES = [echo]


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A bare ASGI app: answers the request body as JSON (the least any HTTP hop costs)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def starlette_echo() -> Any:
    """The echo endpoint on Starlette (what the gateway is built on)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def handler(request: Request) -> JSONResponse:
        return JSONResponse(await request.json())

    return Starlette(routes=[Route("/echo", handler, methods=["POST"])])


def fastapi_echo() -> Any:
    """The same endpoint on FastAPI (pydantic validation of the body, as it is used)."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/echo")
    async def handler(payload: Text) -> Text:
        return payload

    return app


# ---------------------------------------------------------------------- load generator
async def _client(host: str, port: int, request: bytes, deadline: float,
                  counts: Counter[str]) -> None:
    """One keep-alive client: send, read the answer, again, until ``deadline``."""
    reader = writer = None
    while time.monotonic() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            writer.write(request)
            status = (await reader.readline()).split(b" ", 2)[1].decode()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            counts[status] += 1
        except (OSError, IndexError, asyncio.IncompleteReadError, ValueError):
            counts["transport"] += 1
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def _load(url: str, path: str, token: str, seconds: float, concurrency: int
                ) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(BODY).encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body
    counts: Counter[str] = Counter()
    started = time.monotonic()
    await asyncio.gather(*(_client(host, int(port), request, started + seconds, counts)
                           for _ in range(concurrency)))
    took = time.monotonic() - started
    return {"counts": dict(counts), "seconds": took}


def load(url: str, path: str, token: str, seconds: float,
         concurrency: int = CONCURRENCY) -> dict[str, Any]:
    """Run the load generator in a separate process; its status counts and duration."""
    done = subprocess.run([sys.executable, __file__, "--load", url, path, token,
                           str(seconds), str(concurrency)], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# ---------------------------------------------------------------------- servers
@contextmanager
def echo_server(target: str, workers: int) -> Iterator[str]:
    """``target`` (``benchmarks.gateway:echo_app`` ...) on the gateway's server stack."""
    import httpx

    from aios_mesh.testing.processes import free_port, start_process, wait_until

    port = free_port()
    code = ("from aios_mesh.gateway.server import ServerSettings, run_app; "
            f"run_app({target!r}, ServerSettings(port={port}, workers={workers}), "
            f"factory={not target.endswith('echo_app')})")
    url = f"http://127.0.0.1:{port}"

    def ready() -> None:
        wait_until(lambda: httpx.post(f"{url}/echo", json=BODY).status_code == 200,
                   timeout=60, what=target)

    with start_process([sys.executable, "-c", code], ready=ready, name="echo",
                       env={"PYTHONPATH": str(ROOT)}, cwd=ROOT):
        yield url


CONFIG = """
state_dir = "{state}"
[backends]
quota = "redis://{redis}/0"
[tenants.bench]
[tenants.capped.quota]
calls = {limit}
"""


async def _latency(gw: str, floor: str, token: str, mesh: Any, rounds: int
                   ) -> dict[str, list[float]]:
    import httpx

    from benchmarks._timing import interleaved

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers) as client:
        async def via_gateway() -> None:
            r = await client.post(f"{gw}/v1/capabilities/echo/invoke", json=BODY)
            assert r.status_code == 200, r.text

        async def via_floor() -> None:
            r = await client.post(f"{floor}/echo", json=BODY)
            assert r.status_code == 200

        async def in_process() -> None:
            await mesh.ainvoke("echo", BODY, tenant="bench", caller="bench")

        for _ in range(50):  # warm every path (connections, caches, imports)
            await via_gateway()
            await via_floor()
            await in_process()
        return await interleaved({"gateway": via_gateway, "floor": via_floor,
                                  "in_process": in_process}, rounds)


def main(seconds: float, rounds: int) -> dict[str, Any]:
    from aios_mesh import Mesh
    from aios_mesh.gateway.auth import KeyStore
    from aios_mesh.gateway.testing import running_gateway
    from aios_mesh.state import SqliteState
    from aios_mesh.testing.servers import launcher
    from benchmarks._timing import pct

    with tempfile.TemporaryDirectory() as tmp_dir, \
            launcher("redis")(Path(tmp_dir) / "redis") as redis:
        tmp = Path(tmp_dir)
        config = tmp / "gateway.toml"
        config.write_text(CONFIG.format(state=tmp / "state", redis=redis.address, limit=LIMIT))
        client_config = tmp / "client.toml"
        client_config.write_text(CONFIG.format(state=tmp / "client", redis=redis.address,
                                               limit=LIMIT))
        (tmp / "state" / "policies" / "bench").mkdir(parents=True)
        (tmp / "state" / "policies" / "bench" / "open.rego").write_text(
            "package bench\n\nimport rego.v1\n\ndefault allow := true\n")
        keys = KeyStore(SqliteState(tmp / "state"))
        bench_key = keys.create("bench", "bench")[1]
        capped_key = keys.create("capped", "bench")[1]
        keys.close()
        with running_gateway(config, workers=2, app="benchmarks.gateway:CAPABILITIES",
                             cwd=ROOT) as gw, \
                echo_server("benchmarks.gateway:echo_app", workers=2) as floor:
            mesh = Mesh.from_config(client_config, capabilities=CAPABILITIES)
            samples = mesh.run_sync(_latency(gw.url, floor, bench_key, mesh, rounds))
            mesh.close()
            added = [g - i for g, i in zip(samples["gateway"], samples["in_process"],
                                           strict=True)]
            run = load(gw.url, "/v1/capabilities/echo/invoke", bench_key, seconds)
            counts = run["counts"]
            ok = sum(n for status, n in counts.items() if status.startswith("2"))
            capped = load(gw.url, "/v1/capabilities/echo/invoke", capped_key,
                          max(10.0, seconds / 6))["counts"]
    admitted = sum(n for status, n in capped.items() if status.startswith("2"))
    result = {
        "added_p50_ms": round(pct(added, 0.5) / 1000, 3),
        "added_p99_ms": round(pct(added, 0.99) / 1000, 3),
        "floor_p50_ms": round(pct(samples["floor"], 0.5) / 1000, 3),
        "rps_64": round(ok / run["seconds"], 1),
        "errors": sum(counts.values()) - ok,
        "over_admitted": max(0, admitted - LIMIT),
    }
    print(json.dumps({**result, "gateway_p50_ms": pct(samples["gateway"], 0.5) / 1000,
                      "in_process_p50_ms": pct(samples["in_process"], 0.5) / 1000,
                      "load_counts": counts, "capped_counts": capped}, indent=1),
          file=sys.stderr)
    return result


def frameworks(seconds: float, rounds: int) -> dict[str, Any]:
    """Starlette vs FastAPI: the same echo endpoint, the same server stack and settings."""
    import httpx

    from benchmarks._timing import interleaved, pct

    out: dict[str, Any] = {}
    with echo_server("benchmarks.gateway:starlette_echo", workers=1) as starlette, \
            echo_server("benchmarks.gateway:fastapi_echo", workers=1) as fastapi:
        async def idle() -> dict[str, list[float]]:
            async with httpx.AsyncClient() as client:
                async def one(url: str) -> None:
                    assert (await client.post(f"{url}/echo", json=BODY)).status_code == 200
                for _ in range(50):
                    await one(starlette)
                    await one(fastapi)
                return await interleaved({"starlette": lambda: one(starlette),
                                          "fastapi": lambda: one(fastapi)}, rounds)

        samples = asyncio.run(idle())
        for name, url in (("starlette", starlette), ("fastapi", fastapi)):
            run = load(url, "/echo", "-", seconds)
            ok = sum(n for s, n in run["counts"].items() if s.startswith("2"))
            out[name] = {"p50_ms": round(pct(samples[name], 0.5) / 1000, 3),
                         "p99_ms": round(pct(samples[name], 0.99) / 1000, 3),
                         "rps_64": round(ok / run["seconds"], 1)}
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        url, path, token, secs, conc = sys.argv[2:7]
        print(json.dumps(asyncio.run(_load(url, path, token, float(secs), int(conc)))))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--frameworks", action="store_true")
    args = parser.parse_args()
    results = ROOT / "benchmarks" / "results"
    if args.frameworks:
        doc = frameworks(min(args.seconds, 15.0), args.rounds)
        (results / "gateway_frameworks.json").write_text(json.dumps(doc, indent=2) + "\n")
    else:
        doc = main(args.seconds, args.rounds)
        (results / "gateway.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
