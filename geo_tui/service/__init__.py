"""The engine as a service: the notification receiver, the engine API's server and its command
handlers, `serve` (which runs them around one engine), and the console's own engine child.

It stands on the engine core (geo_tui.engine) and knows nothing of the link or the console.
"""
