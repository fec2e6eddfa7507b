"""Summaries of repeated runs: median [min–max], and the markdown tables run.py prints."""
from __future__ import annotations

import statistics
from typing import Any, Callable, Iterable


def percentile(values: Iterable[float], q: float) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spread(values: list[Any], fmt: str = "{:.0f}") -> str:
    """`median [min–max]` of the values that are numbers; one value alone; "–" when none."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not numbers:
        return "–"
    if len(numbers) == 1:
        return fmt.format(numbers[0])
    return f"{fmt.format(statistics.median(numbers))} [{fmt.format(min(numbers))}–{fmt.format(max(numbers))}]"


def total(values: list[Any]) -> str:
    numbers = [v for v in values if isinstance(v, (int, float))]
    return str(sum(numbers)) if numbers else "–"


# One row per metric: (scenario, label, key in the record, how to summarise the runs' values).
Row = tuple[str, str, str, Callable[[list[Any]], str]]
I, F1, F2, P = (lambda v: spread(v, "{:,.0f}")), (lambda v: spread(v, "{:.1f}")), \
    (lambda v: spread(v, "{:.2f}")), (lambda v: spread(v, "{:.0%}"))

ROWS: list[Row] = [
    ("ingest", "ipaas accepted webhooks/s (wrk -c50)", "ipaas_accepted_per_s", I),
    ("ingest", "ipaas ack p50 / p99 ms", "ipaas_p50_ms|ipaas_p99_ms", F1),
    ("ingest", "ipaas 503 answers (sum of runs)", "ipaas_s503", total),
    ("ingest", "ipaas server CPU ms per accepted webhook (engine included)", "ipaas_cpu_ms", F2),
    ("ingest", "bare Flask accepted/s (same gunicorn settings)", "bare_accepted_per_s", I),
    ("ingest", "bare Flask ack p50 / p99 ms", "bare_p50_ms|bare_p99_ms", F1),
    ("ingest", "bare Flask server CPU ms per request", "bare_cpu_ms", F2),
    ("ingest", "bare Flask + 1 SQLite insert (sync=FULL) accepted/s", "sqlite_accepted_per_s", I),
    ("ingest", "bare Flask + 1 insert ack p50 / p99 ms", "sqlite_p50_ms|sqlite_p99_ms", F1),
    ("ingest", "bare Flask + 1 insert server CPU ms per request", "sqlite_cpu_ms", F2),
    ("ingest", "**ratio ipaas / bare Flask** (target >= 60%)", "ratio_bare", P),
    ("ingest", "ratio ipaas / bare Flask + 1 insert", "ratio_sqlite", P),
    ("ingest", "ipaas at IPAAS_LOG_LEVEL=INFO: accepted/s", "info_accepted_per_s", I),
    ("ingest", "ipaas at INFO: ack p50 / p99 ms", "info_p50_ms|info_p99_ms", F1),
    ("ingest", "ipaas at INFO: server CPU ms per accepted webhook", "info_cpu_ms", F2),
    ("ingest", "ratio ipaas at INFO / bare Flask", "ratio_info", P),
    ("e2e", "**executions completed/s, sustained** (target >= 1,000)", "completed_per_s", I),
    ("e2e", "slowest 1-s window of the measured span, completed/s", "min_window_per_s", I),
    ("e2e", "accept-to-delivered p50 / p99 ms (saturated)", "a2d_p50_ms|a2d_p99_ms", F1),
    ("e2e", "server CPU ms per execution (ingest + run + record)", "cpu_ms", F2),
    ("e2e", "ack p50 / p99 ms (saturated)", "ack_p50_ms|ack_p99_ms", F1),
    ("e2e", "503 answers / lost (sum of runs)", "s503|lost", total),
    ("e2e", "paced: offered webhooks/s", "paced_rate", I),
    ("e2e", "**paced: ack p50 / p99 ms** (target p99 < 50)", "paced_p50_ms|paced_p99_ms", F1),
    ("e2e", "paced: accept-to-delivered p50 / p99 ms", "paced_a2d_p50_ms|paced_a2d_p99_ms", F1),
    ("storm", "202 / 503 / other answers", "s202|s503|other", I),
    ("storm", "503 queue_full / other 503 (store_unavailable: database locked 5 s)", "s503_queue_full|s503_other",
     total),
    ("storm", "succeeded / receiver unique / duplicates", "succeeded|delivered|duplicates", I),
    ("storm", "**lost (202 not succeeded or not delivered)** (target 0)", "lost", total),
    ("storm", "**peak RSS of the gunicorn group, MB** (target < 300)", "peak_rss_mb", I),
    ("storm", "send time s (first request -> last answer)", "send_s", F1),
    ("storm", "drain time s (last answer -> all terminal)", "drain_s", F1),
    ("storm", "total s / ideal s (ideal = 202 count / e2e rate)", "total_s|ideal_s", F1),
    ("storm", "**total / ideal** (target <= 2)", "ideal_ratio", F2),
    ("storm", "sender ack p50 / p99 ms", "ack_p50_ms|ack_p99_ms", I),
    ("cancel", "**cancel -> status cancelled, p50 / max ms** (target <= 2,000)", "p50_ms|max_ms", I),
    ("cancel", "cancel -> blocked socket closed, p50 / max ms", "closed_p50_ms|closed_max_ms", I),
    ("cancel", "cancel API answer p50 ms", "api_p50_ms", F1),
    ("recovery", "pending executions at kill -9", "pending", I),
    ("recovery", "restart -> /healthz answers, s", "ready_s", F2),
    ("recovery", "**restart -> first delivery, s** (target < 10)", "first_s", F2),
    ("recovery", "restart -> all of them terminal, s", "all_s", F2),
    ("recovery", "succeeded / delivered / duplicates", "succeeded|delivered|duplicates", I),
]


def table(records: list[dict[str, Any]]) -> str:
    """The markdown results table: one line per metric, median [min–max] over the runs."""
    by_scenario: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_scenario.setdefault(record["scenario"], []).append(record)
    lines = ["| scenario | metric | median [min–max] | runs |", "|---|---|---|---|"]
    for scenario, label, keys, summarise in ROWS:
        runs = by_scenario.get(scenario)
        if not runs:
            continue
        cells = [summarise([run.get(key) for run in runs]) for key in keys.split("|")]
        if all(cell == "–" for cell in cells):
            continue
        lines.append(f"| {scenario} | {label} | {' / '.join(cells)} | {len(runs)} |")
    for scenario, runs in by_scenario.items():
        loads = [run.get("cpu", {}).get("foreign_cores") for run in runs]
        lines.append(f"| {scenario} | other processes' CPU during the runs, cores | {spread(loads, '{:.2f}')} "
                     f"| {len(runs)} |")
    return "\n".join(lines)


def columns(records: list[dict[str, Any]], column: str, rows: list[tuple[str, str, Callable[[list[Any]], str]]]) -> str:
    """A markdown table with one column per value of record[column] (in order of appearance) and one line
    per (label, keys joined by |, summary) row: median [min–max] over the records of that column."""
    names = list(dict.fromkeys(record[column] for record in records))
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, keys, summarise in rows:
        cells = []
        for name in names:
            runs = [record for record in records if record[column] == name]
            parts = [summarise([run.get(key) for run in runs]) for key in keys.split("|")]
            cells.append(" / ".join(parts))
        if any(cell.strip("– /") for cell in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
