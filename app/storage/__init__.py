"""LanceDB: one connection, one table helper, the filter language. Every LanceDB detail lives here."""
