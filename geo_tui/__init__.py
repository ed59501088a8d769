"""geo-tui: keep secondary container registries in step with a primary."""

__version__ = "0.1.0"
