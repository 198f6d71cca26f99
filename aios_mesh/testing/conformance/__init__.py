"""Conformance suites, one module per port.

Each module offers feature mixins (``<Port>Basic``, ``<Port>Filtering`` ...) that expect an
``adapter`` fixture. An adapter's test file is a few lines::

    class TestEdge(RetrievalBasic, RetrievalFiltering, RetrievalTenancy):
        @pytest.fixture
        async def adapter(self, tmp_path):
            a = EdgeRetrieval.from_url(parse_url("qdrant-edge:///q"), base_dir=tmp_path)
            yield a
            await a.aclose()
"""
