"""Conformance suite for the Retrieval port.

Mix the classes your adapter supports into one test class and give it an ``adapter`` fixture
(a fresh, empty index; closed by the fixture)::

    class TestMine(RetrievalBasic, RetrievalFiltering, RetrievalTenancy, RetrievalErrors,
                   RetrievalPersistence):
        @pytest.fixture
        async def adapter(self, tmp_path):
            a = load_adapter("retrieval", "mine:///idx", base_dir=tmp_path)
            yield a
            await a.aclose()

        @pytest.fixture
        def reopen(self, tmp_path):          # only RetrievalPersistence needs it
            return lambda: load_adapter("retrieval", "mine:///idx", base_dir=tmp_path)

The contract the mixins pin down:

* ``RetrievalBasic``: results come best first (scores monotone), ``limit`` is honoured,
  upsert replaces by id, delete removes (unknown ids are a no-op), payloads and ids round-trip
  with their types, ``aclose()`` is idempotent; with ``Feature.SNAPSHOT`` the snapshot id is a
  non-empty string that is stable while nothing is written and changes after every upsert and
  delete (without it, ``snapshot()`` raises ``FeatureNotSupported``). A declared feature
  must come with its mixin (``FILTERED_QUERY`` → ``RetrievalFiltering``, ``DURABLE`` →
  ``RetrievalPersistence``).
* ``RetrievalFiltering``: ``eq`` (str, int, bool — ``True`` never matches ``1``), ``any``
  (all str or all int), ``range`` (``gte``/``lte``) on top-level, nested (``a.b``) and array
  fields (an array matches when one element does), ``must`` AND-ed, ``must_not`` removed;
  the filter applies before ``limit``.
* ``RetrievalTenancy`` (adversarial): a tenant never sees, overwrites or deletes another
  tenant's point, whatever the filter, payload or id. A filter naming the reserved tenant key
  (``tenant_key``, also quoted or as a path prefix) and a payload carrying it raise
  ``InvalidInput``; returned payloads never contain it.
* ``RetrievalErrors``: a wrong vector size, NaN/inf in a vector, a bad limit, id, tenant or
  collection name raise ``InvalidInput`` and write nothing; **a query (or snapshot) on a
  collection that was never written to raises ``NotFound``**; deleting from one is a no-op.
  Every error carries a ``hint``.

Collections are named ``conf_<random>`` so a suite can run against a shared server. Vectors
have ``dim`` (8) components; the fixtures for ordering use unit vectors, so cosine, dot and
euclid all rank them the same way.
"""

from __future__ import annotations

import itertools
import math
import random
import uuid
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

import pytest

from aios_mesh.errors import FeatureNotSupported, InvalidInput, MeshError, NotFound
from aios_mesh.ports.base import Feature
from aios_mesh.ports.retrieval import Condition, Filter, Point, Retrieval, ScoredPoint

__all__ = [
    "RetrievalBasic",
    "RetrievalErrors",
    "RetrievalFiltering",
    "RetrievalPersistence",
    "RetrievalTenancy",
]


def _ids(hits: Sequence[ScoredPoint]) -> list[int | str]:
    return [h.id for h in hits]


def _monotone(scores: Sequence[float]) -> bool:
    """Best first: non-increasing (similarities) or non-decreasing (distances)."""
    pairs = list(itertools.pairwise(scores))
    eps = 1e-5
    return all(a >= b - eps for a, b in pairs) or all(a <= b + eps for a, b in pairs)


def _assert_hint(exc: MeshError) -> None:
    assert exc.hint, f"{type(exc).__name__} without a hint: {exc.message}"


