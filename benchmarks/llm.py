"""LLM benchmark: what the gateway's OpenAI-compatible face costs a generation, next to
LiteLLM's proxy, and whether a quiet tenant keeps its latency while a noisy one floods.

Writes ``benchmarks/results/llm.json`` as ``{"tokens_per_s_mesh_over_direct",
"ttft_added_ms_p50", "mesh_added_p50_ms", "litellm_added_p50_ms",
"quiet_tenant_p95_ratio_mesh", "quiet_tenant_p95_ratio_direct", ...}``, all against one
llama.cpp server (Gemma 3 270M), temperature 0, response cache off, the same official
``openai`` client (AsyncOpenAI, no retries) for every path:

* ``tokens_per_s_mesh_over_direct``: completion tokens (the reported usage; llama-cpp-python's
  server reports none when streaming, so there the content chunks, one per token) per second
  of wall time, streamed through the gateway's SSE endpoint, over the client streaming the same
  request straight from the server; runs interleaved (target >= 0.97);
* ``ttft_added_ms_p50``: what the gateway adds to the time to the first content chunk on the
  same runs (the p50 of each pair's difference; target <= 2 ms);
* ``mesh_added_p50_ms`` / ``litellm_added_p50_ms``: the latency the gateway and a LiteLLM
  proxy each add over calling the server directly: the same short non-streamed request
  (``max_tokens`` 1), the three paths interleaved call by call, p50 of per-round differences
  (target: ours <= a quarter of LiteLLM's);
* ``quiet_tenant_p95_ratio_*``: a quiet tenant's p95 while a noisy tenant floods the same
  single-generation server with 16 concurrent callers, over its p95 alone, both asking the
  same ``max_tokens``: through the gateway with the fair scheduler in front of the backend
  (concurrency 1; target <= 2, the floor for a server that cannot pre-empt) and calling the
  server directly (for contrast).

Run: ``.venv/bin/python benchmarks/llm.py [--rounds 8] [--short 40] [--quiet 8]`` (needs the
LiteLLM environment: ``make .nox/litellm/.installed``, done by ``make bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "adapters")]

LITELLM = ROOT / ".nox" / "litellm" / "bin" / "litellm"
NOISY_CALLERS = 16
STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper and "
                                     "the sea, with many details."}]
SHORT = [{"role": "user", "content": "Say hi."}]

CONFIG = """
state_dir = "{state}"
[backends]
registry = "memory://"
[backends.serving_named]
llm = "openai+http://{llm}/v1?response_format=json_object"
[retry]
max_attempts = 1
[scheduler]
enabled = true
[scheduler.backends]
llm = 1
[tenants.bench]
[tenants.quiet]
[tenants.noisy]
"""


# ------------------------------------------------------------------ the gateway's mesh
from aios_mesh import ChatInput, Generation, TextOutput  # noqa: E402
from aios_mesh.capabilities import SLO, capability  # noqa: E402


@capability("chat", model="gemma@champion", serving="llm", slo=SLO(timeout_s=600),
            generate=Generation(max_tokens=256))
def chat(payload: ChatInput) -> TextOutput:
    """A chat answer from the LLM."""
    ...


def _build() -> Any:
    """The mesh each gateway worker serves (``--app benchmarks.llm:mesh``): the chat
    capability on the ``llm`` backend, its model registered in the memory registry."""
    from concurrent.futures import ThreadPoolExecutor

    from aios_mesh import Mesh

    built = Mesh.from_config(os.environ["LLM_BENCH_CONFIG"], capabilities=[chat])

    async def publish() -> None:
        registry = built.ports.registry
        ref = await registry.register("gemma", "gguf://gemma-3-270m/Q4_K_M")
        await registry.set_alias("gemma", "champion", ref.version)

    with ThreadPoolExecutor(1) as pool:  # uvicorn imports this inside its event loop
        pool.submit(asyncio.run, publish()).result()
    return built


_built: list[Any] = []


def __getattr__(name: str) -> Any:
    if name != "mesh":
        raise AttributeError(name)
    if not _built:
        _built.append(_build())
    return _built[0]


# ------------------------------------------------------------------ servers
@contextmanager
def litellm_proxy(llm: str, folder: Path) -> Iterator[str]:
    """LiteLLM's proxy in its own environment, forwarding ``chat`` to the llama.cpp server."""
    import httpx

    from aios_mesh.testing.processes import free_port, start_process, wait_until

    if not LITELLM.exists():
        raise SystemExit("LiteLLM's environment is missing: make .nox/litellm/.installed")
    port = free_port()
    config = folder / "litellm.yaml"
    config.write_text("model_list:\n  - model_name: chat\n    litellm_params:\n"
                      "      model: openai/gemma-3-270m\n"
                      f"      api_base: http://{llm}/v1\n      api_key: none\n")
    env = {"LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
           "NO_DOCS": "True"}
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/v1/models", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    with start_process([str(LITELLM), "--config", str(config), "--host", "127.0.0.1",
                        "--port", str(port), "--num_workers", "1"],
                       ready=lambda: wait_until(ready, timeout=180, what="litellm"),
                       name="litellm", env=env, log_dir=folder):
        yield f"{url}/v1"


