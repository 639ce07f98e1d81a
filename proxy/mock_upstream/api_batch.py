"""``/v1/batch/jobs``: create, list, get, cancel, delete. Jobs never run: they stay queued."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .errors import not_found, validation_failed
from .ids import new_uuid, now_unix
from .state import STATE_KEY, MockState
from .validation import paginate, query_int, read_json_object, require

routes = web.RouteTableDef()


def _job(state: MockState, job_id: str) -> dict[str, Any]:
    job = state.batch_jobs.get(job_id)
    if job is None:
        raise not_found(f"Batch job {job_id} not found")
    # A cancellation request is acknowledged first and observed as done on the next read.
    if job["status"] == "CANCELLATION_REQUESTED":
        job["status"] = "CANCELLED"
        job["completed_at"] = now_unix()
    return job


@routes.post("/v1/batch/jobs")
async def create_job(request: web.Request) -> web.Response:
    """Queue a batch job over uploaded ``input_files`` or inline ``requests``."""
    state = request.app[STATE_KEY]
    body = await read_json_object(request)
    require(body, {"endpoint": str})
    input_files = body.get("input_files") or []
    requests = body.get("requests") or []
    if not input_files and not requests:
        raise validation_failed(
            [
                {
                    "type": "value_error",
                    "loc": ["body"],
                    "msg": "Value error, Either input_files or requests must be provided",
                    "input": body,
                }
            ]
        )
    total = len(requests)
    for file_id in input_files:
        record = state.files.get(str(file_id))
        if record is None:
            raise not_found(f"File {file_id} not found")
        total += int(record.meta.get("num_lines") or 0)
    job = {
        "id": new_uuid(),
        "object": "batch",
        "input_files": [str(f) for f in input_files],
        "metadata": body.get("metadata"),
        "endpoint": body["endpoint"],
        "model": body.get("model"),
        "agent_id": body.get("agent_id"),
        "output_file": None,
        "error_file": None,
        "errors": [],
        "outputs": None,
        "status": "QUEUED",
        "created_at": now_unix(),
        "total_requests": total,
        "completed_requests": 0,
        "succeeded_requests": 0,
        "failed_requests": 0,
        "started_at": None,
        "completed_at": None,
    }
    state.batch_jobs[job["id"]] = job
    return web.json_response(job)


@routes.get("/v1/batch/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    """Jobs filtered by ``model``/``agent_id``/``status``, ordered by ``order_by``."""
    state = request.app[STATE_KEY]
    page = query_int(request, "page", 0)
    page_size = query_int(request, "page_size", 100, minimum=1)
    jobs = [_job(state, job_id) for job_id in list(state.batch_jobs)]
    if model := request.query.get("model"):
        jobs = [j for j in jobs if j["model"] == model]
    if agent_id := request.query.get("agent_id"):
        jobs = [j for j in jobs if j["agent_id"] == agent_id]
    if statuses := request.query.getall("status", []):
        jobs = [j for j in jobs if j["status"] in statuses]
    if request.query.get("order_by", "-created") == "-created":
        jobs.reverse()
    return web.json_response(
        {"object": "list", "data": paginate(jobs, page, page_size), "total": len(jobs)}
    )


@routes.get("/v1/batch/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    """One batch job."""
    return web.json_response(_job(request.app[STATE_KEY], request.match_info["job_id"]))


@routes.post("/v1/batch/jobs/{job_id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    """Request cancellation: answered ``CANCELLATION_REQUESTED``, read back ``CANCELLED``."""
    job = _job(request.app[STATE_KEY], request.match_info["job_id"])
    if job["status"] in ("QUEUED", "RUNNING"):
        job["status"] = "CANCELLATION_REQUESTED"
    return web.json_response(job)


@routes.delete("/v1/batch/jobs/{job_id}")
async def delete_job(request: web.Request) -> web.Response:
    """Forget a batch job."""
    state = request.app[STATE_KEY]
    _job(state, request.match_info["job_id"])
    del state.batch_jobs[request.match_info["job_id"]]
    return web.json_response(
        {"id": request.match_info["job_id"], "object": "batch", "deleted": True}
    )