class _RetrievalBase:
    """Shared helpers; the concrete class provides the ``adapter`` fixture."""

    #: Vector size used by the suite.
    dim: ClassVar[int] = 8
    #: The payload key the adapter reserves for the tenant (may be overridden).
    tenant_key: ClassVar[str] = "_tenant"

    @pytest.fixture
    def collection(self) -> str:
        """A fresh collection name."""
        return f"conf_{uuid.uuid4().hex[:12]}"

    def vec(self, *xs: float) -> list[float]:
        """A unit vector of ``dim`` components starting with ``xs``."""
        v = [*xs, *([0.0] * (self.dim - len(xs)))]
        norm = math.sqrt(sum(x * x for x in v)) or 1.0
        return [x / norm for x in v]

    def angle(self, theta: float) -> list[float]:
        """Unit vector at angle ``theta`` from the first axis (towards the second)."""
        return self.vec(math.cos(theta), math.sin(theta))

    def random_vectors(self, n: int, seed: int = 7) -> list[list[float]]:
        rng = random.Random(seed)
        return [self.vec(*(rng.gauss(0, 1) for _ in range(self.dim))) for _ in range(n)]

    async def everything(self, adapter: Retrieval, collection: str, tenant: str,
                         filter: Filter | None = None) -> list[ScoredPoint]:
        """All of ``tenant``'s points (up to 1000) nearest the first axis."""
        return await adapter.query(collection, self.vec(1.0), tenant=tenant, limit=1000,
                                   filter=filter)


