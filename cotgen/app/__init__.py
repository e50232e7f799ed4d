"""The application layer: one module per use case, wiring the library packages together.

Each module takes a `Workspace` and typed options and returns typed results. Nothing here prints:
progress and notices go through a `Reporter` (cotgen.app.progress); the CLI renders them.
"""
