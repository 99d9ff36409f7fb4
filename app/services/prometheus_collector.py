"""Prometheus metrics read from the shared stores at scrape time.

Nothing is counted in process memory: every scrape reads the metric and task stores
(and the totals compaction carried over), so each gunicorn worker answers the same, a
restart loses nothing and a compaction lowers no counter. Label sets are
emitted in sorted order so equal stores give byte-identical output, and their number is
bounded (see :func:`with_bounded_labels`) whatever the stores hold.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from app.models.agent import TASK_TYPES
from app.models.metrics import QUEUE_STATUSES
from app.services import Services
from app.services.pipeline_status import running_stale_seconds
from app.storage.metric_columns import NANOS
from app.storage.metric_totals import (
    DURATION_BOUNDS_SECONDS,
    WAIT_BOUNDS_SECONDS,
    Totals,
    cost_nanos,
    duration_histograms,
    finished_counts,
    token_sums,
    wait_histograms,
)

OTHER = "other"
"""The label value that stands for the task types and models a scrape leaves out."""
MAX_LABEL_CHARS = 200
TOKEN_KINDS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_input_tokens": "cache_read",
    "cache_creation_input_tokens": "cache_creation",
}
"""The ``kind`` label of each token field of a record."""


def with_bounded_labels(totals: Totals, task_types: tuple[str, ...], max_models: int) -> Totals:
    """The totals with labels a scrape can carry: at most ``max_models`` distinct models.

    The stores may hold any string as a model or task type (written by hand, imported).
    When there are more than ``max_models`` models, the ``max_models - 1`` most frequent
    (ties by name) keep their own labels and the rest are summed under ``other``; a model
    longer than ``MAX_LABEL_CHARS`` always is, and so is a task type not in ``task_types``.
    """
    per_model: dict[str, int] = {}
    for (_, model, _), entry in totals.entries.items():
        per_model[model] = per_model.get(model, 0) + entry.count
    short = sorted((model for model in per_model if len(model) <= MAX_LABEL_CHARS),
                   key=lambda model: (-per_model[model], model))
    kept = set(short if len(per_model) <= max_models else short[:max_models - 1])
    return totals.relabeled(lambda labels: (
        labels[0] if labels[0] in task_types else OTHER,
        labels[1] if labels[1] in kept else OTHER, labels[2]))


def _bound_label(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else f"{float(bound)}"


class AgentCollector(Collector):
    def __init__(self, services: Services, max_models: int) -> None:
        self.services = services
        self.max_models = max_models

    def collect(self) -> Iterator[Metric]:
        totals = with_bounded_labels(self.services.metrics.totals(), TASK_TYPES,
                                     self.max_models)
        counts, histograms = finished_counts(totals), duration_histograms(totals)
        finished = CounterMetricFamily(
            "agent_tasks_finished",
            "Tasks that reached a final status (one metric record each).",
            labels=["task_type", "model", "status"],
        )
        for labels, count in sorted(counts.items()):
            finished.add_metric(list(labels), count)
        yield finished

        durations = HistogramMetricFamily(
            "agent_task_duration_seconds",
            "Execution time of finished tasks.",
            labels=["task_type", "model"],
        )
        bound_labels = [_bound_label(b) for b in (*DURATION_BOUNDS_SECONDS, math.inf)]
        for histogram in sorted(histograms, key=lambda h: (h.task_type, h.model)):
            durations.add_metric(
                [histogram.task_type, histogram.model],
                list(zip(bound_labels, histogram.cumulative_counts)),
                histogram.sum_seconds,
            )
        yield durations
        yield from self._usage(totals)

        queue = GaugeMetricFamily(
            "agent_tasks_current",
            "Tasks not yet finished, by current status.",
            labels=["status"],
        )
        by_status = self.services.tasks.counts_by_status()
        for status in QUEUE_STATUSES:
            queue.add_metric([status], by_status[status])
        yield queue
        yield from self._health()

    def _health(self) -> Iterator[Metric]:
        """What the shipped alerts watch beside the counters: stores that cannot be
        written, and running tasks whose runner stopped reporting."""
        writable = GaugeMetricFamily(
            "agent_store_writable",
            "1 while the store can be written, 0 while it cannot (GET /api/health).",
            labels=["store"],
        )
        for name, (_, can_write) in sorted(self.services.stores().items()):
            writable.add_metric([name], int(can_write))
        yield writable
        yield GaugeMetricFamily(
            "agent_tasks_running_stale_seconds",
            "Seconds since the running task updated least recently was last updated (a "
            "runner heartbeats at least every 10 s); 0 when none runs.",
            value=running_stale_seconds(self.services.tasks),
        )

    @staticmethod
    def _usage(totals: Totals) -> Iterator[Metric]:
        """Tokens, costs and queue waits, over the records that hold them: a label set
        gets a series only if some record of it holds the field."""
        tokens = CounterMetricFamily(
            "agent_task_tokens",
            "Tokens that finished tasks reported, by kind (records without a count of "
            "that kind leave it out).",
            labels=["task_type", "model", "kind"],
        )
        by_kind = {(task_type, model, TOKEN_KINDS[name]): total
                   for (task_type, model, name), total in token_sums(totals).items()}
        for labels, total in sorted(by_kind.items()):
            tokens.add_metric(list(labels), total)
        yield tokens

        cost = CounterMetricFamily(
            "agent_task_cost_usd",
            "Cost in US dollars that finished tasks reported (records without a cost "
            "leave it out).",
            labels=["task_type", "model"],
        )
        for pair, nanos in sorted(cost_nanos(totals).items()):
            cost.add_metric(list(pair), nanos / NANOS)
        yield cost

        waits = HistogramMetricFamily(
            "agent_task_queue_wait_seconds",
            "Time finished tasks waited in the queue before they ran (records without a "
            "wait leave it out).",
            labels=["task_type"],
        )
        bound_labels = [_bound_label(b) for b in (*WAIT_BOUNDS_SECONDS, math.inf)]
        for histogram in wait_histograms(totals):
            waits.add_metric([histogram.task_type],
                             list(zip(bound_labels, histogram.cumulative_counts)),
                             histogram.sum_seconds)
        yield waits


def build_registry(services: Services, max_models: int) -> CollectorRegistry:
    """A registry of its own per app, so apps (and tests) never share collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(services, max_models))
    return registry
