"""The `rainier` command: a face over the HTTP API; it never reads the database."""
