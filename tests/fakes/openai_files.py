"""Files API of the fake OpenAI upstream: bytes kept in memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.datastructures import UploadFile
from starlette.responses import Response

from .common import Call, json_response
from .openai_common import cursor_page, int_param, openai_error

if TYPE_CHECKING:
    from .openai_upstream import FakeOpenAIState


@dataclass(slots=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    created_at: int
    content: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass
class FileStore:
    files: dict[str, StoredFile] = field(default_factory=dict)

    def add(self, file: StoredFile) -> StoredFile:
        self.files[file.id] = file
        return file

    def get(self, file_id: str) -> StoredFile | None:
        return self.files.get(file_id)

    def delete(self, file_id: str) -> bool:
        return self.files.pop(file_id, None) is not None


def _missing(file_id: str) -> Response:
    return openai_error(404, f"No such File object: {file_id}", param="id")


async def create_file(call: Call, state: FakeOpenAIState) -> Response:
    form = await call.request.form()
    upload, purpose = form.get("file"), form.get("purpose")
    if not isinstance(upload, UploadFile):
        return openai_error(400, "'file' is a required property", param="file")
    if not isinstance(purpose, str) or not purpose:
        return openai_error(400, "'purpose' is a required property", param="purpose")
    content = await upload.read()
    stored = StoredFile(
        state.next_id("file-"), upload.filename or "upload", purpose, state.now(), content
    )
    return json_response(state.files.add(stored).to_json())


async def list_files(call: Call, state: FakeOpenAIState) -> Response:
    params = call.request.query_params
    items = [f.to_json() for f in state.files.files.values()]
    if purpose := params.get("purpose"):
        items = [f for f in items if f["purpose"] == purpose]
    if params.get("order", "desc") == "desc":
        items.reverse()
    return json_response(
        cursor_page(items, params.get("after"), int_param(params.get("limit"), 10_000))
    )


async def retrieve_file(call: Call, state: FakeOpenAIState) -> Response:
    file_id = call.request.path_params["file_id"]
    stored = state.files.get(file_id)
    return json_response(stored.to_json()) if stored else _missing(file_id)


async def file_content(call: Call, state: FakeOpenAIState) -> Response:
    file_id = call.request.path_params["file_id"]
    stored = state.files.get(file_id)
    if stored is None:
        return _missing(file_id)
    return Response(stored.content, media_type="application/octet-stream")


async def delete_file(call: Call, state: FakeOpenAIState) -> Response:
    file_id = call.request.path_params["file_id"]
    if not state.files.delete(file_id):
        return _missing(file_id)
    return json_response({"id": file_id, "object": "file", "deleted": True})
