"""The Serving port over NVIDIA Triton Inference Server (tritonclient's asyncio clients).

URLs::

    triton+http://127.0.0.1:8000      KServe v2 over HTTP (tritonclient.http.aio, aiohttp)
    triton+grpc://127.0.0.1:8001      KServe v2 over gRPC (tritonclient.grpc.aio)

Options (query string or keyword; a keyword wins):

``tensor_maps``
    ``{"model-name": TensorMap | dict}`` (keyword) or a JSON file of that dict
    (``?tensor_maps=maps.json``, relative to the mesh's state folder). See
    :mod:`aios_mesh_triton.tensors` for the rules and the default.
``model_config``
    ``true`` (default): read each model version's tensor map from Triton's model config
    (once, cached). ``false``: only the ``tensor_maps`` option and the per-payload default.
``max_batch_size``
    Batch size for the per-payload default map (default 64; 0 = no batch dimension).
``timeout``
    Seconds per call when the caller passes none (default 30).

Version pinning
    ``ModelRef.version`` — the registry's version — is sent as ``model_version`` on every
    request (and config lookup): MLflow version ``N`` is Triton version ``N`` of the model
    named like the registered model (``aios-mesh serve triton NAME@ALIAS`` binds it that
    way). Triton answers ``NotFound`` for a version it does not serve; the adapter never
    falls back to Triton's "latest" policy, and an answer from another version raises
    ``InvalidOutput`` — the decision record always names the version that answered.

Errors
    connection refused / gRPC ``UNAVAILABLE`` / 5xx → :class:`BackendUnavailable` (retryable);
    deadline → :class:`BackendTimeout`; HTTP 404 / gRPC ``NOT_FOUND`` (unknown model or
    version) → :class:`NotFound`; HTTP 400 / ``INVALID_ARGUMENT`` (shape, datatype, batch size
    rejected by the server) and payloads that do not fit the map → :class:`InvalidInput`; an
    answer whose tensors do not match the map → :class:`InvalidOutput`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np

from aios_mesh.backends import BackendURL
from aios_mesh.errors import (
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    InvalidInput,
    InvalidOutput,
    MeshError,
    NotFound,
)
from aios_mesh.ports.base import Feature
from aios_mesh.ports.registry import ModelRef
from aios_mesh.ports.serving import Prediction, ServingBase, Usage
from aios_mesh_triton.tensors import RawTensor, TensorMap, decode_outputs, encode_inputs

__all__ = ["TritonServing"]

Protocol_ = Literal["http", "grpc"]
_OPTIONS = ("tensor_maps", "model_config", "max_batch_size", "timeout")
_NOT_FOUND = {"404", "StatusCode.NOT_FOUND"}
_INVALID = {"400", "StatusCode.INVALID_ARGUMENT", "StatusCode.OUT_OF_RANGE",
            "StatusCode.FAILED_PRECONDITION"}
_DEADLINE = {"504", "StatusCode.DEADLINE_EXCEEDED"}


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[:limit] + "..."


def _takes_raw_content(mod: Any) -> bool:
    """Whether this tritonclient's gRPC ``InferInput`` keeps its tensor bytes in
    ``_raw_content`` (what ``set_data_from_numpy`` fills and the request builder reads; true
    for every tritonclient 2.x). Then inputs go out as :class:`RawTensor` bytes, skipping the
    numpy round trip; otherwise through ``set_data_from_numpy``."""
    try:
        probe = mod.InferInput("probe", [1], "INT64")
        probe.set_data_from_numpy(np.array([7], dtype=np.int64))
        return bool(probe._raw_content == RawTensor.pack("INT64", (1,), [7]).raw
                    and probe._get_content() is probe._raw_content)
    except Exception:  # pragma: no cover - a tritonclient that changed its internals
        return False


class TritonServing(ServingBase):
    """Triton Inference Server behind the Serving port.

    One asyncio client per running event loop (created on first use there), so the mesh's
    sync facade and async callers can share an adapter. ``infer_batch`` sends a batch as one
    request with a leading batch dimension, split into chunks of the model's
    ``max_batch_size`` (sent concurrently, answers stitched back in input order).

    Example::

        serving = TritonServing("127.0.0.1:8001", protocol="grpc")
        pred = await serving.infer(ModelRef("echo-upper", "1"), {"text": "hi", "n": 2})
    """

    # DEADLINE: infer_batch's asyncio.timeout bounds the whole call (tensor map lookup
    # included), so the pipeline does not stack a second timer on it.
    features = frozenset({Feature.BATCH, Feature.ASYNC_NATIVE, Feature.DEADLINE})

    def __init__(self, address: str, *, protocol: Protocol_ = "grpc",
                 tensor_maps: Mapping[str, TensorMap | Mapping[str, Any]] | None = None,
                 model_config: bool = True, max_batch_size: int = 64,
                 timeout: float = 30.0) -> None:
        if protocol not in ("http", "grpc"):
            raise ConfigError(f"unknown Triton protocol {protocol!r}",
                              hint="use triton+http://HOST:8000 or triton+grpc://HOST:8001")
        self.address = address
        self.protocol: Protocol_ = protocol
        self.tensor_maps = {str(k): TensorMap.coerce(v) for k, v in (tensor_maps or {}).items()}
        self.model_config = model_config
        self.max_batch_size = max_batch_size
        self.timeout = timeout
        self._module: Any = None
        self._raw_inputs = False  # set by _mod(): gRPC inputs go out as wire bytes
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = \
            weakref.WeakKeyDictionary()
        self._configs: dict[tuple[str, str], TensorMap | None] = {}
        self._outputs: dict[tuple[str, str], list[Any]] = {}
        self._closing: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path, **options: Any) -> Self:
        """``triton+http://HOST:PORT`` or ``triton+grpc://HOST:PORT`` with the options above."""
        protocol = url.driver
        if url.scheme not in ("triton+http", "triton+grpc") or protocol not in ("http", "grpc"):
            raise ConfigError(f"TritonServing cannot serve scheme {url.scheme!r}",
                              hint="use triton+http://HOST:8000 or triton+grpc://HOST:8001")
        url = url.with_options(options)
        url.check_options(_OPTIONS, what="triton")
        if url.path.strip("/"):
            raise ConfigError(f"{url.redacted()} has a path; Triton URLs take none",
                              hint="write triton+grpc://HOST:PORT")
        maps: Any = url.value("tensor_maps")
        if isinstance(maps, str):
            path = Path(maps) if Path(maps).is_absolute() else base_dir / maps
            try:
                maps = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read tensor maps from {path}: {exc}",
                                  hint='write a JSON object {"model": {"inputs": [...]}}'
                                  ) from exc
        return cls(url.address, protocol="grpc" if protocol == "grpc" else "http",
                   tensor_maps=maps, model_config=url.flag("model_config", True),
                   max_batch_size=url.int_option("max_batch_size", 64, min=0),
                   timeout=url.seconds_option("timeout", 30.0, min=0.001))

    # ------------------------------------------------------------------ clients
    def _mod(self) -> Any:
        if self._module is None:
            try:
                if self.protocol == "grpc":
                    import tritonclient.grpc.aio as mod
                else:
                    import tritonclient.http.aio as mod
            except (ImportError, RuntimeError) as exc:  # RuntimeError: extra not installed
                raise ConfigError(f"tritonclient[{self.protocol}] is not installed",
                                  hint='pip install "aios-mesh[triton]"') from exc
            self._module = mod
            self._raw_inputs = self.protocol == "grpc" and _takes_raw_content(mod)
        return self._module

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._mod().InferenceServerClient(self.address)
            self._clients[loop] = client
        return client

    def _drop_client(self) -> None:
        """Forget this loop's client after a transport failure: a gRPC channel that saw the
        server go away backs off reconnecting for up to minutes, so the next call after a
        restart gets a fresh channel instead."""
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            task = loop.create_task(client.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close this loop's client; clients of other (still running) loops are closed there."""
        clients = list(self._clients.items())
        self._clients = weakref.WeakKeyDictionary()
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - aclose is awaited, so a loop runs
            current = None
        for loop, client in clients:
            with contextlib.suppress(Exception):
                if loop is current:
                    await client.close()
                elif loop.is_running() and not loop.is_closed():
                    asyncio.run_coroutine_threadsafe(client.close(), loop)

    # ------------------------------------------------------------------ errors
    def _where(self) -> str:
        return f"triton+{self.protocol}://{self.address}"

    def translate(self, exc: BaseException, *, label: str) -> MeshError:
        """Map a tritonclient / transport exception to the mesh's error tree."""
        if isinstance(exc, MeshError):
            return exc
        if isinstance(exc, TimeoutError | asyncio.TimeoutError):
            return BackendTimeout(f"Triton at {self._where()} did not answer {label} in time",
                                  hint="raise the capability's slo.timeout_s or check the "
                                       "server's load")
        status_fn = getattr(exc, "status", None)
        message_fn = getattr(exc, "message", None)
        if callable(status_fn) and callable(message_fn):  # InferenceServerException
            status = str(status_fn() or "")
            msg = _first_line(str(message_fn() or ""))
            if status in _NOT_FOUND or "unknown model" in msg.lower():
                return NotFound(f"Triton at {self._where()}: {msg}",
                                hint="the model or version is not loaded there: check "
                                     "the registry version and `aios-mesh serve triton` "
                                     "(Triton version = registry version)")
            if status in _INVALID or status == "":
                return InvalidInput(f"Triton rejected the request for {label}: {msg}",
                                    hint="the payload does not fit the model's tensors; "
                                         "compare it with the model's config "
                                         "(docs/adapters/triton.md)")
            if status in _DEADLINE:
                return BackendTimeout(f"Triton at {self._where()} hit its deadline for "
                                      f"{label}: {msg}",
                                      hint="raise the capability's slo.timeout_s")
            return BackendUnavailable(f"Triton at {self._where()} failed {label} "
                                      f"({status}): {msg}",
                                      hint="check that tritonserver is up and the model "
                                           "loads; see its log")
        if isinstance(exc, OSError | ConnectionError) or \
                type(exc).__module__.startswith(("aiohttp", "grpc")):
            return BackendUnavailable(f"cannot reach Triton at {self._where()}: "
                                      f"{type(exc).__name__}: {exc}",
                                      hint="start it (aios-mesh serve triton NAME@ALIAS) or "
                                           "fix the URL")
        return BackendUnavailable(f"Triton call {label} failed: {type(exc).__name__}: {exc}",
                                  hint="see the chained exception")

    # ------------------------------------------------------------------ health
    async def health(self) -> None:
        """Raise :class:`BackendUnavailable` unless the server is live and ready."""
        client = self._client()
        try:
            async with asyncio.timeout(5.0):
                live = await client.is_server_live()
                ready = await client.is_server_ready()
        except Exception as exc:
            raise self.translate(exc, label="health") from exc
        if not (live and ready):
            raise BackendUnavailable(f"Triton at {self._where()} is "
                                     f"{'not live' if not live else 'live but not ready'}",
                                     hint="wait for its models to load, or see its log")

    # ------------------------------------------------------------------ tensor maps
    async def tensor_map(self, model: ModelRef,
                         payload: Mapping[str, Any] | None = None) -> TensorMap:
        """The map used for ``model`` (option > Triton model config > payload default)."""
        given = self.tensor_maps.get(model.name)
        if given is not None:
            return given
        key = (model.name, model.version)
        if self.model_config:
            if key not in self._configs:
                client = self._client()
                try:
                    async with asyncio.timeout(self.timeout):
                        if self.protocol == "grpc":
                            config = await client.get_model_config(
                                model.name, model.version, as_json=True)
                        else:
                            config = await client.get_model_config(model.name, model.version)
                except Exception as exc:
                    raise self._failed(exc, f"config of {model.name}/{model.version}"
                                       ) from exc
                self._configs[key] = TensorMap.from_triton_config(config)
            found = self._configs[key]
            if found is not None:
                return found
        return TensorMap.for_payload(payload or {}, max_batch_size=self.max_batch_size)

    def _requested(self, model: ModelRef, tmap: TensorMap) -> list[Any] | None:
        # Triton answers with every output unless asked for some; a map read from the model's
        # own config names all of them, so only a map given as an option (perhaps a subset)
        # is sent along — the list costs the server and the client a little on every call.
        if not tmap.outputs or model.name not in self.tensor_maps:
            return None
        key = (model.name, model.version)
        found = self._outputs.get(key)
        if found is None:
            mod = self._mod()
            if self.protocol == "grpc":
                found = [mod.InferRequestedOutput(t.name) for t in tmap.outputs]
            else:
                found = [mod.InferRequestedOutput(t.name, binary_data=True)
                         for t in tmap.outputs]
            self._outputs[key] = found
        return found

    # ------------------------------------------------------------------ inference
    @staticmethod
    def _version(model: ModelRef) -> str:
        version = str(model.version)
        if not version.isdigit() or int(version) < 1:
            raise NotFound(f"model {model.name} version {version!r} cannot be served by "
                           "Triton", hint="Triton versions are positive integers: resolve "
                                          "the model through the registry (name@alias)")
        return version

    async def _send(self, client: Any, model: ModelRef, version: str, tmap: TensorMap,
                    tensors: list[tuple[Any, np.ndarray[Any, Any] | RawTensor]], n: int,
                    batched: bool) -> list[Prediction]:
        mod = self._mod()
        inputs = []
        for spec, arr in tensors:
            tensor = mod.InferInput(spec.name, list(arr.shape), spec.dtype)
            if isinstance(arr, RawTensor):  # only when _takes_raw_content(mod)
                tensor._raw_content = arr.raw
            elif self.protocol == "http":
                tensor.set_data_from_numpy(arr, binary_data=True)
            else:
                tensor.set_data_from_numpy(arr)
            inputs.append(tensor)
        outputs = self._requested(model, tmap)
        if self.protocol == "grpc":
            # No gRPC deadline (client_timeout): infer_batch's asyncio.timeout cancels the
            # call, and grpc.aio cancels the RPC with it. A deadline costs ~0.13 ms per call
            # in grpc's C core here (measured: benchmarks/serving_triton.py), more than the
            # whole adapter; the price is that the server is not told when the caller gives up.
            result = await client.infer(model.name, inputs, model_version=version,
                                        outputs=outputs)
            response = result.get_response()
            answered = str(response.model_version)
            raw = response.raw_output_contents
            if len(raw) == len(response.outputs):
                # Triton answers in raw_output_contents: decode those bytes directly.
                arrays: dict[str, tuple[str, Any]] = {
                    o.name: (o.datatype, RawTensor(o.datatype, tuple(o.shape), raw[i]))
                    for i, o in enumerate(response.outputs)}
            else:  # typed contents (another KServe server): tritonclient reads those
                arrays = {o.name: (o.datatype, result.as_numpy(o.name))
                          for o in response.outputs}
        else:
            result = await client.infer(model.name, inputs, model_version=version,
                                        outputs=outputs)
            response = result.get_response()
            answered = str(response.get("model_version", version))
            arrays = {o["name"]: (o["datatype"], result.as_numpy(o["name"]))
                      for o in response.get("outputs", ())}
        label = f"{model.name}/{version}"
        if answered and answered != version:
            raise InvalidOutput(f"asked {label}, Triton answered with version {answered}",
                                hint="the server's version policy does not honour the pin")
        decoded = decode_outputs(arrays, tmap, n, batched=batched, label=label)
        return [Prediction(doc, confidence=conf, usage=Usage(calls=1)) for doc, conf in decoded]

    async def infer_batch(self, model: ModelRef, payloads: Sequence[Mapping[str, Any]], *,
                          timeout: float | None = None) -> list[Prediction]:
        if not payloads:
            return []
        for item in payloads:
            if not isinstance(item, Mapping):
                raise InvalidInput(f"a Triton payload is a mapping, not {type(item).__name__}",
                                   hint="send one JSON object per item")
        version = self._version(model)
        limit = timeout if timeout is not None else self.timeout
        label = f"{model.name}/{version}"
        try:
            async with asyncio.timeout(limit):
                client = self._client()
                tmap = await self.tensor_map(model, payloads[0])
                size = tmap.max_batch_size
                if size > 0:
                    chunks = [payloads[i:i + size] for i in range(0, len(payloads), size)]
                    encoded = [encode_inputs(tmap, c, batched=True, raw=self._raw_inputs)
                               for c in chunks]
                else:
                    chunks = [[p] for p in payloads]
                    encoded = [encode_inputs(tmap, c, batched=False, raw=self._raw_inputs)
                               for c in chunks]
                if len(chunks) == 1:
                    return await self._send(client, model, version, tmap, encoded[0],
                                            len(chunks[0]), size > 0)
                results = await asyncio.gather(
                    *(self._send(client, model, version, tmap, enc, len(chunk), size > 0)
                      for chunk, enc in zip(chunks, encoded, strict=True)),
                    return_exceptions=True)
        except MeshError:
            raise
        except Exception as exc:
            raise self._failed(exc, label) from exc
        out: list[Prediction] = []
        for res in results:
            if isinstance(res, BaseException):
                raise self._failed(res, label) from res
            out.extend(res)
        return out

    def _failed(self, exc: BaseException, label: str) -> MeshError:
        error = self.translate(exc, label=label)
        if self.protocol == "grpc" and isinstance(error, BackendUnavailable | BackendTimeout):
            self._drop_client()
        return error