class RetrievalBasic(_RetrievalBase):
    """Upsert, ordered query, limit, replace, delete, round-trips, snapshot ids."""

    async def test_is_a_retrieval(self, adapter: Retrieval) -> None:
        assert isinstance(adapter, Retrieval)
        assert isinstance(adapter.features, frozenset)
        assert all(isinstance(f, Feature) for f in adapter.features)

    async def test_declared_features_have_their_suite(self, adapter: Retrieval) -> None:
        if Feature.FILTERED_QUERY in adapter.features:
            assert isinstance(self, RetrievalFiltering), "add RetrievalFiltering to the class"
        if Feature.DURABLE in adapter.features:
            assert isinstance(self, RetrievalPersistence), "add RetrievalPersistence"

    async def test_query_orders_best_first(self, adapter: Retrieval, collection: str) -> None:
        thetas = {"a": 0.0, "b": 0.4, "c": 1.0, "d": math.pi / 2, "e": math.pi}
        points = [Point(i, self.angle(t), {"name": n})
                  for i, (n, t) in enumerate(reversed(thetas.items()))]
        await adapter.upsert(collection, points, tenant="t1")
        hits = await adapter.query(collection, self.vec(1.0), tenant="t1", limit=10)
        assert [h.payload["name"] for h in hits] == ["a", "b", "c", "d", "e"]
        assert _monotone([h.score for h in hits])
        assert all(isinstance(h.score, float) for h in hits)

    async def test_limit(self, adapter: Retrieval, collection: str) -> None:
        vectors = self.random_vectors(20)
        await adapter.upsert(collection, [Point(i, v) for i, v in enumerate(vectors)],
                             tenant="t1")
        query = vectors[3]
        everything = await adapter.query(collection, query, tenant="t1", limit=50)
        assert len(everything) == 20
        assert everything[0].id == 3
        top5 = await adapter.query(collection, query, tenant="t1", limit=5)
        assert _ids(top5) == _ids(everything)[:5]
        assert len(await adapter.query(collection, query, tenant="t1", limit=1)) == 1

    async def test_default_limit_is_ten(self, adapter: Retrieval, collection: str) -> None:
        await adapter.upsert(collection, [Point(i, v) for i, v in
                                          enumerate(self.random_vectors(15))], tenant="t1")
        assert len(await adapter.query(collection, self.vec(1.0), tenant="t1")) == 10

    async def test_payload_round_trip(self, adapter: Retrieval, collection: str) -> None:
        payload: dict[str, Any] = {
            "text": "Grüße, 世界", "n": 42, "x": 2.5, "ok": True, "no": False, "none": None,
            "tags": ["a", "b"], "nested": {"k": [1, 2, {"deep": "yes"}]}, "neg": -7,
        }
        await adapter.upsert(collection, [Point(1, self.vec(1.0), payload),
                                          Point(2, self.vec(0.0, 1.0))], tenant="t1")
        hits = await adapter.query(collection, self.vec(1.0), tenant="t1")
        assert hits[0].payload == payload
        assert hits[1].payload == {}

    async def test_id_types_round_trip(self, adapter: Retrieval, collection: str) -> None:
        ids: list[int | str] = [0, 7, 2**40, str(uuid.uuid4()), str(uuid.uuid4())]
        await adapter.upsert(collection, [Point(i, self.angle(n * 0.2))
                                          for n, i in enumerate(ids)], tenant="t1")
        hits = await adapter.query(collection, self.vec(1.0), tenant="t1")
        assert _ids(hits) == ids
        assert [type(h.id) for h in hits] == [type(i) for i in ids]

    async def test_upsert_replaces_by_id(self, adapter: Retrieval, collection: str) -> None:
        await adapter.upsert(collection, [Point(1, self.vec(1.0), {"v": 1}),
                                          Point(2, self.vec(0.0, 1.0), {"v": 1})], tenant="t1")
        await adapter.upsert(collection, [Point(1, self.vec(0.0, 0.0, 1.0), {"v": 2})],
                             tenant="t1")
        hits = await adapter.query(collection, self.vec(0.0, 0.0, 1.0), tenant="t1")
        assert [(h.id, h.payload) for h in hits] == [(1, {"v": 2}), (2, {"v": 1})]

    async def test_delete(self, adapter: Retrieval, collection: str) -> None:
        uid = str(uuid.uuid4())
        await adapter.upsert(collection, [Point(1, self.vec(1.0)), Point(2, self.vec(1.0, 1.0)),
                                          Point(uid, self.vec(0.0, 1.0))], tenant="t1")
        await adapter.delete(collection, [1, uid], tenant="t1")
        assert _ids(await self.everything(adapter, collection, "t1")) == [2]
        await adapter.delete(collection, [1, 999, str(uuid.uuid4())], tenant="t1")  # no-op
        await adapter.delete(collection, [], tenant="t1")
        assert _ids(await self.everything(adapter, collection, "t1")) == [2]

    async def test_empty_upsert_is_a_no_op(self, adapter: Retrieval, collection: str) -> None:
        await adapter.upsert(collection, [Point(1, self.vec(1.0))], tenant="t1")
        await adapter.upsert(collection, [], tenant="t1")
        assert _ids(await self.everything(adapter, collection, "t1")) == [1]

    async def test_tenant_without_points_gets_nothing(self, adapter: Retrieval,
                                                      collection: str) -> None:
        await adapter.upsert(collection, [Point(1, self.vec(1.0))], tenant="t1")
        assert await adapter.query(collection, self.vec(1.0), tenant="t2") == []

    async def test_snapshot_id(self, adapter: Retrieval, collection: str) -> None:
        await adapter.upsert(collection, [Point(1, self.vec(1.0))], tenant="t1")
        if Feature.SNAPSHOT not in adapter.features:
            with pytest.raises(FeatureNotSupported):
                await adapter.snapshot(collection)
            return
        s1 = await adapter.snapshot(collection)
        assert isinstance(s1, str)
        assert s1
        await adapter.query(collection, self.vec(1.0), tenant="t1")
        assert await adapter.snapshot(collection) == s1, "a read changed the snapshot id"
        await adapter.upsert(collection, [Point(2, self.vec(0.0, 1.0))], tenant="t1")
        s2 = await adapter.snapshot(collection)
        assert s2 != s1
        assert await adapter.snapshot(collection) == s2
        await adapter.upsert(collection, [Point(2, self.vec(0.0, 0.0, 1.0))], tenant="t1")
        s3 = await adapter.snapshot(collection)
        assert s3 not in {s1, s2}, "replacing a point must change the snapshot id"
        await adapter.delete(collection, [1], tenant="t1")
        s4 = await adapter.snapshot(collection)
        assert s4 not in {s1, s2, s3}

    async def test_snapshot_is_per_collection(self, adapter: Retrieval,
                                              collection: str) -> None:
        if Feature.SNAPSHOT not in adapter.features:
            return  # covered by test_snapshot_id
        other = f"{collection}_b"
        await adapter.upsert(collection, [Point(1, self.vec(1.0))], tenant="t1")
        await adapter.upsert(other, [Point(1, self.vec(1.0))], tenant="t1")
        s1 = await adapter.snapshot(collection)
        await adapter.upsert(other, [Point(2, self.vec(0.0, 1.0))], tenant="t1")
        assert await adapter.snapshot(collection) == s1

    async def test_filter_needs_the_feature(self, adapter: Retrieval, collection: str) -> None:
        await adapter.upsert(collection, [Point(1, self.vec(1.0), {"k": "v"})], tenant="t1")
        flt = Filter(must=(Condition("k", "eq", "v"),))
        if Feature.FILTERED_QUERY in adapter.features:
            assert _ids(await self.everything(adapter, collection, "t1", flt)) == [1]
        else:
            with pytest.raises(FeatureNotSupported):
                await self.everything(adapter, collection, "t1", flt)

    async def test_aclose_is_idempotent(self, adapter: Retrieval, collection: str) -> None:
        await adapter.upsert(collection, [Point(1, self.vec(1.0))], tenant="t1")
        await adapter.aclose()
        await adapter.aclose()


