"""Bulk jobs of the gateway: a durable ledger on the shared-state seam and the runner that
works it (see ``docs/guides/bulk-jobs.md``)."""

from aios_mesh.gateway.jobs.runner import JobRunner, recorded_ids
from aios_mesh.gateway.jobs.source import JSONL_TYPES, parse_jsonl, read_job_file
from aios_mesh.gateway.jobs.store import (
    JOBS_MIGRATIONS,
    Job,
    JobNotFound,
    JobStore,
    NewRow,
    RowResult,
    row_record_id,
)

__all__ = ["JOBS_MIGRATIONS", "JSONL_TYPES", "Job", "JobNotFound", "JobRunner", "JobStore",
           "NewRow", "RowResult", "parse_jsonl", "read_job_file", "recorded_ids",
           "row_record_id"]
