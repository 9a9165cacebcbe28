"""Domain errors. Raised anywhere, translated at the edges.

The proxy turns them into OpenAI-shaped JSON (`{"error": {"message", "type", "code"}}`) with
`status_code`; the CLI turns them into a message and `exit_code`.
"""

from __future__ import annotations


class TuneloopError(Exception):
    status_code = 500
    error_type = "server_error"
    code = "internal_error"
    exit_code = 1

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param

    def to_openai(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class BadRequest(TuneloopError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "bad_request"
    exit_code = 2


class Unauthorized(TuneloopError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"
    exit_code = 3


class Forbidden(TuneloopError):
    status_code = 403
    error_type = "permission_error"
    code = "forbidden"
    exit_code = 3


class NotFound(TuneloopError):
    status_code = 404
    error_type = "not_found_error"
    code = "not_found"
    exit_code = 4


class Conflict(TuneloopError):
    status_code = 409
    error_type = "conflict_error"
    code = "conflict"
    exit_code = 5


class PreconditionRequired(Conflict):
    """A write that must say which version it was decided on (e.g. `expect_seq`) and did not:
    refused like a conflict (428; CLI exit code 5)."""

    status_code = 428
    code = "precondition_required"


class PayloadTooLarge(TuneloopError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"
    exit_code = 2


class UpstreamUnreachable(TuneloopError):
    status_code = 502
    error_type = "upstream_error"
    code = "upstream_unreachable"
    exit_code = 6


class ModelUnreachable(UpstreamUnreachable):
    """A model under evaluation could not be reached on too many of its requests (404, 5xx
    or connection failures after retries): its answers say nothing of its quality, so the
    evaluation fails (a cycle retries the step) instead of recording a verdict. `role`: which
    model of the evaluation it was (`candidate`, `baseline`), when known; `not_served`: the
    server answered 404 (it does not serve that model)."""

    code = "model_unreachable"

    def __init__(self, message: str, *, role: str | None = None, not_served: bool = False,
                 code: str | None = None, param: str | None = None):
        super().__init__(message, code=code, param=param)
        self.role = role
        self.not_served = not_served


class UpstreamTimeout(TuneloopError):
    status_code = 504
    error_type = "timeout_error"
    code = "upstream_timeout"
    exit_code = 6


class StorageError(TuneloopError):
    status_code = 503
    error_type = "server_error"
    code = "storage_unavailable"
    exit_code = 7


class ConfigError(TuneloopError):
    status_code = 500
    error_type = "server_error"
    code = "config_error"
    exit_code = 2


class DatasetError(BadRequest):
    """A dataset or export that breaks a format rule; the message names the offending examples."""

    code = "invalid_dataset"


class SearchTooBroad(BadRequest):
    """A search (`q`) that could not fill a page within its time budget."""

    code = "search_too_broad"


class ProviderError(TuneloopError):
    """A fine-tuning provider refused or failed a call."""

    status_code = 502
    error_type = "upstream_error"
    code = "provider_error"
    exit_code = 6


class ProviderUnsupported(ProviderError):
    """The fine-tuning provider has no such feature (checkpoints as models, a metrics file,
    a training method): the message says which provider and what to do instead."""

    status_code = 501
    code = "provider_unsupported"


class ProviderOptionRefused(ProviderUnsupported):
    """An option the provider does not take (a seed, a hyperparameter, a method or format):
    a usage mistake, refused before anything is uploaded, with the exit code of the CLI's
    other refused options (2)."""

    exit_code = 2


class NotTrainable(TuneloopError):
    """A review action would approve an item without a final answer (an upstream error, a cut
    stream, an empty answer): edit it to supply the answer, or reject it."""

    status_code = 422
    error_type = "invalid_request_error"
    code = "not_trainable"
    exit_code = 2


class RequestTimeout(TuneloopError):
    """The client took too long to send its request (headers or body)."""

    status_code = 408
    error_type = "invalid_request_error"
    code = "request_timeout"
    exit_code = 5


class TooManyRequests(TuneloopError):
    """A caller already has as many operations running as it may (e.g. one SQL query)."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "too_many_requests"
    exit_code = 2


class DatabaseInUse(StorageError):
    """Another process (a running server) holds the database file: go through its admin API."""

    code = "database_in_use"


class Overloaded(TuneloopError):
    """The proxy is at its connection cap (`max_connections`): try again shortly."""

    status_code = 503
    error_type = "server_error"
    code = "overloaded"
    exit_code = 6


class UnsupportedMediaType(TuneloopError):
    """The request body is compressed (`Content-Encoding`): the proxy reads, checks and logs
    bodies as sent, and OpenAI's API takes them uncompressed."""

    status_code = 415
    error_type = "invalid_request_error"
    code = "unsupported_content_encoding"
    exit_code = 2


class TransferRefused(Conflict):
    """`migrate-store`: the destination holds data that is not an unfinished copy of the same
    source, or the source changed since that copy started."""

    code = "transfer_refused"


class TransferMismatch(StorageError):
    """`migrate-store`: after the copy, a table's rows differ between source and destination."""

    code = "transfer_mismatch"


class TemplateMismatch(BadRequest):
    """A request or training example does not hold the prompt template it is said to hold.
    `part` names the first part that differs (`system_prompt`, `few_shot`, `prefix`, `suffix`,
    ...), a stable code for reports."""

    code = "template_mismatch"

    def __init__(self, message: str, part: str):
        super().__init__(message)
        self.part = part


class GateNotPassed(TuneloopError):
    """An evaluation did not pass the promotion gate (exporter/eval_gate.py): nothing was
    promoted."""

    status_code = 409
    code = "gate_not_passed"
    exit_code = 8


class TransferRowRefused(TuneloopError):
    """`migrate-store`: a source row can't be read, or the destination refuses it (a NUL
    character for Postgres text, a time outside the years 1 to 9999, ...). The message names
    the table, the row and why; the copy stopped before that row's batch and continues from
    there when run again, once the row is fixed or deleted in the source."""

    status_code = 422
    error_type = "invalid_request_error"
    code = "transfer_row_refused"
    exit_code = 2