class RetrievalPersistence(_RetrievalBase):
    """Data and snapshot ids survive closing and reopening the same storage.

    Needs a ``reopen`` fixture: a callable that opens a new adapter on the same storage.
    """

    async def test_data_survives_reopen(self, adapter: Retrieval, collection: str,
                                        reopen: Callable[[], Retrieval]) -> None:
        uid = str(uuid.uuid4())
        await adapter.upsert(collection, [Point(1, self.vec(1.0), {"n": 1}),
                                          Point(uid, self.vec(0.0, 1.0), {"n": 2})],
                             tenant="t1")
        await adapter.upsert(collection, [Point(1, self.vec(1.0), {"n": 3})], tenant="t2")
        await adapter.delete(collection, [uid], tenant="t1")
        await adapter.upsert(collection, [Point(uid, self.vec(1.0, 1.0), {"n": 4})],
                             tenant="t1")
        snap = (await adapter.snapshot(collection)
                if Feature.SNAPSHOT in adapter.features else None)
        before = await self.everything(adapter, collection, "t1")
        await adapter.aclose()

        again = reopen()
        try:
            after = await self.everything(again, collection, "t1")
            assert [(h.id, h.payload) for h in after] == [(h.id, h.payload) for h in before]
            assert [(h.id, h.payload) for h in
                    await self.everything(again, collection, "t2")] == [(1, {"n": 3})]
            if snap is not None:
                assert await again.snapshot(collection) == snap
            await again.upsert(collection, [Point(5, self.vec(1.0))], tenant="t1")
            if snap is not None:
                assert await again.snapshot(collection) != snap
        finally:
            await again.aclose()

    async def test_reopen_twice(self, adapter: Retrieval, collection: str,
                                reopen: Callable[[], Retrieval]) -> None:
        await adapter.upsert(collection, [Point(1, self.vec(1.0))], tenant="t1")
        await adapter.aclose()
        for n in range(2):
            again = reopen()
            try:
                await again.upsert(collection, [Point(10 + n, self.vec(0.0, 1.0))], tenant="t1")
            finally:
                await again.aclose()
        last = reopen()
        try:
            assert sorted(cast(list[int], _ids(await self.everything(last, collection, "t1")))
                          ) == [1, 10, 11]
        finally:
            await last.aclose()


