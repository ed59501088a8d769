"""The console: a Textual app over the engine (embedded, or attached to a running one)."""
