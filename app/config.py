"""Settings: one struct per concern, read from the environment in one place."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import msgspec


class ConfigError(ValueError):
    """A configuration value is missing or malformed."""


class ServerSettings(msgspec.Struct, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    sse_ping_interval: float = 15.0
    default_model: str = "gpt-4o-mini"
    log_format: str = "text"      # "text" or "json" (app.obs.logs)
    log_level: str = "info"
    access_log: bool = True       # one memchat.access line per request, at INFO
    loop_slow_callback_ms: float = 0.0  # > 0: report event-loop callbacks longer than this (app.obs.slow_callbacks)
    malloc_mmap_threshold_kb: int = 0  # > 0: glibc's mmap threshold fixed at this (app.heap); 0: glibc's default
    malloc_trim_idle: float = 10.0  # malloc_trim(0) after this many quiet seconds (app.heap.HeapTrimmer); 0: never
    allocator: str = "auto"       # "auto" (jemalloc when installed), "jemalloc" (required) or "system" (app.heap)


class UpstreamSettings(msgspec.Struct, frozen=True):
    base_url: str | None = None
    api_key: str | None = None
    timeout: float = 600.0
    connect_timeout: float = 10.0
    max_connections: int = 1000
    http_client: str = "aiohttp"  # the SDK's transport: "aiohttp" (the openai[aiohttp] extra) or "httpx" (httpx2)

    @property
    def offline(self) -> bool:
        """No upstream configured: memchat answers with its built-in responder."""
        return not self.base_url and not self.api_key

    @property
    def effective_base_url(self) -> str:
        return self.base_url or "https://api.openai.com/v1"


class StoreSettings(msgspec.Struct, frozen=True):
    data_dir: Path = Path("data")
    uri: str | None = None
    storage_options: dict[str, str] = msgspec.field(default_factory=dict)
    # LanceDB's caches (its defaults: 1 GiB of metadata, 6 GiB of indexes). The metadata cache keeps entries
    # of every table version it has seen, so a server that writes all day grows to the bound (README, "Memory use").
    # So does the index cache: every compaction folds new rows into new index files, and the old files' entries
    # stay until the bound evicts them (~60 MiB per 300-stream soak round); the live indexes are far smaller
    # (~0.7 MiB on disk for 10 000 memories).
    metadata_cache_mb: int = 64
    index_cache_mb: int = 128
    compact_after_writes: int = 32   # a table is compacted once it took this many writes (0: on the interval only)
    keep_versions: float = 30.0      # seconds a table version stays readable after a newer one (compaction's cleanup)

    @property
    def memory_uri(self) -> str:
        return self.uri or str(self.data_dir / "lancedb")

    @property
    def remote(self) -> bool:
        """The store is an object store (``s3://``, ``gs://``, ``az://`` ...), shared by replicas."""
        uri = self.memory_uri
        return "://" in uri and not uri.startswith("file://")


class MemorySettings(msgspec.Struct, frozen=True):
    embedder: str = "local"
    embed_model: str = "text-embedding-3-small"
    embed_isolation: str = "process"  # where the local model runs: its own worker process, or a thread
    embed_runtime: str = "auto"  # what runs its encoder layers: ONNX Runtime when installed ("auto"), numpy, onnx
    embed_query_precision: str = "int8"  # search queries with int8 weights (ONNX only), or "float32" as memories
    top_k: int = 8
    min_score: float | None = None
    token_budget: int = 1200
    commit_after: int = 120
    extractor: str = "llm"
    memory_model: str | None = None
    maintenance_interval: float = 30.0
    commit_lease: float = 60.0          # > the extractor's 30 s timeout: a live commit never loses its claim
    commit_concurrency: int = 16        # with batched writes (`app.commits.batching`); 4 until 2026-12-03
    commit_write_batch: int = 64         # rows of concurrent commits written together (1: one write each)
    commit_sweep_interval: float = 5.0   # how often the turn log is read for conversations other processes left
    commit_takeover_grace: float = 5.0   # seconds past a conversation's deadline before another process commits it
    empty_namespace_ttl: float = 2.0  # how long "this namespace has no memories" is trusted
    vector_cache_mb: int = 256        # namespaces' vectors kept in memory for the dense leg (0: off)
    vector_cache_ttl: float = 5.0     # seconds before a cached namespace is reloaded


class TurnLogSettings(msgspec.Struct, frozen=True):
    journal: bool | None = None   # local write-ahead journal, batched into LanceDB (app.turns.turnlog);
                                  # None: on for a local store, off for an object store (see `journal_for`)
    fsync: bool = False           # fsync each journal group: power-loss safe; a kill -9 needs only write()
    flush_interval: float = 1.0   # seconds between journal -> table flushes
    flush_rows: int = 1000        # ... or sooner, once this many turns wait

    def journal_for(self, store: StoreSettings) -> tuple[bool, str]:
        """Whether answered turns go through the local journal, and why (logged at start-up). A local
        journal survives ``kill -9`` but not the loss of the host, so replicas on an object store write
        each turn to the store before the reply ends unless told otherwise."""
        if self.journal is not None:
            return self.journal, "MEMCHAT_TURNLOG_JOURNAL=" + ("true" if self.journal else "false")
        if store.remote:
            return False, ("the store is remote: each answered turn is written to it before the reply ends, "
                           "so it survives the loss of this host")
        return True, "the store is local: answered turns are journaled on this host's disk and flushed in batches"


class AuthSettings(msgspec.Struct, frozen=True):
    static_keys: dict[str, str] = msgspec.field(default_factory=dict)
    create_key_if_none: bool = True


class Settings(msgspec.Struct, frozen=True):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    upstream: UpstreamSettings = msgspec.field(default_factory=UpstreamSettings)
    store: StoreSettings = msgspec.field(default_factory=StoreSettings)
    memory: MemorySettings = msgspec.field(default_factory=MemorySettings)
    turnlog: TurnLogSettings = msgspec.field(default_factory=TurnLogSettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        return settings_from_env(os.environ if env is None else env)


def parse_api_keys(raw: str) -> dict[str, str]:
    """Parse ``key=org,key2=org2`` into ``{key: org}``."""
    keys: dict[str, str] = {}
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, org = part.partition("=")
        key, org = key.strip(), org.strip()
        if not sep or not key or not org:
            raise ConfigError(f"MEMCHAT_API_KEYS entry {part!r} is not of the form key=org")
        keys[key] = org
    return keys


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    return value


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    """A duration that must be > 0 (a timeout, a lease, an interval)."""
    value = _float(env, name, default)
    assert value is not None
    if value <= 0:
        raise ConfigError(f"{name} must be > 0 seconds, got {value:g}")
    return value


def _nonneg(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    assert value is not None
    if value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value}")
    return value


def _auto_bool(env: Mapping[str, str], name: str) -> bool | None:
    """``auto`` (or unset) is None; otherwise a boolean."""
    if (env.get(name) or "").strip().lower() in ("", "auto"):
        return None
    return _bool(env, name, False)


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, default: str, choices: set[str]) -> str:
    value = (env.get(name) or "").strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def settings_from_env(env: Mapping[str, str]) -> Settings:
    storage_raw = env.get("MEMCHAT_STORAGE_OPTIONS", "").strip()
    try:
        storage_options = json.loads(storage_raw) if storage_raw else {}
    except json.JSONDecodeError as exc:
        raise ConfigError("MEMCHAT_STORAGE_OPTIONS must be a JSON object") from exc
    if not isinstance(storage_options, dict):
        raise ConfigError("MEMCHAT_STORAGE_OPTIONS must be a JSON object")
    base_url = (env.get("MEMCHAT_UPSTREAM_BASE_URL") or "").strip() or None
    api_key = (env.get("MEMCHAT_UPSTREAM_API_KEY") or env.get("OPENAI_API_KEY") or "").strip() or None
    return Settings(
        server=ServerSettings(
            host=env.get("MEMCHAT_HOST", "127.0.0.1"),
            port=_int(env, "MEMCHAT_PORT", 8000, maximum=65535),
            workers=_int(env, "MEMCHAT_WORKERS", 1, minimum=1),
            sse_ping_interval=_positive(env, "MEMCHAT_SSE_PING_INTERVAL", 15.0),
            default_model=env.get("MEMCHAT_DEFAULT_MODEL", "gpt-4o-mini"),
            log_format=_choice(env, "MEMCHAT_LOG_FORMAT", "text", {"text", "json"}),
            log_level=_choice(env, "MEMCHAT_LOG_LEVEL", "info", {"critical", "error", "warning", "info", "debug",
                                                                "trace"}),
            access_log=_bool(env, "MEMCHAT_ACCESS_LOG", True),
            loop_slow_callback_ms=_nonneg(env, "MEMCHAT_LOOP_SLOW_CALLBACK_MS", 0.0),
            malloc_mmap_threshold_kb=_int(env, "MEMCHAT_MALLOC_MMAP_THRESHOLD_KB", 0, minimum=0, maximum=32768),
            malloc_trim_idle=_nonneg(env, "MEMCHAT_MALLOC_TRIM_IDLE", 10.0),
            allocator=_choice(env, "MEMCHAT_ALLOCATOR", "auto", {"auto", "system", "jemalloc"}),
        ),
        upstream=UpstreamSettings(
            base_url=base_url,
            api_key=api_key,
            timeout=_positive(env, "MEMCHAT_UPSTREAM_TIMEOUT", 600.0),
            connect_timeout=_positive(env, "MEMCHAT_UPSTREAM_CONNECT_TIMEOUT", 10.0),
            http_client=_choice(env, "MEMCHAT_UPSTREAM_HTTP_CLIENT", "aiohttp", {"httpx", "aiohttp"}),
        ),
        store=StoreSettings(
            data_dir=Path(env.get("MEMCHAT_DATA_DIR", "data")),
            uri=(env.get("MEMCHAT_STORE_URI") or "").strip() or None,
            storage_options={str(k): str(v) for k, v in storage_options.items()},
            metadata_cache_mb=_int(env, "MEMCHAT_STORE_METADATA_CACHE_MB", 64, minimum=1),
            index_cache_mb=_int(env, "MEMCHAT_STORE_INDEX_CACHE_MB", 128, minimum=1),
            compact_after_writes=_int(env, "MEMCHAT_COMPACT_AFTER_WRITES", 32, minimum=0),
            keep_versions=_positive(env, "MEMCHAT_STORE_KEEP_VERSIONS", 30.0),
        ),
        memory=MemorySettings(
            embedder=_choice(env, "MEMCHAT_EMBEDDER", "local", {"local", "openai", "none"}),
            embed_model=env.get("MEMCHAT_EMBED_MODEL", "text-embedding-3-small"),
            embed_isolation=_choice(env, "MEMCHAT_EMBEDDER_ISOLATION", "process", {"process", "thread"}),
            embed_runtime=_choice(env, "MEMCHAT_EMBEDDER_RUNTIME", "auto", {"auto", "numpy", "onnx"}),
            embed_query_precision=_choice(env, "MEMCHAT_EMBEDDER_QUERY_PRECISION", "int8", {"int8", "float32"}),
            top_k=_int(env, "MEMCHAT_TOP_K", 8, minimum=1),
            min_score=_float(env, "MEMCHAT_MIN_SCORE", None),
            token_budget=_int(env, "MEMCHAT_MEMORY_TOKEN_BUDGET", 1200, minimum=50),
            commit_after=_int(env, "MEMCHAT_COMMIT_AFTER", 120),
            extractor=_choice(env, "MEMCHAT_EXTRACTOR", "llm", {"llm", "heuristic"}),
            memory_model=(env.get("MEMCHAT_MEMORY_MODEL") or "").strip() or None,
            maintenance_interval=_positive(env, "MEMCHAT_MAINTENANCE_INTERVAL", 30.0),
            commit_lease=_positive(env, "MEMCHAT_COMMIT_LEASE", 60.0),
            commit_concurrency=_int(env, "MEMCHAT_COMMIT_CONCURRENCY", 16, minimum=1),
            commit_write_batch=_int(env, "MEMCHAT_COMMIT_WRITE_BATCH", 64, minimum=1),
            commit_sweep_interval=max(0.1, _nonneg(env, "MEMCHAT_COMMIT_SWEEP_INTERVAL", 5.0)),
            commit_takeover_grace=_nonneg(env, "MEMCHAT_COMMIT_TAKEOVER_GRACE", 5.0),
            empty_namespace_ttl=_nonneg(env, "MEMCHAT_EMPTY_NAMESPACE_TTL", 2.0),
            vector_cache_mb=_int(env, "MEMCHAT_VECTOR_CACHE_MB", 256),
            vector_cache_ttl=_nonneg(env, "MEMCHAT_VECTOR_CACHE_TTL", 5.0),
        ),
        turnlog=TurnLogSettings(
            journal=_auto_bool(env, "MEMCHAT_TURNLOG_JOURNAL"),
            fsync=_bool(env, "MEMCHAT_TURNLOG_FSYNC", False),
            flush_interval=max(0.01, _nonneg(env, "MEMCHAT_TURNLOG_FLUSH_INTERVAL", 1.0)),
            flush_rows=_int(env, "MEMCHAT_TURNLOG_FLUSH_ROWS", 1000, minimum=1),
        ),
        auth=AuthSettings(static_keys=parse_api_keys(env.get("MEMCHAT_API_KEYS", ""))),
    )
