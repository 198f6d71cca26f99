"""Dataset names by OpenLineage's naming spec (https://openlineage.io/docs/spec/naming), for
every URL form of the backends a mesh reads and writes, checked against the OpenLineage
client's own naming helpers where it has one (Kafka, PostgreSQL, the local file system); and
what a real mesh (embedded defaults) writes into its records and lineage events."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openlineage.client.naming import dataset as ol
from pydantic import BaseModel

from aios_mesh import Mesh
from aios_mesh.capabilities import capability
from aios_mesh.context import CallContext
from aios_mesh.lineage import run_events_for
from aios_mesh.lineage_naming import DatasetName, dataset_name
from aios_mesh.testing.conformance.lineage import OpenLineageSchemas

SCHEMAS = OpenLineageSchemas()
BASE = Path("/srv/mesh")


@pytest.mark.parametrize(("url", "inner", "namespace", "name"), [
    # servers: scheme://host:port, the default port filled in
    ("mlflow+http://127.0.0.1:5000", "invoice-extractor", "mlflow://127.0.0.1:5000",
     "invoice-extractor"),
    ("mlflow+https://mlflow.example.com", "m", "mlflow://mlflow.example.com:443", "m"),
    ("mlflow+http://mlflow.example.com", "m", "mlflow://mlflow.example.com:80", "m"),
    ("qdrant://127.0.0.1:6333?api_key=s3cret", "vendors", "qdrant://127.0.0.1:6333",
     "vendors"),
    ("qdrant://:s3cret@qdrant.internal", "kb", "qdrant://qdrant.internal:6333", "kb"),
    ("kafka://127.0.0.1:9092", "aios.mesh.decisions", "kafka://127.0.0.1:9092",
     "aios.mesh.decisions"),
    ("kafka://broker?bootstrap=b2:9092", "t", "kafka://broker:9092", "t"),
    ("nats://127.0.0.1:4222", "aios.mesh.decisions", "nats://127.0.0.1:4222",
     "aios.aios.mesh.decisions"),
    ("nats://tok3n@nats.internal?prefix=acme", "t", "nats://nats.internal:4222", "acme.t"),
    ("postgresql://mesh:pw@127.0.0.1:5433/audit", "", "postgres://127.0.0.1:5433",
     "audit.public.audit_log"),
    ("postgresql://mesh:pw@db/ops?table=ledger.records", "", "postgres://db:5432",
     "ops.ledger.records"),
    ("postgresql://mesh@db", "", "postgres://db:5432", "mesh.public.audit_log"),
    ("postgresql://[::1]:5432/x", "", "postgres://[::1]:5432", "x.public.audit_log"),
    # files under the state folder (relative) or anywhere (absolute): the local file system
    ("mlflow+sqlite:///registry/mlflow.db", "clf", "file", "/srv/mesh/registry/mlflow.db/clf"),
    ("mlflow+sqlite:////var/lib/mlflow.db", "clf", "file", "/var/lib/mlflow.db/clf"),
    ("qdrant-edge:///qdrant", "vendors", "file", "/srv/mesh/qdrant/vendors"),
    ("qdrant+local:///vectors/", "kb", "file", "/srv/mesh/vectors/kb"),
    ("sqlite:///events.db", "aios.mesh.decisions", "file",
     "/srv/mesh/events.db/aios.mesh.decisions"),
    ("jsonl:///audit.jsonl", "", "file", "/srv/mesh/audit.jsonl"),
    # no persistence behind it
    ("memory://", "clf", "inmemory://", "clf"),
    ("qdrant+local:///:memory:", "kb", "inmemory://", "kb"),
])
def test_every_backend_url_form(url: str, inner: str, namespace: str, name: str) -> None:
    assert dataset_name(url, inner, base_dir=BASE) == DatasetName(namespace, name)


hosts = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True),
    st.ip_addresses(v=4).map(str))
ports = st.integers(1, 65535)
users = st.from_regex(r"[A-Za-z0-9_]{1,12}", fullmatch=True)
secrets = st.from_regex(r"S3[A-Z0-9_~-]{6,20}", fullmatch=True)  # never a host or a name
idents = st.from_regex(r"[a-z_][a-z0-9_]{0,15}", fullmatch=True)


@given(host=hosts, port=ports, user=users, password=secrets, topic=idents)
def test_kafka_matches_the_openlineage_client(host: str, port: int, user: str, password: str,
                                              topic: str) -> None:
    got = dataset_name(f"kafka://{user}:{password}@{host}:{port}", topic, base_dir=BASE)
    want = ol.Kafka(bootstrap_server_host=host, port=str(port), topic=topic)
    assert got == DatasetName(want.get_namespace(), want.get_name())
    assert password not in got.namespace


@given(host=hosts, port=ports, user=users, password=secrets, db=idents, schema=idents,
       table=idents)
def test_postgres_matches_the_openlineage_client(host: str, port: int, user: str,
                                                 password: str, db: str, schema: str,
                                                 table: str) -> None:
    url = f"postgresql://{user}:{password}@{host}:{port}/{db}?table={schema}.{table}" \
          f"&sslpassword={password}"
    got = dataset_name(url, base_dir=BASE)
    want = ol.Postgres(host=host, port=str(port), database=db, schema=schema, table=table)
    assert got == DatasetName(want.get_namespace(), want.get_name())
    assert password not in f"{got.namespace} {got.name}"


@given(parts=st.lists(st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True).filter(
    lambda p: p not in {".", ".."}), min_size=1, max_size=4), inner=idents)
def test_files_match_the_openlineage_client(parts: list[str], inner: str) -> None:
    rel = "/".join(parts)
    got = dataset_name(f"qdrant-edge:///{rel}", inner, base_dir=BASE)
    want = ol.LocalFileSystem(path=f"{BASE.as_posix()}/{rel}/{inner}")
    assert got == DatasetName(want.get_namespace(), want.get_name())


@given(host=hosts, port=ports, user=users, password=secrets,
       scheme=st.sampled_from(["qdrant", "mlflow+http", "mlflow+https", "nats", "kafka"]))
def test_namespace_is_scheme_and_authority_without_credentials(
        host: str, port: int, user: str, password: str, scheme: str) -> None:
    got = dataset_name(f"{scheme}://{user}:{password}@{host}:{port}?token={password}", "x",
                       base_dir=BASE)
    assert got.namespace == f"{scheme.split('+')[0]}://{host}:{port}"
    assert password not in f"{got.namespace} {got.name}"


@given(address=st.ip_addresses(v=6), port=ports)
def test_ipv6_hosts_keep_their_brackets(address: ipaddress.IPv6Address, port: int) -> None:
    got = dataset_name(f"qdrant://[{address}]:{port}", "kb", base_dir=BASE)
    assert got.namespace == f"qdrant://[{address}]:{port}"


def test_nats_name_is_the_subject_the_bus_publishes_on() -> None:
    from aios_mesh_nats import NatsEventBus

    from aios_mesh.backends import parse_url

    for raw in ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222?prefix=acme"):
        bus = NatsEventBus.from_url(parse_url(raw), base_dir=BASE)
        assert dataset_name(raw, "invoices.extracted", base_dir=BASE).name == \
            bus.subject("invoices.extracted")


def test_postgres_name_is_the_table_the_audit_log_writes() -> None:
    from aios_mesh_postgres import PostgresAuditLog

    from aios_mesh.backends import parse_url

    for raw, table in (("postgresql://u@h/db", "public.audit_log"),
                       ("postgresql://u@h/db?table=ops.ledger", "ops.ledger"),
                       ("postgresql://u@h/db?table=ledger", "public.ledger")):
        log = PostgresAuditLog.from_url(parse_url(raw), base_dir=BASE)
        assert dataset_name(raw, base_dir=BASE).name == \
            f"db.{log.table if '.' in log.table else 'public.' + log.table}" == f"db.{table}"


# ------------------------------------------------------------- what a real mesh writes


class Note(BaseModel):
    x: int = 0


class Noted(BaseModel):
    ok: bool


@capability("note-vendor", version="1")
async def note_vendor(payload: Note, ctx: CallContext) -> Noted:
    ctx.note_index("vendors", "snap-1")
    ctx.note_index_write("vendors-seen", "snap-9")
    return Noted(ok=True)


def test_a_local_mesh_names_its_files_and_fills_outputs(tmp_path: Path) -> None:
    with Mesh.local(tmp_path / "state", capabilities=[note_vendor],
                    tenants=["acme"]) as mesh:
        record = mesh.invoke("note-vendor", {"x": 1}, tenant="acme").record
    state = (tmp_path / "state").resolve().as_posix()
    doc = record.to_dict()
    assert doc["datasets"] == {
        "inputs": [{"namespace": "file", "name": f"{state}/qdrant/vendors", "type": "TABLE",
                    "version": "snap-1"}],
        "outputs": [
            {"namespace": "file", "name": f"{state}/audit.jsonl", "type": "FILE"},
            {"namespace": "file", "name": f"{state}/events.db/aios.mesh.decisions",
             "type": "TOPIC"},
            {"namespace": "file", "name": f"{state}/qdrant/vendors-seen", "type": "TABLE",
             "version": "snap-9"},
        ]}
    start, end = run_events_for(doc)
    for event in (start, end):
        SCHEMAS.validate(event)
    assert [(d["namespace"], d["name"]) for d in end["outputs"]] == \
        [(d["namespace"], d["name"]) for d in doc["datasets"]["outputs"]]
    assert end["outputs"][0]["facets"]["datasetType"]["datasetType"] == "FILE"
    assert start["inputs"][0]["facets"]["version"]["datasetVersion"] == "snap-1"
    # no bare backend words any more
    assert {d["namespace"] for e in (start, end) for d in e["inputs"] + e["outputs"]} == \
        {"file"}


def test_decision_events_off_means_no_topic_output(tmp_path: Path) -> None:
    with Mesh.local(tmp_path, capabilities=[note_vendor], tenants=["acme"],
                    telemetry={"decision_events": False}) as mesh:
        outputs = mesh.invoke("note-vendor", {}, tenant="acme").record.to_dict()[
            "datasets"]["outputs"]
    assert [d["type"] for d in outputs] == ["FILE", "TABLE"]


def test_a_memory_registry_is_named_inmemory_and_a_given_adapter_is_left_out(
        tmp_path: Path) -> None:
    from aios_mesh.embedded.audit import JsonlAuditLog

    with Mesh.local(tmp_path, capabilities=[note_vendor], tenants=["acme"],
                    backends={"registry": "memory://"}) as mesh:
        names = mesh.recorder.datasets
        assert names is not None
        assert names.name("registry", "clf") == DatasetName("inmemory://", "clf")
    given = JsonlAuditLog(tmp_path / "given.jsonl")
    with Mesh.local(tmp_path / "b", capabilities=[note_vendor], tenants=["acme"]) as mesh:
        mesh.ports.override("audit", given)
        outputs = mesh.invoke("note-vendor", {}, tenant="acme").record.to_dict()[
            "datasets"]["outputs"]
    # an adapter handed over as an instance has no URL that says where its data lives
    assert [d["type"] for d in outputs] == ["TOPIC", "TABLE"]