class RetrievalFiltering(_RetrievalBase):
    """``eq`` / ``any`` / ``range`` conditions, ``must`` and ``must_not``."""

    tenant: ClassVar[str] = "t-filter"

    @pytest.fixture
    async def seeded(self, adapter: Retrieval, collection: str) -> str:
        """12 points; point ``i`` is the ``i``-th nearest to the first axis."""
        points = []
        for i in range(12):
            payload: dict[str, Any] = {
                "color": ("red", "green", "blue")[i % 3], "size": i, "price": i * 1.5,
                "even": i % 2 == 0, "tags": ["even" if i % 2 == 0 else "odd", f"t{i % 4}"],
                "meta": {"lang": "en" if i < 6 else "de"},
            }
            if i == 0:
                payload["b"] = True
            if i == 1:
                payload["b"] = 1
            points.append(Point(i, self.angle(i * 0.1), payload))
        await adapter.upsert(collection, points, tenant=self.tenant)
        return collection

    async def hits(self, adapter: Retrieval, collection: str, *, must: Sequence[Condition] = (),
                   must_not: Sequence[Condition] = (), limit: int = 100) -> list[int | str]:
        return _ids(await adapter.query(collection, self.vec(1.0), tenant=self.tenant,
                                        limit=limit, filter=Filter(tuple(must),
                                                                   tuple(must_not))))

    async def test_eq_string(self, adapter: Retrieval, seeded: str) -> None:
        assert await self.hits(adapter, seeded, must=[Condition("color", "eq", "red")]) == \
            [0, 3, 6, 9]

    async def test_eq_int(self, adapter: Retrieval, seeded: str) -> None:
        assert await self.hits(adapter, seeded, must=[Condition("size", "eq", 4)]) == [4]

    async def test_eq_bool(self, adapter: Retrieval, seeded: str) -> None:
        assert await self.hits(adapter, seeded, must=[Condition("even", "eq", True)]) == \
            [0, 2, 4, 6, 8, 10]
        assert await self.hits(adapter, seeded, must=[Condition("even", "eq", False)]) == \
            [1, 3, 5, 7, 9, 11]

    async def test_bool_and_int_are_different(self, adapter: Retrieval, seeded: str) -> None:
        assert await self.hits(adapter, seeded, must=[Condition("b", "eq", True)]) == [0]
        assert await self.hits(adapter, seeded, must=[Condition("b", "eq", 1)]) == [1]

    async def test_any(self, adapter: Retrieval, seeded: str) -> None:
        assert await self.hits(adapter, seeded,
                               must=[Condition("color", "any", ["red", "blue"])]) == \
            [0, 2, 3, 5, 6, 8, 9, 11]
        assert await self.hits(adapter, seeded, must=[Condition("size", "any", [11, 1, 5])]) \
            == [1, 5, 11]

    async def test_range(self, adapter: Retrieval, seeded: str) -> None:
        assert await self.hits(adapter, seeded,
                               must=[Condition("price", "range", gte=3.0, lte=9.0)]) == \
            [2, 3, 4, 5, 6]
        assert await self.hits(adapter, seeded, must=[Condition("size", "range", gte=10)]) == \
            [10, 11]
        assert await self.hits(adapter, seeded, must=[Condition("price", "range", lte=1.5)]) \
            == [0, 1]

    async def test_must_is_a_conjunction(self, adapter: Retrieval, seeded: str) -> None:
        assert await self.hits(adapter, seeded, must=[Condition("color", "eq", "red"),
                                                      Condition("even", "eq", True)]) == [0, 6]

    async def test_must_not(self, adapter: Retrieval, seeded: str) -> None:
        assert await self.hits(adapter, seeded, must_not=[Condition("color", "eq", "red")]) == \
            [1, 2, 4, 5, 7, 8, 10, 11]
        assert await self.hits(adapter, seeded, must=[Condition("even", "eq", True)],
                               must_not=[Condition("color", "eq", "red"),
                                         Condition("size", "range", gte=9)]) == [2, 4, 8]

    async def test_array_field_matches_any_element(self, adapter: Retrieval,
                                                   seeded: str) -> None:
        assert await self.hits(adapter, seeded, must=[Condition("tags", "eq", "t1")]) == \
            [1, 5, 9]

    async def test_nested_key(self, adapter: Retrieval, seeded: str) -> None:
        assert await self.hits(adapter, seeded, must=[Condition("meta.lang", "eq", "de")]) == \
            [6, 7, 8, 9, 10, 11]

    async def test_filter_applies_before_limit(self, adapter: Retrieval, seeded: str) -> None:
        assert await self.hits(adapter, seeded, must=[Condition("size", "eq", 11)],
                               limit=1) == [11]
        assert await self.hits(adapter, seeded, must=[Condition("color", "eq", "blue")],
                               limit=2) == [2, 5]

    async def test_empty_and_unmatched_filters(self, adapter: Retrieval, seeded: str) -> None:
        assert await self.hits(adapter, seeded) == list(range(12))
        assert await self.hits(adapter, seeded, must=[Condition("color", "eq", "pink")]) == []
        assert await self.hits(adapter, seeded, must=[Condition("missing", "eq", "x")]) == []

    async def test_invalid_conditions(self, adapter: Retrieval, seeded: str) -> None:
        bad = [
            Condition("price", "eq", 1.5),                       # float eq: use range
            Condition("color", "eq", None),
            Condition("color", cast(Any, "regex"), "r.*"),
            Condition("size", "range"),                          # no bounds
            Condition("size", "range", gte=math.nan),
            Condition("color", "any", ["red", 1]),               # mixed types
            Condition("color", "any", "red"),                    # not a list
            Condition("", "eq", "x"),
        ]
        for cond in bad:
            with pytest.raises(InvalidInput) as info:
                await self.hits(adapter, seeded, must=[cond])
            _assert_hint(info.value)
            with pytest.raises(InvalidInput):
                await self.hits(adapter, seeded, must_not=[cond])


