"""Conversations: the durable turn log, its local journal, and which conversation a request continues."""
