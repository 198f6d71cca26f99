"""What the local and remote Flyte orchestrators share: naming, loading, output mapping."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from aios_mesh.errors import ConfigError, InvalidInput, NotFound

__all__ = ["flyte_name", "load_entity", "outputs_dict", "split_ref"]


def split_ref(workflow: str) -> tuple[str, str]:
    """``"pkg.mod:wf"`` → ``("pkg.mod", "wf")``, or :class:`InvalidInput` saying how to write it."""
    module, sep, attr = workflow.partition(":")
    if not sep or not module or not attr or ":" in attr:
        raise InvalidInput(f"workflow {workflow!r} is not a 'module:workflow' reference",
                           hint="write e.g. 'my_flows.invoices:batch_wf'")
    return module, attr


def flyte_name(workflow: str) -> str:
    """The name Flyte registers ``"pkg.mod:wf"`` under: ``"pkg.mod.wf"``."""
    module, attr = split_ref(workflow)
    return f"{module}.{attr}"


def load_entity(workflow: str) -> Any:
    """Import ``module`` and return its flytekit workflow, task or launch plan ``name``."""
    module_name, attr = split_ref(workflow)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise NotFound(f"no module {module_name!r} for workflow {workflow!r}",
                           hint="check the spelling and that the module is on sys.path",
                           workflow=workflow) from exc
        raise ConfigError(f"importing {module_name!r} failed: {exc}",
                          hint=f"install {exc.name!r} where the workflows run",
                          workflow=workflow) from exc
    except Exception as exc:
        raise ConfigError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}",
                          hint="fix the workflow module so that it imports cleanly",
                          workflow=workflow) from exc
    try:
        entity = getattr(module, attr)
    except AttributeError as exc:
        raise NotFound(f"module {module_name!r} has no workflow {attr!r}",
                       hint="check the name after ':'", workflow=workflow) from exc
    if not callable(entity) or not hasattr(entity, "python_interface"):
        raise InvalidInput(f"{workflow!r} is not a flytekit workflow, task or launch plan",
                           hint="decorate it with @flytekit.workflow", workflow=workflow)
    return entity


def check_inputs(entity: Any, workflow: str, inputs: Mapping[str, Any]) -> None:
    """Reject input names the workflow does not declare (before anything runs)."""
    declared = set(entity.python_interface.inputs)
    unknown = sorted(set(inputs) - declared)
    if unknown:
        raise InvalidInput(f"{workflow!r} has no input(s) {', '.join(map(repr, unknown))}",
                           hint=f"its inputs are: {', '.join(sorted(declared)) or '(none)'}",
                           workflow=workflow)


def outputs_dict(names: list[str], result: Any) -> dict[str, Any]:
    """Name a local call's result the way Flyte does (``o0`` for a single unnamed output)."""
    if not names:
        return {}
    if len(names) == 1:
        return {names[0]: result}
    return dict(zip(names, tuple(result), strict=True))