@contextmanager
def stack(folder: Path) -> Iterator[dict[str, Any]]:
    """A llama.cpp server, the gateway (one worker) in front of it, LiteLLM beside it."""
    from aios_mesh_llamacpp.testing import llama_server

    from aios_mesh.gateway.auth import KeyStore
    from aios_mesh.gateway.testing import running_gateway
    from aios_mesh.state import SqliteState

    with ExitStack() as es:
        llm = es.enter_context(llama_server(folder / "llama"))
        state = folder / "state"
        config = folder / "mesh.toml"
        config.write_text(CONFIG.format(state=state, llm=llm.address))
        policies = state / "policies" / "gateway"
        policies.mkdir(parents=True)
        (policies / "open.rego").write_text("package gateway.open\n\nimport rego.v1\n\n"
                                             "default allow := true\n")
        store = KeyStore(SqliteState(state))
        keys = {t: store.create(t, f"{t}-app")[1] for t in ("bench", "quiet", "noisy")}
        store.close()
        gw = es.enter_context(running_gateway(None, app="benchmarks.llm:mesh", cwd=ROOT,
                                              env={"LLM_BENCH_CONFIG": str(config)},
                                              timeout=120))
        proxy = es.enter_context(litellm_proxy(llm.address, folder))
        yield {"direct": f"http://{llm.address}/v1", "mesh": f"{gw.url}/v1",
               "litellm": proxy, "keys": keys}


# ------------------------------------------------------------------ measurements
def _client(base_url: str, key: str = "none") -> Any:
    import openai

    return openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=600)


def _model(path: str) -> str:
    return "gemma-3-270m" if path == "direct" else "chat"


