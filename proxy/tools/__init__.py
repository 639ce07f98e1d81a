"""Developer tools run by hand or from .ci/ scripts, never by the running proxy."""
