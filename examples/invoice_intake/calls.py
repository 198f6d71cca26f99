"""Where the intake's capability calls go — chosen by configuration, never in the business code.

* By default: the mesh of this task process (:func:`aios_mesh_flyte.invoke` on the mesh that
  ``$AIOS_MESH_CONFIG`` describes), as every Flyte task of the embedded and servers profiles.
* With ``AIOS_MESH_GATEWAY_URL`` set: an aios-mesh gateway, through
  :class:`aios_mesh.client.MeshClient`. Over HTTP the tenant comes from the API key, so each
  tenant calls with its own key: ``AIOS_MESH_GATEWAY_KEYS`` names a JSON file
  ``{"tenant": "amk_..."}`` (``--profile gateway`` writes one, readable by its owner only), or
  ``AIOS_MESH_API_KEY`` is the one key of a single-tenant run.

Either way a call answers the same JSON-safe step ``{"output", "record_id", "outcome",
"review_id", "error"}``: ``ok`` with the output, ``review`` with the review id, ``denied`` or
``rejected`` with the error (answers that follow from the payload and the policy). Every
other failure raises its :class:`~aios_mesh.errors.MeshError` after the call was recorded.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aios_mesh.errors import ConfigError, InvalidInput, PolicyDenied

if TYPE_CHECKING:
    from aios_mesh.client import MeshClient

__all__ = ["API_KEY_ENV", "GATEWAY_ENV", "KEYS_ENV", "close_clients", "gateway_client",
           "invoke"]

#: The gateway's base URL; unset, calls stay in this process.
GATEWAY_ENV = "AIOS_MESH_GATEWAY_URL"
#: A JSON file mapping each tenant to its API key.
KEYS_ENV = "AIOS_MESH_GATEWAY_KEYS"
#: One API key for every call (a single-tenant run).
API_KEY_ENV = "AIOS_MESH_API_KEY"

_LOCK = threading.Lock()
_CLIENTS: dict[tuple[str, str], MeshClient] = {}


def _api_key(tenant: str) -> str:
    path = os.environ.get(KEYS_ENV)
    if path:
        try:
            keys = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the gateway keys file {path} "
                              f"({type(exc).__name__})",
                              hint=f"point {KEYS_ENV} at a JSON file "
                                   '{"tenant": "amk_..."}') from None
        key = keys.get(tenant) if isinstance(keys, dict) else None
        if not isinstance(key, str):
            raise ConfigError(f"the gateway keys file {path} holds no key for tenant "
                              f"{tenant!r}",
                              hint="add one: aios-mesh keys create --tenant "
                                   f"{tenant} --caller invoice-intake")
        return key
    key = os.environ.get(API_KEY_ENV)
    if not key:
        raise ConfigError(f"{GATEWAY_ENV} is set but no API key is",
                          hint=f"set {KEYS_ENV} (a file of keys per tenant) or {API_KEY_ENV}")
    return key


def gateway_client(tenant: str) -> MeshClient | None:
    """The client that calls the gateway for ``tenant``; None when calls stay in process."""
    url = os.environ.get(GATEWAY_ENV)
    if not url:
        return None
    key = _api_key(tenant)
    with _LOCK:
        client = _CLIENTS.get((url, key))
        if client is None:
            from aios_mesh.client import MeshClient

            client = _CLIENTS[(url, key)] = MeshClient(url, api_key=key)
        return client


def close_clients() -> None:
    """Close every gateway client this process opened."""
    with _LOCK:
        clients = list(_CLIENTS.values())
        _CLIENTS.clear()
    for client in clients:
        client.close()


def invoke(capability: str, payload: Any, *, tenant: str, caller: str,
           attributes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Call ``capability`` for ``tenant`` where the configuration says; the record's parent
    is the workflow run this task belongs to. See the module docstring for the answer."""
    from aios_mesh_flyte import current_run
    from aios_mesh_flyte import invoke as in_process

    client = gateway_client(tenant)
    if client is None:
        return in_process(capability, payload, tenant=tenant, caller=caller,
                          attributes=attributes)
    run = current_run()
    try:
        result = client.invoke(capability, payload, tenant=tenant, attributes=attributes,
                               parent=run.as_parent() if run is not None else None)
    except (PolicyDenied, InvalidInput) as exc:
        if exc.record_id is None:  # refused before it was a call: a fault, not an answer
            raise
        return {"output": None, "record_id": exc.record_id, "outcome": exc.outcome,
                "review_id": None, "error": exc.to_dict()}
    return {"output": result.output, "record_id": result.record_id,
            "outcome": result.outcome, "review_id": result.review_id, "error": None}
