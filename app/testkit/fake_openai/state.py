"""Everything the fake remembers between requests, on one object (there is no module-level state).

Tests read it back through the control API: recorded requests, stream outcomes (``/_fake/streams``), the
rules still armed. ``reset`` bumps a generation counter so that a stream still running from before a reset
does not disturb the counters of the next test.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from .config import OVERRIDE_KEYS, RULE_KEYS, FakeConfig, bad, validate_overrides


class StreamRecord:
    """One streamed response: how many chunks went out and how it ended."""

    __slots__ = ("id", "chunks_sent", "state", "gen", "path", "model", "started")

    def __init__(self, id_: str, gen: int, path: str, model: str) -> None:
        self.id = id_
        self.chunks_sent = 0
        self.state = "open"
        self.gen = gen
        self.path = path
        self.model = model
        self.started = time.time()

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "chunks_sent": self.chunks_sent,
            "state": self.state,
            "path": self.path,
            "model": self.model,
            "started": self.started,
        }


class FakeState:
    """Config, rules, recorded requests and stream counters of one fake server."""

    def __init__(self, config: FakeConfig) -> None:
        self.initial = FakeConfig(**asdict(config))
        self.config = FakeConfig(**asdict(config))
        self.rules: list[dict[str, Any]] = []
        self._rule_ids = 0
        self.requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=max(1, config.max_records))
        self.stream_records: collections.deque[StreamRecord] = collections.deque(maxlen=max(1, config.max_records))
        self.gen = 0
        self._reset_counters()
        self.hash_cache: dict[str, int] = {}

    def _reset_counters(self) -> None:
        self.n_open = 0
        self.n_opened = 0
        self.n_completed = 0
        self.n_client_closed = 0
        self.n_dropped = 0
        self.n_ended_early = 0

    def reset(self) -> None:
        self.config = FakeConfig(**asdict(self.initial))
        self.rules.clear()
        self.requests.clear()
        self.stream_records.clear()
        self.gen += 1
        self._reset_counters()

    # -- requests --------------------------------------------------------------------

    def record_request(self, scope: dict[str, Any], path: str, method: str, body: Any) -> None:
        if not self.config.record_requests:
            return
        hdrs: dict[str, str] = {}
        for k, v in scope.get("headers", ()):
            name = k.decode("latin-1").lower()
            val = v.decode("latin-1")
            hdrs[name] = f"{hdrs[name]}, {val}" if name in hdrs else val
        self.requests.append({"path": path, "method": method, "body": body, "headers": hdrs, "time": time.time()})

    # -- streams ---------------------------------------------------------------------

    def stream_opened(self, rec: StreamRecord) -> None:
        self.stream_records.append(rec)
        self.n_open += 1
        self.n_opened += 1

    def stream_finished(self, rec: StreamRecord, state: str) -> None:
        if rec.state != "open":
            return
        rec.state = state
        if rec.gen != self.gen:
            return
        self.n_open -= 1
        if state == "completed":
            self.n_completed += 1
        elif state == "client_closed":
            self.n_client_closed += 1
        elif state == "ended_early":
            self.n_ended_early += 1
        else:
            self.n_dropped += 1

    def streams_snapshot(self) -> dict[str, Any]:
        return {
            "open": self.n_open,
            "opened": self.n_opened,
            "completed": self.n_completed,
            "closed_early": self.n_client_closed,
            "dropped": self.n_dropped,
            "ended_early": self.n_ended_early,
            "streams": [r.as_dict() for r in self.stream_records],
        }

    # -- rules -----------------------------------------------------------------------

    def add_rules(self, body: Any) -> list[dict[str, Any]] | dict[str, Any]:
        """``POST /_fake/rules``: one rule object or a list of them; returns what was stored."""
        items = body if isinstance(body, list) else [body]
        new = []
        for item in items:
            if not isinstance(item, dict):
                raise bad("rule must be an object")
            rule = validate_overrides(item, RULE_KEYS, "rule")
            rule.setdefault("match", None)
            rule.setdefault("endpoint", "chat")
            rule.setdefault("times", None)
            self._rule_ids += 1
            rule["id"] = self._rule_ids
            rule["hits"] = 0
            new.append(rule)
        self.rules.extend(new)
        return new if isinstance(body, list) else new[0]

    def match_rule(self, endpoint: str, texts: list[str], blob: str) -> dict[str, Any] | None:
        for rule in self.rules:
            ep = rule.get("endpoint", "chat")
            if ep != "any" and ep != endpoint:
                continue
            m = rule.get("match")
            if m and not (any(m in t for t in texts) or m in blob):
                continue
            rule["hits"] += 1
            if rule.get("times") is not None:
                rule["times"] -= 1
                if rule["times"] <= 0:
                    self.rules.remove(rule)
            return rule
        return None

    def effective(self, endpoint: str, texts: list[str], blob: Callable[[], str],
                  fake: dict[str, Any]) -> dict[str, Any]:
        """Server defaults < the first matching rule < the request's own ``fake`` overrides. ``blob`` (the
        request's messages as JSON, also searched for ``match``) is only built when a rule is armed: the fake
        is the benchmarks' baseline, so its per-request work stays small."""
        eff = self.config.overrides()
        rule = self.match_rule(endpoint, texts, blob()) if self.rules else None
        if rule is not None:
            for k in OVERRIDE_KEYS:
                if k in rule:
                    eff[k] = rule[k]
        for k, v in fake.items():
            eff[k] = v
        return eff
