"""Idle commits: conversations become memories exactly once (commit records, committer, scheduler)."""
