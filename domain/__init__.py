"""The customer domain as data and pure functions: no I/O, no Temporal."""
