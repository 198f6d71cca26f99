"""Token vault benchmark: what reversible tokens add per call over masking, by vault store.

One "call" is what the redact step does for a tokenizing mesh: tokenize a payload with two
PII values (an e-mail and a phone number; the vault write is awaited) and restore an answer
quoting both (one vault read). The baseline is masking the same payload (``RuleRedactor``),
timed interleaved with every store (``_timing.interleaved``), so "added" is the vault's own
cost: sealing (AES-GCM), the round trips, the thread hop of a blocking client.

Run: ``.venv/bin/python benchmarks/vault.py [--rounds 2000]`` (starts a redis-server; uses
the machine's PostgreSQL at 127.0.0.1:5432 in a throw-away database); writes
benchmarks/results/vault.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "adapters")]

from _timing import interleaved, pct  # noqa: E402
from aios_mesh_postgres import PostgresState  # noqa: E402
from aios_mesh_postgres.testing import postgres_database  # noqa: E402
from aios_mesh_redis.testing import redis_server  # noqa: E402
from aios_mesh_redis.vault import RedisVaultStore  # noqa: E402

from aios_mesh.embedded.sql_vault import SqlVaultStore  # noqa: E402
from aios_mesh.embedded.vault import MemoryVaultStore  # noqa: E402
from aios_mesh.redaction import RuleRedactor, TokenizingRedactor  # noqa: E402
from aios_mesh.redaction.vault import KeyRing, TokenVault  # noqa: E402
from aios_mesh.state import SqliteState  # noqa: E402


async def run(rounds: int) -> dict[str, Any]:
    ring = KeyRing([os.urandom(32)])
    payloads = [{"text": f"mail ann{i}@acme.example or call +49 30 {i:07d}"}
                for i in range(rounds)]
    mask = RuleRedactor()
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp) / "redis") as redis, \
            postgres_database(prefix="aios_mesh_bench_vault") as pg:
        stores: dict[str, Any] = {
            "memory": MemoryVaultStore(),
            "sqlite": SqlVaultStore(SqliteState(Path(tmp))),
            "postgres": SqlVaultStore(PostgresState(pg), owned=True),
            "redis": RedisVaultStore(f"redis://{redis.address}/0"),
        }
        redactors = {name: TokenizingRedactor(vault=TokenVault(store, ring))
                     for name, store in stores.items()}
        def path(name: str) -> Any:
            seq = itertools.count()

            async def call() -> None:
                payload = payloads[next(seq) % rounds]  # each path sees new values
                if name == "mask":
                    mask.redact(payload, tenant="acme")
                    return
                redactor = redactors[name]
                sent = await redactor.tokenize(payload, tenant="acme")
                back = await redactor.restore({"answer": sent.payload["text"]}, tenant="acme")
                assert back == {"answer": payload["text"]}
            return call

        names = ["mask", *redactors]
        await interleaved({name: path(name) for name in names}, 50)  # warm up
        samples = await interleaved({name: path(name) for name in names}, rounds)
        for store in stores.values():
            await store.aclose()
    base = statistics.median(samples["mask"])
    return {
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()}, "
                   f"{os.cpu_count()} CPUs, shared with other work)",
        "rounds": rounds,
        "what": "tokenize 2 PII values (vault write awaited) + restore them (one vault read), "
                "vs masking the same payload",
        "mask_p50_us": round(base, 1),
        "stores": {name: {"p50_us": round(statistics.median(samples[name]), 1),
                          "p99_us": round(pct(samples[name], 0.99), 1),
                          "added_p50_us": round(statistics.median(samples[name]) - base, 1)}
                   for name in redactors},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    result = asyncio.run(run(args.rounds))
    out = ROOT / "benchmarks" / "results" / "vault.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
