"""The gateway's API areas, one module each; each exposes ``routes(gateway)``."""
