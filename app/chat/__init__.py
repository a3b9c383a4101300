"""The chat engine: request pipeline, SSE framing and relaying, conversations."""
