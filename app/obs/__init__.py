"""Observability: Prometheus metrics (`app.obs.metrics`), the request context -- request id, surface,
organisation -- carried in a context variable (`app.obs.context`), and logging (`app.obs.logs`).

The bottom layer: every other layer may import it; it imports nothing from memchat.
"""
