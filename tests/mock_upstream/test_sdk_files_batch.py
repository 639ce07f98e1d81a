"""The real SDK against the mock: files and batch jobs."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from mistralai.client import Mistral, errors

JSONL = b'{"custom_id": "1", "body": {}}\n{"custom_id": "2", "body": {}}\n'


async def test_file_upload_list_get_download_delete(sdk: Mistral, http: TestClient) -> None:
    uploaded = await asyncio.to_thread(
        sdk.files.upload,
        file={"file_name": "batch.jsonl", "content": JSONL},
        purpose="batch",
    )
    assert uploaded.filename == "batch.jsonl"
    assert uploaded.size_bytes == len(JSONL)
    assert uploaded.num_lines == 2
    assert uploaded.purpose == "batch"

    listed = await sdk.files.list_async()
    assert [f.id for f in listed.data] == [uploaded.id]
    assert listed.total == 1

    fetched = await sdk.files.retrieve_async(file_id=uploaded.id)
    assert fetched.filename == "batch.jsonl" and fetched.deleted is False

    download = await sdk.files.download_async(file_id=uploaded.id)
    assert await download.aread() == JSONL

    signed = await sdk.files.get_signed_url_async(file_id=uploaded.id)
    async with aiohttp.ClientSession() as session, session.get(signed.url) as response:
        assert response.status == 200
        assert await response.read() == JSONL

    deleted = await sdk.files.delete_async(file_id=uploaded.id)
    assert deleted.deleted is True
    assert (await sdk.files.list_async()).data == []
    with pytest.raises(errors.SDKError) as caught:
        await sdk.files.retrieve_async(file_id=uploaded.id)
    assert caught.value.status_code == 404


async def test_batch_jobs_create_list_get_cancel(sdk: Mistral) -> None:
    uploaded = await sdk.files.upload_async(
        file={"file_name": "in.jsonl", "content": JSONL}, purpose="batch"
    )
    job = await sdk.batch.jobs.create_async(
        endpoint="/v1/chat/completions", input_files=[uploaded.id], model="mistral-small-latest"
    )
    assert job.status == "QUEUED"
    assert job.total_requests == 2
    inline = await asyncio.to_thread(
        sdk.batch.jobs.create,
        endpoint="/v1/embeddings",
        requests=[{"custom_id": "a", "body": {"input": "x"}}],
        model="mistral-embed",
    )

    listed = await sdk.batch.jobs.list_async()
    assert listed.total == 2
    assert [j.id for j in listed.data or []] == [inline.id, job.id]
    only_embed = await sdk.batch.jobs.list_async(model="mistral-embed")
    assert [j.id for j in only_embed.data or []] == [inline.id]

    fetched = await sdk.batch.jobs.get_async(job_id=job.id)
    assert fetched.input_files == [uploaded.id]

    cancelled = await sdk.batch.jobs.cancel_async(job_id=job.id)
    assert cancelled.status == "CANCELLATION_REQUESTED"
    after = await asyncio.to_thread(sdk.batch.jobs.get, job_id=job.id)
    assert after.status == "CANCELLED"


async def test_batch_job_with_unknown_file_is_a_404(sdk: Mistral) -> None:
    with pytest.raises(errors.SDKError) as caught:
        await sdk.batch.jobs.create_async(
            endpoint="/v1/chat/completions",
            input_files=["00000000-0000-0000-0000-000000000000"],
            model="mistral-small-latest",
        )
    assert caught.value.status_code == 404
