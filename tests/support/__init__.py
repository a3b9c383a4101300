"""Shared test-support helpers (fake upstream launcher, ...)."""

from .fake_upstream import FakeUpstream, FakeUpstreamError, free_port

__all__ = ["FakeUpstream", "FakeUpstreamError", "free_port"]