async def stream_once(client: Any, model: str, max_tokens: int) -> tuple[float, float, int]:
    """(time to first content chunk s, wall time s, completion tokens) of one streamed
    generation."""
    started = time.perf_counter()
    first: float | None = None
    reported: int | None = None
    pieces = 0
    stream = await client.chat.completions.create(
        model=model, messages=STORY, max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces += 1
            if first is None:
                first = time.perf_counter() - started
        if chunk.usage is not None and chunk.usage.completion_tokens:
            reported = chunk.usage.completion_tokens
    wall = time.perf_counter() - started
    # llama-cpp-python's server reports no usage when streaming; it sends one content chunk
    # per token, so the chunks are the count (the same measure on both paths)
    return (first if first is not None else wall), wall, reported or pieces


async def streaming(urls: dict[str, Any], rounds: int, max_tokens: int) -> dict[str, Any]:
    clients = {"direct": _client(urls["direct"]),
               "mesh": _client(urls["mesh"], urls["keys"]["bench"])}
    runs: dict[str, list[tuple[float, float, int]]] = {"direct": [], "mesh": []}
    await stream_once(clients["direct"], "gemma-3-270m", 8)  # warm both paths
    await stream_once(clients["mesh"], "chat", 8)
    for i in range(rounds):
        order = ["direct", "mesh"] if i % 2 == 0 else ["mesh", "direct"]
        for path in order:
            runs[path].append(await stream_once(clients[path], _model(path), max_tokens))
    rate = {p: sum(r[2] for r in rs) / sum(r[1] for r in rs) for p, rs in runs.items()}
    ttft_added = [(m[0] - d[0]) * 1000 for d, m in zip(runs["direct"], runs["mesh"],
                                                        strict=True)]
    return {"tokens_per_s": {p: round(v, 2) for p, v in rate.items()},
            "tokens_per_s_mesh_over_direct": round(rate["mesh"] / rate["direct"], 4),
            "ttft_added_ms_p50": round(statistics.median(ttft_added), 3),
            "ttft_ms_p50": {p: round(statistics.median(r[0] for r in rs) * 1000, 2)
                            for p, rs in runs.items()},
            "completion_tokens": {p: [r[2] for r in rs] for p, rs in runs.items()}}


async def short_calls(urls: dict[str, Any], rounds: int) -> dict[str, Any]:
    from benchmarks._timing import interleaved

    clients = {"direct": _client(urls["direct"]),
               "mesh": _client(urls["mesh"], urls["keys"]["bench"]),
               "litellm": _client(urls["litellm"], "sk-none")}

    def call(path: str) -> Any:
        async def go() -> None:
            await clients[path].chat.completions.create(
                model=_model(path), messages=SHORT, max_tokens=1, temperature=0)
        return go

    paths = {p: call(p) for p in clients}
    await interleaved(paths, 5)  # warm-up
    samples = await interleaved(paths, rounds)
    added = {p: [(a - d) / 1000 for a, d in zip(samples[p], samples["direct"], strict=True)]
             for p in ("mesh", "litellm")}
    return {"mesh_added_p50_ms": round(statistics.median(added["mesh"]), 3),
            "litellm_added_p50_ms": round(statistics.median(added["litellm"]), 3),
            "short_p50_ms": {p: round(statistics.median(v) / 1000, 3)
                             for p, v in samples.items()}}


async def _quiet_p95(client: Any, model: str, n: int, max_tokens: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await client.chat.completions.create(model=model, messages=SHORT,
                                             max_tokens=max_tokens, temperature=0)
        out.append((time.perf_counter() - t) * 1000)
    return out


async def fairness(urls: dict[str, Any], path: str, quiet_n: int, max_tokens: int
                   ) -> dict[str, Any]:
    """The quiet tenant's latencies alone, then while 16 noisy callers flood."""
    from benchmarks._timing import pct

    keys = urls["keys"]
    quiet = _client(urls[path], keys["quiet"] if path == "mesh" else "none")
    noisy = _client(urls[path], keys["noisy"] if path == "mesh" else "none")
    model = _model(path)
    alone = await _quiet_p95(quiet, model, quiet_n, max_tokens)
    stop = asyncio.Event()
    noisy_done = 0

    async def flood() -> None:
        nonlocal noisy_done
        while not stop.is_set():
            await noisy.chat.completions.create(model=model, messages=SHORT,
                                                max_tokens=max_tokens, temperature=0)
            noisy_done += 1

    floods = [asyncio.create_task(flood()) for _ in range(NOISY_CALLERS)]
    await asyncio.sleep(2.0)  # let the backlog build
    loaded = await _quiet_p95(quiet, model, quiet_n, max_tokens)
    stop.set()
    await asyncio.gather(*floods, return_exceptions=True)
    return {"alone_p95_ms": round(pct(alone, 0.95), 1),
            "flooded_p95_ms": round(pct(loaded, 0.95), 1),
            "ratio": round(pct(loaded, 0.95) / pct(alone, 0.95), 3),
            "noisy_calls": noisy_done}


async def measure(urls: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    result.update(await streaming(urls, args.rounds, args.stream_tokens))
    result.update(await short_calls(urls, args.short))
    fair = {p: await fairness(urls, p, args.quiet, args.quiet_tokens)
            for p in ("mesh", "direct")}
    result["quiet_tenant_p95_ratio_mesh"] = fair["mesh"]["ratio"]
    result["quiet_tenant_p95_ratio_direct"] = fair["direct"]["ratio"]
    result["fairness"] = fair
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=16, help="streamed runs per path")
    parser.add_argument("--stream-tokens", type=int, default=64,
                        help="max_tokens of a streamed run")
    parser.add_argument("--short", type=int, default=40,
                        help="rounds of the short request (three paths each)")
    parser.add_argument("--quiet", type=int, default=20,
                        help="quiet-tenant calls per phase (p95 of 20 is their 19th)")
    parser.add_argument("--quiet-tokens", type=int, default=8,
                        help="max_tokens of quiet and noisy calls")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp)) as urls:
        result = asyncio.run(measure(urls, args))
    result["host"] = {"cpus": os.cpu_count(), "model": "gemma-3-270m Q4_K_M",
                      "server": "llama-cpp-python server (one generation at a time)"}
    result["targets"] = {"tokens_per_s_mesh_over_direct": ">= 0.97",
                         "ttft_added_ms_p50": "<= 2", "mesh_added_p50_ms":
                         "<= litellm_added_p50_ms / 4", "quiet_tenant_p95_ratio_mesh": "<= 2"}
    out = ROOT / "benchmarks" / "results" / "llm.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict | list)},
                     indent=1))


if __name__ == "__main__":
    main()
