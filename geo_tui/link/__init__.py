"""How a console or the CLI reaches an engine: the engine API's client, the console's `EngineLink`
over it (`RemoteLink`), and `SpawnedEngine`, the console's own engine started as a child process.

It stands on the engine core's wire format (geo_tui.engine.wire) and knows nothing of the service's
code: it speaks to a running engine only over HTTP and the update stream.
"""