class RetrievalTenancy(_RetrievalBase):
    """Adversarial tenant isolation: nothing crosses the tenant boundary."""

    a: ClassVar[str] = "acme"
    b: ClassVar[str] = "globex"
    shared_uuid: ClassVar[str] = "6b1a3e5c-0d9f-4c47-9a8e-2f0c6d7b1e11"

    @pytest.fixture
    async def two_tenants(self, adapter: Retrieval, collection: str) -> str:
        """Both tenants use ids 1, 2 and one UUID; globex also has 3, dressed up as acme's."""
        await adapter.upsert(collection, [
            Point(1, self.vec(1.0), {"owner": self.a, "n": 1}),
            Point(2, self.vec(1.0, 1.0), {"owner": self.a, "n": 2}),
            Point(self.shared_uuid, self.vec(0.0, 1.0), {"owner": self.a, "n": 3}),
        ], tenant=self.a)
        await adapter.upsert(collection, [
            Point(1, self.vec(1.0, 0.1), {"owner": self.b, "n": 1}),
            Point(2, self.vec(1.0, 0.5), {"owner": self.b, "n": 2}),
            Point(self.shared_uuid, self.vec(1.0, 0.01), {"owner": self.b, "n": 3}),
            Point(3, self.vec(1.0, 0.001), {"owner": self.a, "n": 4, "secret": True}),
        ], tenant=self.b)
        return collection

    async def owners(self, adapter: Retrieval, collection: str, tenant: str,
                     flt: Filter | None = None) -> list[tuple[int | str, Any]]:
        return [(h.id, h.payload.get("n")) for h in
                await self.everything(adapter, collection, tenant, flt)]

    async def test_each_tenant_sees_only_its_points(self, adapter: Retrieval,
                                                    two_tenants: str) -> None:
        mine = await self.everything(adapter, two_tenants, self.a)
        assert [(h.id, h.payload["n"]) for h in mine] == [(1, 1), (2, 2), (self.shared_uuid, 3)]
        assert all(h.payload["owner"] == self.a for h in mine)
        theirs = await self.everything(adapter, two_tenants, self.b)
        assert sorted(h.payload["n"] for h in theirs) == [1, 2, 3, 4]

    async def test_returned_payload_has_no_reserved_key(self, adapter: Retrieval,
                                                        two_tenants: str) -> None:
        for tenant in (self.a, self.b):
            for hit in await self.everything(adapter, two_tenants, tenant):
                assert self.tenant_key not in hit.payload
                assert set(hit.payload) <= {"owner", "n", "secret"}

    async def test_payload_filters_stay_inside_the_tenant(self, adapter: Retrieval,
                                                          two_tenants: str) -> None:
        acme_owned = Filter(must=(Condition("owner", "eq", self.a),))
        assert [n for _, n in await self.owners(adapter, two_tenants, self.a, acme_owned)] == \
            [1, 2, 3]
        secret = Filter(must=(Condition("secret", "eq", True),))
        assert await self.owners(adapter, two_tenants, self.a, secret) == []
        not_acme = Filter(must_not=(Condition("owner", "eq", self.a),))
        assert await self.owners(adapter, two_tenants, self.a, not_acme) == []
        not_anything = Filter(must_not=(Condition("owner", "any", [self.a, self.b]),))
        assert await self.owners(adapter, two_tenants, self.a, not_anything) == []
        wide = Filter(must=(Condition("n", "range", gte=-1e9, lte=1e9),))
        assert len(await self.owners(adapter, two_tenants, self.a, wide)) == 3

    async def test_filter_on_the_tenant_key_is_rejected(self, adapter: Retrieval,
                                                        two_tenants: str) -> None:
        key = self.tenant_key
        for k in (key, f'"{key}"', f"{key}.x", f"{key}[]"):
            for flt in (Filter(must=(Condition(k, "eq", self.b),)),
                        Filter(must=(Condition(k, "any", [self.a, self.b]),)),
                        Filter(must_not=(Condition(k, "eq", self.a),)),
                        Filter(must_not=(Condition(k, "eq", self.b),))):
                with pytest.raises(InvalidInput) as info:
                    await self.everything(adapter, two_tenants, self.a, flt)
                _assert_hint(info.value)

    async def test_payload_cannot_forge_the_tenant(self, adapter: Retrieval,
                                                   two_tenants: str) -> None:
        with pytest.raises(InvalidInput):
            await adapter.upsert(two_tenants, [Point(9, self.vec(1.0),
                                                     {self.tenant_key: self.b})], tenant=self.a)
        assert 9 not in _ids(await self.everything(adapter, two_tenants, self.b))
        assert 9 not in _ids(await self.everything(adapter, two_tenants, self.a))

    async def test_same_id_never_overwrites_another_tenant(self, adapter: Retrieval,
                                                           two_tenants: str) -> None:
        before = await self.owners(adapter, two_tenants, self.a)
        await adapter.upsert(two_tenants, [Point(1, self.vec(0.0, 0.0, 1.0), {"n": 99}),
                                           Point(self.shared_uuid, self.vec(1.0), {"n": 98})],
                             tenant=self.b)
        assert await self.owners(adapter, two_tenants, self.a) == before

    async def test_delete_of_another_tenants_id_is_a_no_op(self, adapter: Retrieval,
                                                           two_tenants: str) -> None:
        await adapter.delete(two_tenants, [3], tenant=self.a)  # only globex has id 3
        assert 3 in _ids(await self.everything(adapter, two_tenants, self.b))
        await adapter.delete(two_tenants, [1, self.shared_uuid], tenant=self.a)
        assert _ids(await self.everything(adapter, two_tenants, self.a)) == [2]
        assert sorted(n for _, n in await self.owners(adapter, two_tenants, self.b)) == \
            [1, 2, 3, 4]

    async def test_look_alike_tenants_are_distinct(self, adapter: Retrieval,
                                                   two_tenants: str) -> None:
        for tenant in ("Acme", "acme ", " acme", "acme\x00", "acme|globex", "*", "%",
                       '{"$ne": null}', "' OR 1=1 --", self.tenant_key, "globex.acme"):
            assert await self.everything(adapter, two_tenants, tenant) == [], tenant
        await adapter.upsert(two_tenants, [Point(1, self.vec(1.0), {"n": 50})], tenant="Acme")
        assert [n for _, n in await self.owners(adapter, two_tenants, "Acme")] == [50]
        assert [n for _, n in await self.owners(adapter, two_tenants, self.a)] == [1, 2, 3]

    async def test_limit_is_not_padded_from_other_tenants(self, adapter: Retrieval,
                                                          two_tenants: str) -> None:
        hits = await adapter.query(two_tenants, self.vec(1.0), tenant=self.a, limit=7)
        assert len(hits) == 3

    async def test_empty_tenant_is_rejected(self, adapter: Retrieval, two_tenants: str) -> None:
        with pytest.raises(InvalidInput):
            await adapter.query(two_tenants, self.vec(1.0), tenant="")
        with pytest.raises(InvalidInput):
            await adapter.upsert(two_tenants, [Point(1, self.vec(1.0))], tenant="")
        with pytest.raises(InvalidInput):
            await adapter.delete(two_tenants, [1], tenant="")


