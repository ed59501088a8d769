"""Getting real sites ready: `geo-tui init` (config, key pair, secret, registry snippets) and
`geo-tui doctor` (checks a config against the live registries). Like the engine, nothing here imports
Textual.

Import from the modules (`geo_tui.setup.init`, `.doctor`, `.keys`, `.snippets`, `.flags`): the package
itself imports nothing, so the CLI does not pay for cryptography's x509 on every command.
"""
