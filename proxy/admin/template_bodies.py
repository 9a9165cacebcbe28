"""The body of `POST /admin/templates`, checked before anything runs (a client is hostile).

Two ways to freeze:
- `{"name", "alias", "candidate": "<id>", "limit"?, "threshold"?, "max_bytes"?}`: the candidate
  discovery showed with that id (a hash of its parts). Discovery runs again on the server and
  the candidate is frozen only if it is still offered, so what is frozen is exactly what was
  shown; its share, tokens and sample size are the server's.
- `{"name", "parts", "alias"?}`: parts the admin wrote. Their tokens are counted on the server;
  their share is unknown (null).

A client never supplies share, tokens or sample size (unknown fields are refused), every
number is bounded, and a few-shot turn has the shape of a chat message.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuneloop.discovery_job import MAX_SAMPLE_BYTES
from tuneloop.errors import BadRequest
from tuneloop.prompt_discovery import MAX_SAMPLE
from tuneloop.prompt_template import MAX_TEMPLATE_CHARS

MAX_FEW_SHOT = 64
Text = Annotated[str, Field(max_length=MAX_TEMPLATE_CHARS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TextPart(_Strict):
    type: Literal["text", "input_text"]
    text: Text


class Turn(_Strict):
    role: Literal["user", "assistant", "system", "developer"]
    content: Text | Annotated[list[TextPart], Field(min_length=1, max_length=64)]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None


class Parts(_Strict):
    system_prompt: Annotated[str, Field(min_length=1, max_length=MAX_TEMPLATE_CHARS)] | None = None
    few_shot: Annotated[list[Turn], Field(max_length=MAX_FEW_SHOT)] = []
    user_prefix: Text = ""
    user_suffix: Text = ""
    prompt_prefix: Text = ""
    prompt_suffix: Text = ""

    def as_dict(self) -> dict[str, Any]:
        data = self.model_dump(exclude_none=False)
        data["few_shot"] = [{k: v for k, v in t.items() if v is not None}
                            for t in data["few_shot"]]
        return data


class FreezeBody(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=63)]
    alias: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    parts: Parts | None = None
    candidate: Annotated[str, Field(pattern=r"^[0-9a-f]{12}$")] | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_SAMPLE)] | None = None
    threshold: Annotated[float, Field(ge=0.5, le=1.0, allow_inf_nan=False)] | None = None
    max_bytes: Annotated[int, Field(ge=1, le=MAX_SAMPLE_BYTES)] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> FreezeBody:
        if (self.parts is None) == (self.candidate is None):
            raise ValueError("give either candidate (an id discovery showed) or parts")
        if self.candidate is not None and self.alias is None:
            raise ValueError("a candidate is frozen from an alias's traffic: alias is required")
        if self.parts is not None and (self.limit or self.threshold or self.max_bytes):
            raise ValueError("limit, threshold and max_bytes go with a candidate, not parts")
        return self


def parse_freeze_body(body: dict[str, Any]) -> FreezeBody:
    # JSON numbers: strict mode refuses an int for a float field; a threshold of 1 is fine
    if isinstance(body.get("threshold"), int) and not isinstance(body["threshold"], bool):
        body = {**body, "threshold": float(body["threshold"])}
    try:
        return FreezeBody.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadRequest(f"{where}: {first['msg']}", param=where) from exc
