"""One settings object, built once at start-up and passed down.

Sources, highest first: explicit arguments (CLI flags), environment variables (`TUNELOOP_*`, plus
`OPENAI_API_KEY`), the TOML file given with `--config`, then the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from tuneloop.errors import ConfigError

RedactionKind = Literal["email", "phone", "card"]
_NEVER_FORWARDED = frozenset(
    {"host", "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
     "content-length", "expect", "authorization", "api-key", "x-api-key", "cookie",
     "forwarded", "x-real-ip", "via", "x-original-url", "x-rewrite-url",
     "x-http-method-override", "content-encoding", "accept-encoding"}
)


MIN_CANARY_SHARE = 0.1
"""The smallest canary share (percent of an alias's traffic) a promotion takes: below it the
canary hardly gets a request and is never judged (the cycle's own floor is higher,
exporter/cycle_config.py)."""
MAX_CANARY_SHARE = 90.0
"""The largest canary share: the current model keeps at least 10% of the traffic to be
compared with (the cycle's cap too). A share of 100 is no canary but a full promotion."""
MAX_ROUTE_WEIGHT = 1e6
"""A route target's largest weight (proxy/routing.py): the route's total stays a finite
number. Also the bound a rollback's rebuilt route keeps (storage/rollback_edits.py)."""


def canary_share_problem(share: float) -> str | None:
    """Why a promotion's share is neither a canary share nor 100 (a full promotion), or None."""
    if MIN_CANARY_SHARE <= share <= MAX_CANARY_SHARE or share == 100:
        return None
    if 0 < share < MIN_CANARY_SHARE:
        return (f"a canary share of {share:.10g}% is too small: the canary would hardly get a "
                f"request and never be judged; give it at least {MIN_CANARY_SHARE:g} (percent)")
    if MAX_CANARY_SHARE < share < 100:
        return (f"a canary share of {share:.10g}% is too large: the current model must keep at "
                f"least {100 - MAX_CANARY_SHARE:g}% of the traffic to be compared with; give "
                f"at most {MAX_CANARY_SHARE:g} (percent), or 100 to promote fully")
    return (f"the canary share must be a number between {MIN_CANARY_SHARE:g} and "
            f"{MAX_CANARY_SHARE:g} (percent), or 100 to promote fully; got {share:.10g}")


def public_url(url: str) -> str:
    """A database URL fit for messages and logs: user, host, port and database, without the
    password or the query (which may carry one: `?password=...`)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        where = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "<an invalid database URL>"
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{where}{parts.path}"


class ModelPrice(BaseModel):
    """A model's price in USD per 1M tokens (the settings' `[prices."model"]` table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_1m: float = Field(ge=0)
    output_per_1m: float = Field(ge=0)
    cached_input_per_1m: float | None = Field(None, ge=0)
    """Prompt tokens read from the provider's prompt cache (default: the input price)."""
    training_per_1m: float | None = Field(None, ge=0)
    """Fine-tuning a model of this name as the base, per 1M trained tokens."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TUNELOOP_",
        extra="forbid",
        populate_by_name=True,
        toml_file=None,
    )

    # where the proxy listens and what it owns
    host: str = "127.0.0.1"
    port: int = Field(4000, ge=1, le=65535)
    db: Path | str = Path("tuneloop.duckdb")
    """A DuckDB file (one machine), or a `postgresql://` URL (a store shared by replicas)."""
    state_dir: Path = Path("tuneloop-state")
    """With Postgres: where this replica keeps its local files (spool, generated secrets,
    exports). With DuckDB they live beside the database file."""
    upstream: str = "https://api.openai.com/v1"
    shared_reload_s: float = Field(5.0, gt=0, le=3600)
    """With Postgres: a replica reloads routes and keys at every change another replica
    notifies (LISTEN/NOTIFY), and every this many seconds in any case (a missed one)."""
    store_wait_s: float = Field(5.0, gt=0, le=600)
    """With Postgres: how long a call waits for a connection to the store (the pool's wait);
    then, as while Postgres is down, the admin API answers 503 storage_unavailable."""
    shared_timeout_s: float = Field(5.0, ge=1, le=600)
    """With Postgres: the replica's LISTEN connection is checked after this many seconds
    without a notification and made again when it has not answered within as long more
    (TCP keepalives and tcp_user_timeout drop one the network lost within about as long, and
    the same on both ends of the store's pooled connections); a reload's queries (routes,
    keys) are stopped after this long."""

    # credentials (never logged, never stored in the database)
    admin_token: SecretStr | None = None
    reviewer_token: SecretStr | None = None
    openai_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key")
    )
    # fine-tuning providers (`tuneloop finetune --provider`): keys from their usual variables;
    # the base URLs are settings so a deployment (or a test) can point them elsewhere
    together_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("TOGETHER_API_KEY", "together_api_key"))
    together_base_url: str = "https://api.together.xyz/v1"
    """Together's API: files, fine-tunes, and the OpenAI-compatible inference a route uses."""
    fireworks_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("FIREWORKS_API_KEY", "fireworks_api_key"))
    fireworks_account_id: str | None = Field(
        None, validation_alias=AliasChoices("FIREWORKS_ACCOUNT_ID", "fireworks_account_id"))
    fireworks_base_url: str = "https://api.fireworks.ai"
    """Fireworks' control plane (datasets, fine-tuning jobs, deployed models)."""
    fireworks_inference_url: str = "https://api.fireworks.ai/inference/v1"
    """Fireworks' OpenAI-compatible inference, the base_url a route to a Fireworks model uses."""
    fireworks_deploy_timeout_s: float = Field(900.0, gt=0, le=86400)
    """How long serving a Fireworks LoRA waits for it to be DEPLOYED (then the cycle's `wait`
    step fails and is tried again at its next run: the model is never evaluated unloaded)."""
    fireworks_deploy_poll_s: float = Field(10.0, gt=0, le=600)
    """How often that wait asks Fireworks for the deployed model's state."""
    azure_openai_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("AZURE_OPENAI_API_KEY", "azure_openai_api_key"))
    azure_openai_endpoint: str | None = Field(
        None, validation_alias=AliasChoices("AZURE_OPENAI_ENDPOINT", "azure_openai_endpoint"))
    azure_openai_api_version: str = Field(
        "2024-10-21", validation_alias=AliasChoices("OPENAI_API_VERSION",
                                                    "azure_openai_api_version"))
    issue_keys: bool = False
    """When true, apps authenticate with keys the proxy issues and the proxy holds the
    upstream key (`OPENAI_API_KEY`) itself."""

    # where CLI commands and the UI find the server
    api: str = "http://127.0.0.1:4000"

    # request handling
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    """Largest body accepted on the logged endpoints (chat, completions, responses, embeddings)."""
    max_passthrough_bytes: int = Field(1024 * 1024 * 1024, ge=1024)
    """Largest body relayed on other /v1/* paths (file uploads for fine-tuning, ...)."""
    connect_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(600.0, gt=0)
    second_opinion_timeout_s: float = Field(10.0, gt=0)
    """While a canary is open, how long a failure waits on the other arm's second opinion (its
    answer's start); then the failure stands, as when the second opinion fails."""
    upstream_stall_s: float = Field(30.0, gt=0)
    """A client that hangs up after the upstream was silent this long (no byte before the
    answer started, or since a stream's last chunk) gave up on a stall: an error of that
    target in the canary's health. A quicker hang-up is the user's cancel, judged for nobody."""
    background_opinions_max: int = Field(16, ge=0)
    """While a canary is open, at most this many *background* second opinions in flight per
    process (proxy/background_opinion.py): a second opinion cut by `second_opinion_timeout_s`
    or by the client's hang-up goes on off the hot path, and a client hanging up before its
    answer's first byte gets the other arm asked. Above it they are skipped (their requests
    stay unjudged; `tuneloop_background_opinions_skipped_total`); 0 turns them off."""
    background_opinions_per_key: int = Field(4, ge=1)
    """One client key's share of those (the credential the request came with: an issued key,
    or the app's own upstream key; none is one key too): beyond it, a key's opinion is asked
    only while at least this many stay free for the other keys, so one app key's failures or
    hang-ups cannot take the whole budget and leave the others' unjudged. Else skipped
    (`key_share_full`, counted like `budget_full`)."""
    hangup_probe_min_s: float = Field(0.5, ge=0)
    """A client hanging up before its answer sooner than this after its request probes nothing
    (an instant cancel costs no upstream call; the request stays unjudged)."""

    # the log writer: spool append on the request path, batch ingest off it
    spool_dir: Path | None = None
    spool_max_bytes: int = Field(1024 * 1024 * 1024, ge=1024)
    # DuckDB pays a fixed cost per commit and per batch (about 25 ms here): ingesting once a
    # second in batches of thousands costs ~30 µs a row instead of ~170 µs at 200-row batches.
    ingest_batch_rows: int = Field(5000, ge=1)
    ingest_interval_ms: int = Field(1000, ge=1)
    # batches of at least this many rows have their search index computed in a worker process
    # (keeps ~20 ms of GIL per thousand rows off the event loop), as are stream usage
    # estimates; 0 turns the worker off (everything in-process)
    index_worker_min_rows: int = Field(200, ge=0)
    # a page of a text search (`q`) the review list asks is answered within this or refused
    # as a 400 search_too_broad (storage.search_budget)
    search_page_budget_s: float = Field(2.0, gt=0)
    # the review list answers previews (storage/previews.py), so a page of rows a key holder
    # logged with 30 MB bodies costs the proxy kilobytes, not gigabytes
    preview_text_chars: int = Field(2_000, ge=16)
    """Each string of a list item (a message's content, a body's text) is cut to this many
    characters, ending in `…`; the item says `truncated`."""
    preview_field_chars: int = Field(16_384, ge=256)
    """The database hands over at most this many characters of each logged body (request,
    response, sent_request) of a list item; the rest stays in the store."""
    list_page_max_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    """A page of GET /admin/interactions stops before the item that would take it past this
    many bytes (it always holds one); its `next_cursor` goes on from there."""
    item_full_max_chars: int = Field(8 * 1024 * 1024, ge=1024)
    """GET /admin/interactions/{id} (and the queue's next item) answer an item whole when its
    logged bodies hold at most this many characters together; a bigger one is answered as a
    preview with `too_big` (8 MiB: an edit is at most that big, storage.messages)."""

    feedback_max_per_key: int = Field(20, ge=1, le=100_000)
    """POST /v1/feedback stores at most this many entries per interaction from one key (its
    public prefix; without issued keys, from all apps together); past it 409
    `feedback_limit`, nothing stored (a thumbs up, a change of mind, a comment or two)."""
    stats_top_models: int = Field(30, ge=1, le=10_000)
    """GET /admin/stats answers this many models in `by_model` (the most interactions), then
    one row (`model` null) that sums the rest."""

    # data governance
    redact: list[RedactionKind] = Field(default_factory=list)
    retention_days: int | None = Field(None, ge=1)
    delete_chunk_rows: int = Field(5_000, ge=1, le=1_000_000)
    """forget and retention delete this many interactions a transaction: the store's other
    writes (every replica's, on Postgres) go on between two."""

    # prices (USD per 1M tokens) used before litellm's map: models it doesn't know, a
    # negotiated price, training prices for break-even (`tuneloop savings`)
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    savings_metrics_days: int = Field(7, ge=1, le=90)
    """/metrics' savings gauges cover the production traffic of this many days."""
    savings_metrics_cache_s: float = Field(60.0, ge=0, le=3600)
    """/metrics reads the savings from the database at most once in this many seconds."""
    metrics_auth: Literal["open", "token"] = "open"
    """`token`: /metrics needs `Authorization: Bearer` with the metrics token, the reviewer
    token or the admin token (it shows costs and model ids). `open`: anyone who reaches the
    port may scrape it."""
    metrics_token: SecretStr | None = None
    """A token that may read /metrics and nothing else (a Prometheus `bearer_token`)."""

    # the UI
    ui_password: SecretStr | None = None
    ui_admin_token: SecretStr | None = None
    """The admin token for the app's admin-only buttons (rollback). Off by default: the app
    holds the reviewer token and shows those buttons disabled."""

    # Fault injection (reliability tests only): enables POST /admin/faults, which can make the
    # storage writer fail for N seconds. A root process ignores file modes, so an unwritable
    # database can't be simulated for real. Off by default.
    fault_injection: bool = False

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # redaction: the country national phone numbers (no leading +) are read in
    redact_phone_region: str = Field("US", pattern=r"^[A-Za-z]{2}$")
    redaction_key: SecretStr | None = None
    """The key of the pseudonymous user/session ids (64 hex digits). Unset with DuckDB: made
    once beside the database. Required with Postgres and redaction on, so every replica
    gives a user the same pseudonym."""

    # review: how long opening a queue item leases it to its reviewer (renewed while they work)
    review_claim_s: float = Field(300.0, ge=1, le=86400)

    # limits on what a client sends, checked before anything is forwarded (see README)
    max_json_depth: int = Field(64, ge=2, le=200)
    """Deepest nesting of a JSON request body (OpenAI's API has nothing deeper)."""
    header_timeout_s: float = Field(10.0, gt=0)
    """From the first byte of a request to the end of its headers; then 408 and close."""
    keep_alive_timeout_s: float = Field(75.0, gt=0)
    """How long a connection may wait idle for its next request; longer than clients' pools
    keep idle connections (httpx 5 s, load balancers 60 s), so that they close it first."""
    body_idle_timeout_s: float = Field(30.0, gt=0)
    """Longest pause between two pieces of a request body; then 408 and close."""
    body_timeout_s: float = Field(300.0, gt=0)
    """Longest time to receive a whole body on the logged endpoints (uploads on other paths
    are bounded by the pause limit only)."""

    # the review app's sign-in cookie, guidelines and reject reasons
    ui_cookie_secret: SecretStr | None = None
    """Signs the review app's sign-in cookie; when unset, one is generated once and kept
    beside the database (`<db>.ui-secret`, mode 0600)."""
    ui_session_hours: float = Field(12.0, gt=0, le=24 * 30)
    """How long a reviewer stays signed in without signing in again."""
    ui_guidelines: str = ""
    """Review guidelines (Markdown, our own words) shown in the review app's side panel."""
    ui_reject_reasons: list[str] = Field(
        default_factory=lambda: ["Factually wrong", "Does not answer the question",
                                 "Unsafe or harmful", "Leaks private data", "Wrong format",
                                 "Too long or rambling", "Off-topic", "Duplicate",
                                 "Truncated or empty answer"],
        max_length=9)
    """Canned reject reasons, put in the reason box by the keys 1-9 in the review app."""

    dataset_page_size: int = Field(2000, ge=1)
    """Examples read per query while `/admin/datasets/examples` streams a dataset (memory per
    stream, not what it returns)."""

    # `tuneloop sql` (POST /admin/sql): one query at a time per token, bounded answers
    sql_max_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    """Largest JSON answer of a read-only query; a larger one is refused with 413."""
    sql_max_rows: int = Field(100_000, ge=1)
    """Most rows a read-only query may ask for (`max_rows`)."""
    sql_timeout_s: float = Field(10.0, gt=0)
    """A read-only query running longer is interrupted."""
    sql_db: SecretStr | None = None
    """With Postgres: the `postgresql://` URL read-only queries connect with, a role granted
    SELECT and nothing more (README, "tuneloop sql"), so the database itself refuses any
    write. Unset: the store's own role, in a READ ONLY transaction."""

    # the hot path: extra headers forwarded upstream, connection cap, passthrough uploads
    forward_headers: frozenset[str] = frozenset()
    """Request headers forwarded upstream besides the ones OpenAI documents (a gateway's own
    header, say); lower-case names. Hop-by-hop, forwarding and credential headers can't be
    listed."""
    max_connections: int = Field(1000, ge=1)
    """Most client connections (and requests in progress) at once; beyond it a new request is
    answered 503 and its connection closed."""
    passthrough_body_timeout_s: float = Field(3600.0, gt=0)
    """Longest time to receive a whole body on the other /v1/* paths (file uploads)."""

    @field_validator("forward_headers")
    @classmethod
    def _forwardable(cls, value: frozenset[str]) -> frozenset[str]:
        names = frozenset(name.strip().lower() for name in value)
        for name in names:
            if (not name or not all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in name)
                    or name in _NEVER_FORWARDED or name.startswith(("proxy-", "x-forwarded-",
                                                                    "x-tuneloop-"))):
                raise ValueError(f"{name!r} can't be forwarded upstream")
        return names

    @field_validator("db", mode="before")
    @classmethod
    def _path_or_url(cls, value: object) -> Path | str:
        text = str(value)
        if text.startswith(("postgresql://", "postgres://")):
            return text
        if "://" in text:
            raise ValueError(f"db must be a DuckDB file path or a postgresql:// URL, "
                             f"got {text.split('://')[0]}://...")
        return Path(text)

    @field_validator("sql_db")
    @classmethod
    def _sql_db_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
                ("postgresql://", "postgres://")):
            raise ValueError("sql_db must be a postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _metrics_token_needs_token_auth(self) -> Settings:
        if self.metrics_token is not None and self.metrics_auth != "token":
            raise ValueError("metrics_token is set but metrics_auth is 'open': /metrics would "
                             "not ask for it; set metrics_auth = \"token\"")
        if self.metrics_token is not None and not self.metrics_token.get_secret_value().strip():
            raise ValueError("metrics_token is blank")
        return self

    @model_validator(mode="after")
    def _sql_db_with_postgres(self) -> Settings:
        if self.sql_db is not None and not self.db_is_postgres:
            raise ValueError("sql_db is a Postgres role for read-only queries: it needs a "
                             "postgresql:// db (a DuckDB file is opened read-only instead)")
        return self

    @property
    def db_is_postgres(self) -> bool:
        return isinstance(self.db, str)

    @property
    def db_file(self) -> Path | None:
        """The DuckDB file, or None with Postgres."""
        return self.db if isinstance(self.db, Path) else None

    @property
    def db_label(self) -> str:
        """The store for messages: a path, or the URL without its password."""
        return str(self.db) if isinstance(self.db, Path) else public_url(self.db)

    def local_file(self, suffix: str) -> Path:
        """A file of this process beside the DuckDB file (`tuneloop.duckdb.<suffix>`), or in
        the state folder with Postgres (`tuneloop-state/tuneloop.<suffix>`)."""
        if isinstance(self.db, Path):
            return self.db.with_name(f"{self.db.name}.{suffix}")
        return self.state_dir / f"tuneloop.{suffix}"

    @property
    def ui_secret_file(self) -> Path:
        return self.local_file("ui-secret")

    @property
    def ui_signouts_file(self) -> Path:
        return self.local_file("ui-signouts")

    @field_validator("upstream", "api", "together_base_url", "fireworks_base_url",
                     "fireworks_inference_url", "azure_openai_endpoint")
    @classmethod
    def _strip_trailing_slash(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    def env_secret(self, name: str) -> str | None:
        """A key named by a route's `api_key_env`, read when the route is used."""
        return os.environ.get(name) or None

    @property
    def spool_path(self) -> Path:
        return self.spool_dir or self.local_file("spool")

    @property
    def admin_token_file(self) -> Path:
        return self.local_file("admin-token")

    @property
    def exports_root(self) -> Path:
        return self.local_file("exports")


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings; `overrides` with a value of None are ignored (unset CLI flags)."""
    given = {key: value for key, value in overrides.items() if value is not None}
    cls: type[Settings] = Settings
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file not found: {config_file}")

        class FileSettings(Settings):
            model_config = SettingsConfigDict(toml_file=config_file)

        cls = FileSettings
    try:
        return cls(**given)
    except ValueError as exc:
        raise ConfigError(f"invalid settings: {exc}") from exc
