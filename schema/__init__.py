"""Versioned SQL migrations, one folder per dialect (``postgres/``, ``sqlite/``).

Files are named ``NNNN_description.sql`` and applied in order by ``mistral-sidecar migrate``;
each file runs in one transaction and is recorded in ``schema_migrations``.
"""
