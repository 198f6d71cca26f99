"""In-process serving (the embedded default) against the Serving conformance suite.

Run twice: with echo-upper registered as a Python callable, and with a ref whose source is
``python:aios_mesh.testing.conformance.serving:echo_upper`` (loaded on first use).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aios_mesh.backends import DEFAULT_URLS, load_adapter
from aios_mesh.embedded.serving import InProcessServing
from aios_mesh.ports.registry import ModelRef
from aios_mesh.testing.conformance.serving import (
    ECHO_UPPER_SOURCE,
    ServingBasic,
    ServingErrors,
    ServingStreaming,
    echo_upper,
    echo_upper_stream,
)

URL = DEFAULT_URLS["serving"]  # inprocess://


class TestInProcessServing(ServingBasic, ServingErrors, ServingStreaming):
    @pytest.fixture
    async def adapter(self, tmp_path: Path) -> AsyncIterator[InProcessServing]:
        serving = load_adapter("serving", URL, base_dir=tmp_path)
        assert isinstance(serving, InProcessServing)
        yield serving
        await serving.aclose()

    @pytest.fixture(params=["registered", "python-source"])
    def model_ref(self, request: pytest.FixtureRequest, adapter: InProcessServing) -> ModelRef:
        if request.param == "registered":
            return adapter.register("echo-upper", "1", echo_upper)
        return ModelRef(name="echo-upper", version="1", source=ECHO_UPPER_SOURCE)

    @pytest.fixture
    def stream_model_ref(self, adapter: InProcessServing) -> ModelRef:
        return adapter.register("echo-upper-stream", "1", echo_upper, stream=echo_upper_stream)
