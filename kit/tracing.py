"""Optional OpenTelemetry tracing of workflows and activities (`OTEL_ENABLED`, off by default).

Temporal's `TracingInterceptor` opens a span per workflow run, signal, update, activity attempt and
outgoing call, propagated through Temporal headers. Finished spans are written as JSON log lines
(`span finished`), so they need no collector; put an OTLP exporter on the provider to ship them elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from temporalio.contrib.opentelemetry import TracingInterceptor

log = structlog.get_logger("tracing")


class LogSpanExporter(SpanExporter):
    """Writes each finished span as one structured log line (ids in hex, duration in milliseconds)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            context = span.get_span_context()
            if context is None:
                continue
            log.info(
                "span finished",
                span_name=span.name,
                trace_id=f"{context.trace_id:032x}",
                span_id=f"{context.span_id:016x}",
                parent_span_id=f"{span.parent.span_id:016x}" if span.parent else None,
                duration_ms=round(((span.end_time or 0) - (span.start_time or 0)) / 1e6, 3),
                status=span.status.status_code.name,
                attributes=dict(span.attributes or {}),
            )
        return SpanExportResult.SUCCESS


def tracing_interceptor(service_name: str) -> TracingInterceptor:
    """Installs a tracer provider that logs spans (once per process) and returns Temporal's interceptor."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        provider.add_span_processor(BatchSpanProcessor(LogSpanExporter()))
        trace.set_tracer_provider(provider)
    return TracingInterceptor(always_create_workflow_spans=True)  # the API starts workflows untraced


def shutdown_tracing() -> None:
    """Flushes spans still buffered (call once, at process exit)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
