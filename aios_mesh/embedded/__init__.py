"""Pure-Python embedded defaults: no server, no backend SDK."""