class RetrievalErrors(_RetrievalBase):
    """Bad input raises InvalidInput and writes nothing; unknown collections raise NotFound."""

    async def _snapshot(self, adapter: Retrieval, collection: str) -> str | None:
        if Feature.SNAPSHOT in adapter.features:
            return await adapter.snapshot(collection)
        return None

    async def test_wrong_dimension_on_upsert(self, adapter: Retrieval, collection: str) -> None:
        await adapter.upsert(collection, [Point(1, self.vec(1.0))], tenant="t1")
        snap = await self._snapshot(adapter, collection)
        with pytest.raises(InvalidInput) as info:
            await adapter.upsert(collection, [Point(2, [1.0] * (self.dim + 1))], tenant="t1")
        _assert_hint(info.value)
        with pytest.raises(InvalidInput):  # one bad vector spoils the batch
            await adapter.upsert(collection, [Point(3, self.vec(1.0)), Point(4, [1.0, 2.0])],
                                 tenant="t1")
        assert _ids(await self.everything(adapter, collection, "t1")) == [1]
        assert await self._snapshot(adapter, collection) == snap

    async def test_wrong_dimension_on_query(self, adapter: Retrieval, collection: str) -> None:
        await adapter.upsert(collection, [Point(1, self.vec(1.0))], tenant="t1")
        for bad in ([1.0] * (self.dim - 1), [1.0] * (self.dim * 2)):
            with pytest.raises(InvalidInput) as info:
                await adapter.query(collection, bad, tenant="t1")
            _assert_hint(info.value)

    async def test_non_finite_vectors(self, adapter: Retrieval, collection: str) -> None:
        await adapter.upsert(collection, [Point(1, self.vec(1.0))], tenant="t1")
        snap = await self._snapshot(adapter, collection)
        for value in (math.nan, math.inf, -math.inf):
            bad = self.vec(1.0)
            bad[1] = value
            with pytest.raises(InvalidInput) as info:
                await adapter.upsert(collection, [Point(2, self.vec(0.0, 1.0)), Point(3, bad)],
                                     tenant="t1")
            _assert_hint(info.value)
            with pytest.raises(InvalidInput):
                await adapter.query(collection, bad, tenant="t1")
        assert _ids(await self.everything(adapter, collection, "t1")) == [1]
        assert await self._snapshot(adapter, collection) == snap

    async def test_non_numeric_vectors(self, adapter: Retrieval, collection: str) -> None:
        await adapter.upsert(collection, [Point(1, self.vec(1.0))], tenant="t1")
        bad_vectors: list[Any] = [["x"] * self.dim, "abcdefgh", [], [[1.0] * self.dim]]
        for bad in bad_vectors:
            with pytest.raises(InvalidInput):
                await adapter.query(collection, bad, tenant="t1")
            with pytest.raises(InvalidInput):
                await adapter.upsert(collection, [Point(2, bad)], tenant="t1")

    async def test_unknown_collection(self, adapter: Retrieval, collection: str) -> None:
        with pytest.raises(NotFound) as info:
            await adapter.query(collection, self.vec(1.0), tenant="t1")
        _assert_hint(info.value)
        if Feature.SNAPSHOT in adapter.features:
            with pytest.raises(NotFound):
                await adapter.snapshot(collection)
        await adapter.delete(collection, [1], tenant="t1")  # idempotent: a no-op
        with pytest.raises(NotFound):  # ... and it did not create the collection
            await adapter.query(collection, self.vec(1.0), tenant="t1")

    async def test_bad_limit(self, adapter: Retrieval, collection: str) -> None:
        await adapter.upsert(collection, [Point(1, self.vec(1.0))], tenant="t1")
        for limit in (0, -1):
            with pytest.raises(InvalidInput):
                await adapter.query(collection, self.vec(1.0), tenant="t1", limit=limit)

    async def test_bad_ids(self, adapter: Retrieval, collection: str) -> None:
        await adapter.upsert(collection, [Point(1, self.vec(1.0))], tenant="t1")
        bad: Any
        for bad in (-1, True, None, 1.5, ""):
            with pytest.raises(InvalidInput):
                await adapter.upsert(collection, [Point(cast(Any, bad), self.vec(1.0))],
                                     tenant="t1")
            with pytest.raises(InvalidInput):
                await adapter.delete(collection, [cast(Any, bad)], tenant="t1")
        assert _ids(await self.everything(adapter, collection, "t1")) == [1]

    async def test_bad_collection_names(self, adapter: Retrieval) -> None:
        for name in ("", "../escape", "a/b", "with space", "x" * 300):
            with pytest.raises(InvalidInput):
                await adapter.upsert(name, [Point(1, self.vec(1.0))], tenant="t1")
            with pytest.raises(InvalidInput):
                await adapter.query(name, self.vec(1.0), tenant="t1")

    async def test_bad_payload(self, adapter: Retrieval, collection: str) -> None:
        for payload in (cast(Any, ["not", "a", "dict"]), {"x": object()}, {"x": math.nan}):
            with pytest.raises(InvalidInput):
                await adapter.upsert(collection, [Point(1, self.vec(1.0), payload)],
                                     tenant="t1")
        with pytest.raises(NotFound):  # nothing was written, not even the collection
            await adapter.query(collection, self.vec(1.0), tenant="t1")
