"""`import aios_mesh` must not import any backend SDK (they load when an adapter is used)."""

import subprocess
import sys

import orjson

HEAVY = ["mlflow", "flytekit", "bentoml", "tritonclient", "qdrant_client", "qdrant_edge",
         "regopy", "kafka", "nats", "redis", "psycopg", "openlineage", "sklearn", "pandas",
         "numpy", "httpx", "torch"]


def loaded_after(code: str) -> set[str]:
    script = f"{code}\nimport sys, orjson\nprint(orjson.dumps(sorted(sys.modules)).decode())"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout
    return {m.split(".")[0] for m in orjson.loads(out)}


def test_import_aios_mesh_imports_no_backend_sdk() -> None:
    assert not loaded_after("import aios_mesh") & set(HEAVY)


def test_building_a_mesh_and_a_call_spec_imports_no_backend_sdk() -> None:
    code = ("from aios_mesh import Mesh, capability\n"
            "from aios_mesh.config import MeshConfig\n"
            "m = Mesh(MeshConfig())\n")
    assert not loaded_after(code) & set(HEAVY)
