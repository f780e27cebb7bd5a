"""Sumsub: the signed API client and the webhooks (authenticity, parsing, dedupe key, mapping)."""
