"""Support-ticket routing as a Flyte workflow over aios-mesh capabilities (see README.md)."""
