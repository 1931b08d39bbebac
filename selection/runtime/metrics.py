"""``GET /metrics``: the server's counters in Prometheus text format (prometheus-client).

One registry per server (not the process-wide default), so two servers in one
process (tests, an app serving two channels) never share or clash on names.
Request counts and the latency histogram are updated on the request path
(a lock and an add each); everything the runtime already counts (swaps,
refusals, shadow scored/skipped, the log's records) is read at scrape time by
a collector, so it is never counted twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from selection.runtime.channel import ChannelRuntime

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Latency buckets (seconds): a tiny model answers in well under a millisecond.
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 10.0)
ENDPOINTS = ("/predict", "/feedback", "/model", "/healthz", "/metrics")


class ServerMetrics:
    """The metrics of one server over one runtime."""

    def __init__(self, runtime: ChannelRuntime) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("shadow_serve_requests", "HTTP requests answered, by endpoint "
                                "and status code", ["endpoint", "code"], registry=self.registry)
        self.errors = Counter("shadow_serve_errors", "Requests answered with an error (client: "
                              "4xx, server: 5xx)", ["endpoint", "kind"], registry=self.registry)
        self.latency = Histogram("shadow_serve_predict_latency_seconds", "Time to answer POST "
                                 "/predict, from its first byte read to its answer written",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_RuntimeCollector(runtime))

    def observe(self, path: str, status: int, seconds: float) -> None:
        """Count one answered request (and its latency, for /predict)."""
        endpoint = path if path in ENDPOINTS else "other"
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, "server" if status >= 500 else "client").inc()
        if endpoint == "/predict" and status == 200:
            self.latency.observe(seconds)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class _RuntimeCollector(Collector):
    """What the runtime, its shadows and its log counted, read when scraped."""

    def __init__(self, runtime: ChannelRuntime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        runtime = self.runtime
        status = runtime.status()
        yield CounterMetricFamily("shadow_serve_swaps", "Hot swaps to a new model",
                                  value=status["swaps"])
        yield CounterMetricFamily("shadow_serve_refused", "Versions refused by the runtime",
                                  value=status["refused"])
        model = status["model"]
        if model is not None:
            yield InfoMetricFamily("shadow_serve_model", "The champion answering now",
                                   value={"channel": str(model["channel"]),
                                          "candidate_id": str(model["candidate_id"]),
                                          "sha256": str(model["sha256"])})
        shadows = runtime.shadows
        counts = shadows.counts if shadows is not None else {}
        for key, text in (("scored", "Requests the shadows scored"),
                          ("skipped", "Requests skipped by the shadows (queue full)"),
                          ("errors", "Shadow inferences that failed"),
                          ("log_fallback", "Scored batches whose rows the server wrote itself "
                                           "(the shadows' log process was gone)")):
            yield CounterMetricFamily(f"shadow_serve_shadow_{key}", text, value=counts.get(key, 0))
        yield GaugeMetricFamily("shadow_serve_shadow_models", "Shadow models scoring now",
                                value=len(shadows.models) if shadows is not None else 0)
        log = runtime.log
        logged = dict(log.counts) if log is not None else {}
        sink = shadows.sink if shadows is not None else None
        if sink is not None:  # the shadows' rows, written by their own process
            child = sink.stats()
            for key in ("logged", "dropped", "retries", "mismatched", "orphaned", "errors"):
                logged[key] = logged.get(key, 0) + int(child.get(key, 0))
            yield GaugeMetricFamily("shadow_serve_shadow_log_process_up", "Whether the process "
                                    "writing the shadows' rows runs (0: the server writes them)",
                                    value=1 if child["alive"] else 0)
        yield CounterMetricFamily("shadow_serve_log_records", "Prediction records committed "
                                  "to the log", value=logged.get("logged", 0))
        yield CounterMetricFamily("shadow_serve_log_dropped", "Prediction records dropped "
                                  "(log buffer full)", value=logged.get("dropped", 0))
        for key, text in (
                ("retries", "Log batches retried because another writer held the file"),
                ("mismatched", "Records left out: their request id was logged for other inputs"),
                ("orphaned", "Shadow records dropped: their request was never logged"),
                ("errors", "Log batches that failed (disk full, a damaged file)")):
            yield CounterMetricFamily(f"shadow_serve_log_{key}", text, value=logged.get(key, 0))
        yield GaugeMetricFamily("shadow_serve_log_pending", "Prediction records accepted, "
                                "not yet committed", value=log.pending if log is not None else 0)
