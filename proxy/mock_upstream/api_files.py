"""``/v1/files``: streamed multipart upload to disk, listing, metadata, download, delete.

Uploads are written chunk by chunk into the app's temporary directory, so even a
gigabyte upload never sits in memory; downloads are streamed back from disk.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import BodyPartReader, web

from .errors import not_found, validation_failed
from .ids import new_uuid, now_unix
from .state import STATE_KEY, FileRecord, MockState
from .validation import paginate, query_int

routes = web.RouteTableDef()

_READ_CHUNK = 256 * 1024
_SAMPLE_TYPES = {"batch": "batch_request", "fine-tune": "instruct", "ocr": "pretrain"}


def _file(state: MockState, file_id: str) -> FileRecord:
    record = state.files.get(file_id)
    if record is None:
        raise not_found(f"File {file_id} not found")
    return record


async def _store_part(part: BodyPartReader, path: Path) -> tuple[int, int, bool]:
    """Copy ``part`` to ``path``; return ``(size, newline count, ends with newline)``."""
    size = newlines = 0
    last = b""
    handle: BinaryIO = await asyncio.to_thread(path.open, "wb")
    try:
        while chunk := await part.read_chunk(_READ_CHUNK):
            size += len(chunk)
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
            await asyncio.to_thread(handle.write, chunk)
    finally:
        await asyncio.to_thread(handle.close)
    return size, newlines, last == b"\n"


@routes.post("/v1/files")
async def upload_file(request: web.Request) -> web.Response:
    """Store the ``file`` part of a multipart form; ``purpose``, ``expiry``, ``visibility``."""
    state = request.app[STATE_KEY]
    file_id = new_uuid()
    path = state.upload_path(file_id)
    fields: dict[str, str] = {}
    stored: tuple[int, int, bool] | None = None
    filename = "upload"
    mimetype: str | None = None
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        raise validation_failed(
            [{"type": "missing", "loc": ["body", "file"], "msg": "Field required", "input": None}]
        ) from None
    try:
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "file" and stored is None:
                filename = part.filename or filename
                mimetype = part.headers.get("Content-Type")
                stored = await _store_part(part, path)
            elif part.name:
                fields[part.name] = await part.text()
    except ValueError:
        # A multipart body cut short or malformed is the client's mistake, as upstream says.
        path.unlink(missing_ok=True)
        raise validation_failed(
            [{"type": "value_error", "loc": ["body"], "msg": "Malformed multipart body",
              "input": None}]) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if stored is None:
        raise validation_failed(
            [{"type": "missing", "loc": ["body", "file"], "msg": "Field required", "input": None}]
        )
    size, newlines, ends_with_newline = stored
    purpose = fields.get("purpose") or "fine-tune"
    created = now_unix()
    expiry = fields.get("expiry")
    meta: dict[str, Any] = {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": created,
        "filename": filename,
        "purpose": purpose,
        "sample_type": _SAMPLE_TYPES.get(purpose, "instruct"),
        "source": "upload",
        "num_lines": newlines + (1 if size and not ends_with_newline else 0),
        "mimetype": mimetype,
        "signature": None,
        "expires_at": created + int(expiry) * 3600 if expiry and expiry.isdigit() else None,
        "visibility": fields.get("visibility") or "workspace",
    }
    state.files[file_id] = FileRecord(meta=meta, path=path)
    return web.json_response(meta)


@routes.get("/v1/files")
async def list_files(request: web.Request) -> web.Response:
    """Uploaded files, newest first, filtered by ``purpose``/``search``, paginated."""
    page = query_int(request, "page", 0)
    page_size = query_int(request, "page_size", 100, minimum=1)
    metas = [r.meta for r in reversed(request.app[STATE_KEY].files.values())]
    if purpose := request.query.get("purpose"):
        metas = [m for m in metas if m["purpose"] == purpose]
    if search := request.query.get("search"):
        metas = [m for m in metas if search.lower() in m["filename"].lower()]
    total = len(metas) if request.query.get("include_total", "true") != "false" else None
    return web.json_response(
        {"object": "list", "data": paginate(metas, page, page_size), "total": total}
    )


@routes.get("/v1/files/{file_id}")
async def get_file(request: web.Request) -> web.Response:
    """One file's metadata."""
    record = _file(request.app[STATE_KEY], request.match_info["file_id"])
    return web.json_response({**record.meta, "deleted": False})


@routes.delete("/v1/files/{file_id}")
async def delete_file(request: web.Request) -> web.Response:
    """Delete a file and its bytes."""
    state = request.app[STATE_KEY]
    record = _file(state, request.match_info["file_id"])
    del state.files[record.meta["id"]]
    await asyncio.to_thread(record.path.unlink, True)
    return web.json_response({"id": record.meta["id"], "object": "file", "deleted": True})


def _download(record: FileRecord) -> web.FileResponse:
    return web.FileResponse(
        record.path,
        chunk_size=_READ_CHUNK,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{record.meta["filename"]}"',
        },
    )


@routes.get("/v1/files/{file_id}/content")
async def download_file(request: web.Request) -> web.FileResponse:
    """The file's bytes, streamed from disk."""
    return _download(_file(request.app[STATE_KEY], request.match_info["file_id"]))


@routes.get("/v1/files/{file_id}/url")
async def signed_url(request: web.Request) -> web.Response:
    """A URL that downloads the file without authentication (served by the mock itself)."""
    record = _file(request.app[STATE_KEY], request.match_info["file_id"])
    expiry = query_int(request, "expiry", 24, minimum=1, maximum=168)
    url = request.url.with_path(f"/__mock__/files/{record.meta['id']}/signed").with_query(
        {"se": str(now_unix() + expiry * 3600)}
    )
    return web.json_response({"url": str(url)})


@routes.get("/__mock__/files/{file_id}/signed")
async def signed_download(request: web.Request) -> web.FileResponse:
    """Target of signed URLs: the file's bytes, no bearer token needed."""
    return _download(_file(request.app[STATE_KEY], request.match_info["file_id"]))
