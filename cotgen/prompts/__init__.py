"""Versioned Jinja2 prompt templates: NAME.vK.j2 with a `system` and a `user` block each."""
