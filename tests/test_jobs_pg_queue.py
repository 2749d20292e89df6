"""The procrastinate engine's own rules: the DSN for psycopg, and a queued row without a procrastinate job
(its submitter died between the insert and the defer) is deferred again, once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from src.jobs.model import JobLimits, Requester
from src.jobs.pg_queue import PgQueue, psycopg_conninfo
from src.jobs.postgres_jobs import PostgresJobStore
from tests.jobs_helpers import request
from tests.test_storage_postgres import drop_schema, new_schema_name


def test_the_psycopg_dsn_drops_our_options_and_passes_the_search_path_as_a_libpq_option() -> None:
    got = psycopg_conninfo("postgres://u:p@h:5432/db?statement_cache_size=0&search_path=s1&sslmode=require")
    assert got == "postgresql://u:p@h:5432/db?options=-c%20search_path%3Ds1&sslmode=require"


@pytest.fixture
async def queue(postgres_url: str) -> AsyncIterator[PgQueue]:
    schema = new_schema_name()
    conn = await asyncpg.connect(postgres_url)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    sep = "&" if "?" in postgres_url else "?"
    dsn = f"{postgres_url}{sep}search_path={schema}"
    store = PostgresJobStore(dsn)
    q = PgQueue(dsn, store)
    await store.open()
    await q.open()
    yield q
    await q.close()
    await store.close()
    await drop_schema(postgres_url, schema)


@pytest.mark.postgres
async def test_a_queued_row_without_a_procrastinate_job_is_deferred_again_once(queue: PgQueue) -> None:
    orphan = await queue.store.submit(request(), Requester(), JobLimits())  # inserted, never deferred
    fine = await queue.store.submit(request(), Requester(), JobLimits())
    await queue.defer(fine.id)
    assert await queue.redefer_orphans(older_than_s=120) == 0  # too young: its submitter may still defer it
    assert await queue.redefer_orphans(older_than_s=0) == 1
    assert await queue.redefer_orphans(older_than_s=0) == 0
    todo = await queue.app.job_manager.list_jobs_async(task="wyeli.run_job", status="todo")
    assert sorted(int(str(j.task_kwargs["job_id"])) for j in todo) == sorted([orphan.id, fine.id])
