"""Run by ``batching.py`` in the BentoML server environment (it has ``bentoml``, the mesh's
environment does not): p50 of BentoML's own ``bentoml.AsyncHTTPClient`` against a raw
``httpx`` POST of the same item to the same server, interleaved call by call.

It says which "raw client" is the stricter baseline for the mesh/raw ratio; the ratio itself
is measured against raw httpx, in the mesh's process.

    .nox/bentoml/bin/python benchmarks/_bentoml_client.py URL CALLS ITEM_JSON

Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from typing import Any

import bentoml
import httpx
from _timing import interleaved  # benchmarks/ is on sys.path


async def main(url: str, calls: int, item: dict[str, Any]) -> dict[str, Any]:
    async with bentoml.AsyncHTTPClient(url) as client, \
            httpx.AsyncClient(base_url=url, trust_env=False) as raw_client:

        async def sdk() -> Any:
            return await client.predict(inputs=[item])

        async def raw() -> Any:
            response = await raw_client.post("/predict", json={"inputs": [item]})
            response.raise_for_status()
            return response.json()

        assert (await sdk())[0]["output"] == (await raw())[0]["output"]
        paths = {"sdk": sdk, "raw": raw}
        await interleaved(paths, 50)  # warm-up
        samples = await interleaved(paths, calls)
    sdk_p50, raw_p50 = statistics.median(samples["sdk"]), statistics.median(samples["raw"])
    return {"bentoml_client_p50_ms": round(sdk_p50 / 1000, 3),
            "httpx_p50_ms": round(raw_p50 / 1000, 3),
            "bentoml_client_over_httpx_p50": round(sdk_p50 / raw_p50, 3),
            "bentoml_version": bentoml.__version__, "bentoml_client_calls_each": calls}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])))))
