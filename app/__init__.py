"""memchat: OpenAI-compatible chat with long-term memory."""
