"""Shared test support code: an in-process Toxiproxy-compatible fault proxy and its fixture."""
