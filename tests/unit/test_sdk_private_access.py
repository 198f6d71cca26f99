"""Every private attribute of a third-party SDK an adapter touches, one test each.

These tests fail loudly, naming the SDK, its installed version and the attribute, when an SDK
release drops or changes what an adapter relies on. Each such SDK has an upper version bound
in ``pyproject.toml`` (the next minor release after the one tested here); raise the bound
only after this module passes on the new release.

The private accesses (found by scanning ``adapters/`` for ``obj._name`` on objects that are
not the adapter's own, and for ``getattr(obj, "_name")``), as of this writing:

* **kafka-python** (pin ``<3.1``), ``aios_mesh_kafka/bus.py`` (``_settle``,
  ``_keepalive``): ``KafkaConsumer._coordinator`` and, on the coordinator it holds,
  ``need_rejoin()``, ``ensure_active_group(timeout_ms=)`` and ``stable()`` — finishing a
  group join in one call (the kafka-python 3.0 rejoin trap, docs/adapters/kafka.md).
* **nats-py** (pin ``<2.17``), ``aios_mesh_nats/bus.py``: ``Msg._client`` — a nak sent as
  a request, answered once the server processed it.
* **tritonclient** (pin ``<2.74``; ``serving/triton/client-requirements.txt`` pins
  ``==2.73.0``), ``aios_mesh_triton/serving.py``: ``grpc.InferInput._raw_content`` and
  ``_get_content()`` — inputs sent as prepared wire bytes.
* **flytekit** (pin ``<1.17``), ``aios_mesh_flyte/local.py``:
  ``core.local_cache.LocalTaskCache._initialized`` and ``._cache`` — pointing flytekit's
  local task cache at the mesh's folder.
* **regopy** (pin ``<1.6``), ``aios_mesh_regopy/_engine.py``: ``Interpreter._impl`` and
  ``Bundle._impl``, handed to the native binding ``regopy.rego_shared``
  (``rego_set_input``, ``rego_set_input_term``, ``rego_bundle_query_entrypoint``,
  ``rego_output_ok``, ``rego_output_string``, ``rego_bundle_node``).
* **CPython** (bounded by ``requires-python``), ``aios_mesh_flyte/tasks.py``:
  ``threading._register_atexit`` (with a plain ``atexit`` fallback) and ``sys._getframe``.

Not private SDK attributes (and so not pinned for this reason): the ``_aios_mesh_*``
attributes the Flyte adapter sets on its own workflow and task objects, and the adapters'
own ``_``-names. qdrant-client, qdrant-edge-py, mlflow, openlineage-python, bentoml, redis,
psycopg and httpx are used through their public API only.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import threading
from importlib.metadata import version
from typing import Any

import numpy as np


def _gone(sdk: str, attribute: str, adapter: str) -> str:
    return (f"{sdk} {version(sdk)} no longer has {attribute}, which {adapter} uses: adapt the "
            f"adapter to this release, then raise the {sdk} bound in pyproject.toml")


# --------------------------------------------------------------------------- kafka-python


def _kafka_coordinator() -> Any:
    from kafka import KafkaConsumer

    # api_version given: the constructor probes no broker
    consumer = KafkaConsumer(bootstrap_servers="127.0.0.1:1", api_version=(2, 5, 0),
                             group_id="aios-mesh-private-access", enable_auto_commit=False)
    try:
        coordinator = getattr(consumer, "_coordinator", None)
        assert coordinator is not None, _gone("kafka-python", "KafkaConsumer._coordinator",
                                              "aios_mesh_kafka/bus.py")
        return coordinator
    finally:
        consumer.close()


def test_kafka_consumer_coordinator() -> None:
    from kafka.coordinator.consumer import ConsumerCoordinator

    assert isinstance(_kafka_coordinator(), ConsumerCoordinator), _gone(
        "kafka-python", "KafkaConsumer._coordinator (a ConsumerCoordinator)",
        "aios_mesh_kafka/bus.py")


def test_kafka_coordinator_join_methods() -> None:
    coordinator = _kafka_coordinator()
    for name in ("need_rejoin", "ensure_active_group", "stable"):
        assert callable(getattr(coordinator, name, None)), _gone(
            "kafka-python", f"KafkaConsumer._coordinator.{name}()", "aios_mesh_kafka/bus.py")
    assert "timeout_ms" in inspect.signature(coordinator.ensure_active_group).parameters, \
        _gone("kafka-python", "ensure_active_group(timeout_ms=...)", "aios_mesh_kafka/bus.py")
    assert coordinator.need_rejoin() in (True, False)
    assert coordinator.stable() in (True, False)


# --------------------------------------------------------------------------- nats-py


def test_nats_msg_client() -> None:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

    fields = {f.name for f in dataclasses.fields(Msg)}
    assert "_client" in fields, _gone("nats-py", "Msg._client", "aios_mesh_nats/bus.py")
    params = inspect.signature(Client.request).parameters
    assert {"subject", "payload", "timeout"} <= set(params), _gone(
        "nats-py", "Msg._client.request(subject, payload, timeout=)", "aios_mesh_nats/bus.py")


# --------------------------------------------------------------------------- tritonclient


def test_tritonclient_grpc_raw_content() -> None:
    import tritonclient.grpc.aio as grpc_aio
    from aios_mesh_triton.serving import _takes_raw_content
    from aios_mesh_triton.tensors import RawTensor

    probe = grpc_aio.InferInput("probe", [1], "INT64")
    probe.set_data_from_numpy(np.array([7], dtype=np.int64))
    assert isinstance(getattr(probe, "_raw_content", None), bytes), _gone(
        "tritonclient", "grpc.InferInput._raw_content", "aios_mesh_triton/serving.py")
    assert callable(getattr(probe, "_get_content", None)), _gone(
        "tritonclient", "grpc.InferInput._get_content()", "aios_mesh_triton/serving.py")
    assert probe._raw_content == RawTensor.pack("INT64", (1,), [7]).raw, _gone(
        "tritonclient", "grpc.InferInput._raw_content holding the little-endian tensor bytes",
        "aios_mesh_triton/serving.py")
    # the adapter's own probe agrees (it falls back to set_data_from_numpy, slower, if not)
    assert _takes_raw_content(grpc_aio), _gone(
        "tritonclient", "grpc.InferInput._get_content() returning _raw_content",
        "aios_mesh_triton/serving.py")


# --------------------------------------------------------------------------- flytekit


def test_flytekit_local_task_cache_internals() -> None:
    from flytekit.core import local_cache

    cache = local_cache.LocalTaskCache
    assert isinstance(getattr(cache, "_initialized", None), bool), _gone(
        "flytekit", "LocalTaskCache._initialized", "aios_mesh_flyte/local.py")
    assert "_cache" in getattr(cache, "__annotations__", {}), _gone(
        "flytekit", "LocalTaskCache._cache", "aios_mesh_flyte/local.py")
    source = inspect.getsource(cache.initialize)
    assert "_cache =" in source and "_initialized = True" in source, _gone(
        "flytekit", "LocalTaskCache.initialize() setting _cache and _initialized",
        "aios_mesh_flyte/local.py")
    assert isinstance(getattr(local_cache, "CACHE_LOCATION", None), str), _gone(
        "flytekit", "flytekit.core.local_cache.CACHE_LOCATION", "aios_mesh_flyte/local.py")


# --------------------------------------------------------------------------- regopy


def test_regopy_interpreter_impl() -> None:
    import regopy

    assert getattr(regopy.Interpreter(), "_impl", None) is not None, _gone(
        "regopy", "Interpreter._impl", "aios_mesh_regopy/_engine.py")


def test_regopy_bundle_impl() -> None:
    import regopy

    interpreter = regopy.Interpreter()
    interpreter.add_module("probe", "package probe\nallow := true")
    bundle = interpreter.build(None, ["probe/allow"])
    assert bundle.ok()
    assert getattr(bundle, "_impl", None) is not None, _gone(
        "regopy", "Bundle._impl", "aios_mesh_regopy/_engine.py")


def test_regopy_native_binding() -> None:
    from regopy import rego_shared as native

    for name in ("rego_set_input", "rego_set_input_term", "rego_bundle_query_entrypoint",
                 "rego_output_ok", "rego_output_string", "rego_bundle_node"):
        assert callable(getattr(native, name, None)), _gone(
            "regopy", f"regopy.rego_shared.{name}", "aios_mesh_regopy/_engine.py")


# --------------------------------------------------------------------------- CPython


def test_threading_register_atexit() -> None:
    assert callable(getattr(threading, "_register_atexit", None)), (
        f"Python {sys.version.split()[0]} has no threading._register_atexit: "
        "aios_mesh_flyte/tasks.py falls back to atexit (which runs after the thread pools "
        "stopped) — find the new hook")


def test_sys_getframe() -> None:
    assert callable(getattr(sys, "_getframe", None)), (
        f"Python {sys.version.split()[0]} has no sys._getframe, which "
        "aios_mesh_flyte/tasks.py uses to find the running task and the caller's module")
