"""Runnable automations built on aios-mesh (run them from the repository root)."""
