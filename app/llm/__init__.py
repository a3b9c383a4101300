"""Talking to the model: the upstream OpenAI-compatible client and the offline responder."""
