"""The small shared kit: settings, payload codec, logging, metrics, tracing, the Temporal client."""
