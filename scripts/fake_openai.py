#!/usr/bin/env python3
"""Kept for muscle memory: the fake OpenAI server is ``python -m app.testkit.fake_openai`` (same flags)."""
from app.testkit.fake_openai import main

raise SystemExit(main())
