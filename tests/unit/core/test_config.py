"""`app.config`: Settings.from_env defaults, the parsing of every variable, and clear errors on bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import ConfigError, Settings, parse_api_keys


def test_defaults_from_an_empty_environment() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert (s.server.host, s.server.port, s.server.workers) == ("127.0.0.1", 8000, 1)
    assert s.server.sse_ping_interval == 15.0 and s.server.default_model == "gpt-4o-mini"
    assert s.upstream.base_url is None and s.upstream.api_key is None and s.upstream.offline
    assert s.upstream.effective_base_url == "https://api.openai.com/v1"
    assert (s.upstream.timeout, s.upstream.connect_timeout) == (600.0, 10.0)
    assert s.store.data_dir == Path("data") and s.store.uri is None and s.store.storage_options == {}
    assert s.store.memory_uri == str(Path("data") / "lancedb")
    m = s.memory
    assert (m.embedder, m.embed_model, m.top_k, m.min_score, m.token_budget) == (
        "local", "text-embedding-3-small", 8, None, 1200)
    assert m.embed_isolation == "process" and m.embed_runtime == "auto" and m.embed_query_precision == "int8"
    assert (s.store.metadata_cache_mb, s.store.index_cache_mb) == (64, 128)
    assert (m.commit_after, m.extractor, m.memory_model, m.commit_lease, m.commit_concurrency) == (
        120, "llm", None, 60.0, 16)
    assert (m.commit_write_batch, s.store.compact_after_writes, s.store.keep_versions) == (64, 32, 30.0)
    assert (m.maintenance_interval, m.empty_namespace_ttl, m.vector_cache_mb, m.vector_cache_ttl) == (
        30.0, 2.0, 256, 5.0)
    assert (m.commit_sweep_interval, m.commit_takeover_grace) == (5.0, 5.0)
    assert s.turnlog.journal is None and s.turnlog.fsync is False   # None: decided by the store (journal_for)
    assert (s.turnlog.flush_interval, s.turnlog.flush_rows) == (1.0, 1000)
    assert not s.store.remote and s.turnlog.journal_for(s.store)[0] is True
    assert s.auth.static_keys == {}


def test_every_variable_is_read() -> None:
    env = {
        "MEMCHAT_HOST": "0.0.0.0", "MEMCHAT_PORT": "9001", "MEMCHAT_WORKERS": "3",
        "MEMCHAT_SSE_PING_INTERVAL": "2.5", "MEMCHAT_DEFAULT_MODEL": "m-1",
        "MEMCHAT_UPSTREAM_BASE_URL": " http://up:1/v1 ", "MEMCHAT_UPSTREAM_API_KEY": " sk-1 ",
        "MEMCHAT_UPSTREAM_TIMEOUT": "30", "MEMCHAT_UPSTREAM_CONNECT_TIMEOUT": "1.5",
        "MEMCHAT_DATA_DIR": "/var/memchat", "MEMCHAT_STORE_URI": " s3://b/p ",
        "MEMCHAT_STORAGE_OPTIONS": '{"region": "eu-west-1", "timeout": 30}',
        "MEMCHAT_EMBEDDER": " OpenAI ", "MEMCHAT_EMBED_MODEL": "e-2", "MEMCHAT_TOP_K": "3",
        "MEMCHAT_EMBEDDER_ISOLATION": " Thread ", "MEMCHAT_EMBEDDER_RUNTIME": "NumPy", "MEMCHAT_STORE_METADATA_CACHE_MB": "16",
        "MEMCHAT_EMBEDDER_QUERY_PRECISION": " Float32 ",
        "MEMCHAT_STORE_INDEX_CACHE_MB": "32",
        "MEMCHAT_MIN_SCORE": "0.25", "MEMCHAT_MEMORY_TOKEN_BUDGET": "50", "MEMCHAT_COMMIT_AFTER": "0",
        "MEMCHAT_EXTRACTOR": "HEURISTIC", "MEMCHAT_MEMORY_MODEL": " small ",
        "MEMCHAT_MAINTENANCE_INTERVAL": "5", "MEMCHAT_COMMIT_LEASE": "7.5", "MEMCHAT_COMMIT_CONCURRENCY": "2",
        "MEMCHAT_COMMIT_WRITE_BATCH": "1", "MEMCHAT_COMPACT_AFTER_WRITES": "0", "MEMCHAT_STORE_KEEP_VERSIONS": "90",
        "MEMCHAT_COMMIT_SWEEP_INTERVAL": "0.5", "MEMCHAT_COMMIT_TAKEOVER_GRACE": "0",
        "MEMCHAT_EMPTY_NAMESPACE_TTL": "0", "MEMCHAT_VECTOR_CACHE_MB": "0", "MEMCHAT_VECTOR_CACHE_TTL": "0.5",
        "MEMCHAT_TURNLOG_JOURNAL": "off", "MEMCHAT_TURNLOG_FSYNC": "YES", "MEMCHAT_TURNLOG_FLUSH_INTERVAL": "0.2",
        "MEMCHAT_TURNLOG_FLUSH_ROWS": "10", "MEMCHAT_API_KEYS": " k1 = org1 , k2=org2,, ",
    }
    s = Settings.from_env(env)
    assert (s.server.host, s.server.port, s.server.workers) == ("0.0.0.0", 9001, 3)
    assert (s.server.sse_ping_interval, s.server.default_model) == (2.5, "m-1")
    assert (s.upstream.base_url, s.upstream.api_key) == ("http://up:1/v1", "sk-1")
    assert not s.upstream.offline and s.upstream.effective_base_url == "http://up:1/v1"
    assert (s.upstream.timeout, s.upstream.connect_timeout) == (30.0, 1.5)
    assert s.store.data_dir == Path("/var/memchat") and s.store.memory_uri == "s3://b/p"
    assert s.store.storage_options == {"region": "eu-west-1", "timeout": "30"}
    m = s.memory
    assert (m.embedder, m.embed_model, m.top_k, m.min_score, m.token_budget, m.commit_after) == (
        "openai", "e-2", 3, 0.25, 50, 0)
    assert m.embed_isolation == "thread" and m.embed_runtime == "numpy" and m.embed_query_precision == "float32"
    assert (s.store.metadata_cache_mb, s.store.index_cache_mb) == (16, 32)
    assert (m.extractor, m.memory_model, m.maintenance_interval, m.commit_lease, m.commit_concurrency) == (
        "heuristic", "small", 5.0, 7.5, 2)
    assert (m.commit_write_batch, s.store.compact_after_writes, s.store.keep_versions) == (1, 0, 90.0)
    assert (m.empty_namespace_ttl, m.vector_cache_mb, m.vector_cache_ttl) == (0.0, 0, 0.5)
    assert (m.commit_sweep_interval, m.commit_takeover_grace) == (0.5, 0.0)
    assert s.store.remote and s.turnlog.journal_for(s.store)[0] is False   # told so explicitly
    assert (s.turnlog.journal, s.turnlog.fsync, s.turnlog.flush_interval, s.turnlog.flush_rows) == (
        False, True, 0.2, 10)
    assert s.auth.static_keys == {"k1": "org1", "k2": "org2"}


def test_openai_api_key_is_the_fallback_upstream_key() -> None:
    assert Settings.from_env({"OPENAI_API_KEY": "sk-o"}).upstream.api_key == "sk-o"
    both = {"OPENAI_API_KEY": "sk-o", "MEMCHAT_UPSTREAM_API_KEY": "sk-m"}
    assert Settings.from_env(both).upstream.api_key == "sk-m"
    only_key = Settings.from_env({"OPENAI_API_KEY": "sk-o"}).upstream
    assert not only_key.offline and only_key.effective_base_url == "https://api.openai.com/v1"
    assert Settings.from_env({"MEMCHAT_UPSTREAM_API_KEY": "  "}).upstream.offline


def test_blank_values_mean_the_default() -> None:
    env = {name: "  " for name in ("MEMCHAT_PORT", "MEMCHAT_TOP_K", "MEMCHAT_MIN_SCORE", "MEMCHAT_TURNLOG_JOURNAL",
                                   "MEMCHAT_UPSTREAM_BASE_URL", "MEMCHAT_STORE_URI", "MEMCHAT_STORAGE_OPTIONS",
                                   "MEMCHAT_MEMORY_MODEL", "MEMCHAT_COMMIT_LEASE")}
    s = Settings.from_env(env)
    assert s.server.port == 8000 and s.memory.top_k == 8 and s.memory.min_score is None
    assert s.turnlog.journal is None and s.upstream.base_url is None and s.store.uri is None
    assert s.store.storage_options == {} and s.memory.memory_model is None and s.memory.commit_lease == 60.0


@pytest.mark.parametrize(("name", "raw"), [("MEMCHAT_TURNLOG_JOURNAL", v) for v in ("1", "true", "Yes", " ON ")])
def test_true_spellings(name: str, raw: str) -> None:
    assert Settings.from_env({name: raw}).turnlog.journal is True
    assert Settings.from_env({"MEMCHAT_TURNLOG_FSYNC": raw}).turnlog.fsync is True


@pytest.mark.parametrize("raw", ["0", "false", "No", "OFF"])
def test_false_spellings(raw: str) -> None:
    assert Settings.from_env({"MEMCHAT_TURNLOG_JOURNAL": raw}).turnlog.journal is False


def test_a_zero_flush_interval_is_clamped() -> None:
    assert Settings.from_env({"MEMCHAT_TURNLOG_FLUSH_INTERVAL": "0"}).turnlog.flush_interval == 0.01
    assert Settings.from_env({"MEMCHAT_COMMIT_SWEEP_INTERVAL": "0"}).memory.commit_sweep_interval == 0.1


@pytest.mark.parametrize(("env", "remote", "journal"), [
    ({}, False, True),
    ({"MEMCHAT_TURNLOG_JOURNAL": "auto"}, False, True),
    ({"MEMCHAT_STORE_URI": "s3://bucket/prefix"}, True, False),
    ({"MEMCHAT_STORE_URI": "gs://bucket", "MEMCHAT_TURNLOG_JOURNAL": " AUTO "}, True, False),
    ({"MEMCHAT_STORE_URI": "file:///srv/lancedb"}, False, True),
    ({"MEMCHAT_STORE_URI": "s3://bucket", "MEMCHAT_TURNLOG_JOURNAL": "true"}, True, True),
    ({"MEMCHAT_TURNLOG_JOURNAL": "false"}, False, False),
])
def test_the_journal_follows_the_store_unless_told(env: dict[str, str], remote: bool, journal: bool) -> None:
    s = Settings.from_env(env)
    decided, why = s.turnlog.journal_for(s.store)
    assert s.store.remote is remote and decided is journal and why


@pytest.mark.parametrize(("name", "raw", "words"), [
    ("MEMCHAT_PORT", "eighty", "must be an integer"),
    ("MEMCHAT_PORT", "80.5", "must be an integer"),
    ("MEMCHAT_PORT", "-1", "must be >= 0"),
    ("MEMCHAT_WORKERS", "0", "must be >= 1"),
    ("MEMCHAT_TOP_K", "0", "must be >= 1"),
    ("MEMCHAT_MEMORY_TOKEN_BUDGET", "49", "must be >= 50"),
    ("MEMCHAT_COMMIT_AFTER", "-5", "must be >= 0"),
    ("MEMCHAT_COMMIT_CONCURRENCY", "0", "must be >= 1"),
    ("MEMCHAT_COMMIT_WRITE_BATCH", "0", "must be >= 1"),
    ("MEMCHAT_COMPACT_AFTER_WRITES", "-1", "must be >= 0"),
    ("MEMCHAT_TURNLOG_FLUSH_ROWS", "0", "must be >= 1"),
    ("MEMCHAT_VECTOR_CACHE_MB", "-1", "must be >= 0"),
    ("MEMCHAT_UPSTREAM_TIMEOUT", "soon", "must be a number"),
    ("MEMCHAT_MIN_SCORE", "high", "must be a number"),
    ("MEMCHAT_EMPTY_NAMESPACE_TTL", "-1", "must be >= 0"),
    ("MEMCHAT_VECTOR_CACHE_TTL", "-0.5", "must be >= 0"),
    ("MEMCHAT_TURNLOG_FLUSH_INTERVAL", "-1", "must be >= 0"),
    ("MEMCHAT_TURNLOG_JOURNAL", "maybe", "must be true or false"),
    ("MEMCHAT_TURNLOG_FSYNC", "2", "must be true or false"),
    ("MEMCHAT_EMBEDDER", "bert", "must be one of"),
    ("MEMCHAT_EMBEDDER_ISOLATION", "fork", "must be one of"),
    ("MEMCHAT_EMBEDDER_RUNTIME", "torch", "must be one of"),
    ("MEMCHAT_EMBEDDER_QUERY_PRECISION", "fp16", "must be one of"),
    ("MEMCHAT_STORE_KEEP_VERSIONS", "0", "must be > 0"),
    ("MEMCHAT_STORE_METADATA_CACHE_MB", "0", "must be >= 1"),
    ("MEMCHAT_EXTRACTOR", "gpt", "must be one of"),
    ("MEMCHAT_STORAGE_OPTIONS", "{not json", "must be a JSON object"),
    ("MEMCHAT_STORAGE_OPTIONS", '["a"]', "must be a JSON object"),
    ("MEMCHAT_API_KEYS", "k1", "not of the form key=org"),
    ("MEMCHAT_API_KEYS", "k1=org1,=org2", "not of the form key=org"),
    ("MEMCHAT_API_KEYS", "k1=", "not of the form key=org"),
])
def test_bad_values_raise_a_config_error_naming_the_variable(name: str, raw: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: raw})
    message = str(info.value)
    assert words in message
    assert name in message or (name == "MEMCHAT_API_KEYS" and "MEMCHAT_API_KEYS" in message)
    assert isinstance(info.value, ValueError)


def test_parse_api_keys_keeps_the_last_org_of_a_repeated_key_and_splits_on_the_first_equals() -> None:
    assert parse_api_keys("a=org1,a=org2") == {"a": "org2"}
    assert parse_api_keys("k=org=x") == {"k": "org=x"}
    assert parse_api_keys("") == {}


@pytest.mark.parametrize("raw", ["-5", "nan"])
def test_durations_must_be_positive_numbers(raw: str) -> None:
    for name in ("MEMCHAT_UPSTREAM_TIMEOUT", "MEMCHAT_UPSTREAM_CONNECT_TIMEOUT", "MEMCHAT_COMMIT_LEASE",
                 "MEMCHAT_SSE_PING_INTERVAL", "MEMCHAT_MAINTENANCE_INTERVAL"):
        with pytest.raises(ConfigError):
            Settings.from_env({name: raw})


def test_a_port_above_65535_is_rejected() -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({"MEMCHAT_PORT": "70000"})


@pytest.mark.parametrize("name", ["MEMCHAT_EMBEDDER", "MEMCHAT_EXTRACTOR"])
def test_a_blank_choice_means_the_default(name: str) -> None:
    assert Settings.from_env({name: ""}) == Settings.from_env({})
    assert Settings.from_env({name: "  "}) == Settings.from_env({})


def test_the_upstream_transport_is_aiohttp_unless_told() -> None:
    assert Settings.from_env({}).upstream.http_client == "aiohttp"
    assert Settings.from_env({"MEMCHAT_UPSTREAM_HTTP_CLIENT": "HTTPX"}).upstream.http_client == "httpx"
    with pytest.raises(ConfigError, match="MEMCHAT_UPSTREAM_HTTP_CLIENT"):
        Settings.from_env({"MEMCHAT_UPSTREAM_HTTP_CLIENT": "curl"})
