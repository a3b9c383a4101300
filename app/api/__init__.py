"""HTTP surfaces: one module per API (OpenAI-compatible, personal chat, memory REST, websocket, health)."""
