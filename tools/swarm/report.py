"""The swarm's report: raw counts merged over processes, the derived figures, and the table.

Job: one report for every transport. :func:`make_report` adds the derived figures (rates
per bot per second, latency percentiles, packet loss, refreshed share, CPU) to the raw counts
of :meth:`worldtools.swarm.bots.BotSet.result`; :func:`merge_results` merges several
processes' results (counts summed, samples concatenated); :func:`public_report` leaves out
the raw sample lists for printing (``worldserver swarm --json``); :func:`format_report` is the
table. A channel transport (WebRTC, WebSocket) adds ``transport`` and ``open_ms`` (the time
each channel took to open) to its raw result, and the report then has ``open_ms_p50`` and
``open_ms_p99`` and two more table rows; UDP reports have neither. ``probes_blocked`` counts
the observers' latency probes voided because the server did not move the turning bot as sent
(a wall blocked it or it slid along one; see :meth:`worldtools.swarm.bots.BotSet._check_probe`).

The keys are read by the benchmarks (tools/bench), the soak and the docs: keep them.

Must not: measure or print anything (it only computes and formats), or import the transports.
"""

from __future__ import annotations

import numpy as np

__all__ = ["format_report", "make_report", "merge_results", "percentile", "public_report"]

_SUMMED = (
    "bots_requested", "observers", "connected", "snapshots", "packets", "bytes", "inputs",
    "connected_seconds", "packets_expected", "packets_received", "observed_entities_sum",
    "observed_views", "cpu_s", "parts", "refresh_changed", "refresh_moving", "probes_blocked",
)  # fmt: skip
_DICTS = ("failure_reasons", "decode_errors", "socket_errors")
_LISTS = ("latency_samples_ms", "send_late_ms", "input_backlog")
_SAMPLES = (*_LISTS, "open_ms")  # raw sample lists, left out of the printed report


def merge_results(results: list[dict], fields: dict | None = None) -> dict:
    """Merge the results of several processes: counts summed, samples concatenated.

    ``fields``: the transport's own report fields with their values when empty (a channel
    transport: ``{"transport": name, "open_ms": []}``): lists are concatenated, the others
    kept as given."""
    fields = fields or {}
    raw: dict = {k: 0 for k in _SUMMED}
    raw.update((k, [] if isinstance(v, list) else v) for k, v in fields.items())
    for k in _DICTS:
        raw[k] = {}
    for k in _LISTS:
        raw[k] = []
    raw["window_s"] = 0.0
    raw["duration_s"] = 0.0
    raw["setup_s"] = 0.0
    for r in results:
        for k in _SUMMED:
            raw[k] += r.get(k, 0)
        for k in _DICTS:
            for name, n in r.get(k, {}).items():
                raw[k][name] = raw[k].get(name, 0) + n
        for k in _LISTS:
            raw[k].extend(r.get(k, []))
        for k, v in fields.items():
            if isinstance(v, list):
                raw[k].extend(r.get(k, []))
        raw["window_s"] = max(raw["window_s"], r.get("window_s", 0.0))
        raw["duration_s"] = max(raw["duration_s"], r.get("duration_s", 0.0))
        raw["setup_s"] = max(raw["setup_s"], r.get("setup_s", 0.0))
    raw["processes"] = sum(r.get("processes", 1) for r in results)
    return make_report(raw)


def make_report(raw: dict) -> dict:
    """Add the derived figures (rates per bot per second, percentiles, loss) to raw counts
    (and, with ``open_ms``, the channels' opening times p50/p99)."""
    r = dict(raw)
    for k in _LISTS:
        r.setdefault(k, [])
    for k in ("parts", "refresh_changed", "refresh_moving", "probes_blocked"):
        r.setdefault(k, 0)
    bot_s = r["connected_seconds"]
    failures = sum(r["failure_reasons"].values()) + sum(r["decode_errors"].values())
    lat = r["latency_samples_ms"]
    late = r["send_late_ms"]
    expected = r["packets_expected"]
    window = r["window_s"]
    r.update(
        failures=failures,
        snapshots_per_bot_s=round(r["snapshots"] / bot_s, 2) if bot_s else 0.0,
        parts_per_bot_s=round(r.get("parts", 0) / bot_s, 2) if bot_s else 0.0,
        bytes_per_bot_s=round(r["bytes"] / bot_s, 1) if bot_s else 0.0,
        inputs_per_bot_s=round(r["inputs"] / bot_s, 2) if bot_s else 0.0,
        latency_ms_p50=percentile(lat, 50),
        latency_ms_p99=percentile(lat, 99),
        latency_samples=len(lat),
        packet_loss=round((expected - r["packets_received"]) / expected, 5) if expected else 0.0,
        observed_entities_mean=(
            round(r["observed_entities_sum"] / r["observed_views"], 1) if r["observed_views"] else 0.0
        ),
        observed_refreshed_share=(
            round(r["refresh_changed"] / r["refresh_moving"], 4) if r.get("refresh_moving") else None
        ),
        send_late_ms_p99=percentile(late, 99),
        input_backlog_p50=percentile(r["input_backlog"], 50),
        input_backlog_p99=percentile(r["input_backlog"], 99),
        cpu_percent=round(100.0 * r["cpu_s"] / window, 1) if window else 0.0,
        ok=r["connected"] == r["bots_requested"] and failures == 0,
    )
    if "open_ms" in r:
        r["open_ms_p50"] = percentile(r["open_ms"], 50)
        r["open_ms_p99"] = percentile(r["open_ms"], 99)
    return r


def public_report(report: dict) -> dict:
    """The report without the raw sample lists (for printing)."""
    return {k: v for k, v in report.items() if k not in _SAMPLES}


def format_report(report: dict) -> str:
    """The report as a table, one figure a line (a channel transport's first)."""
    rows = []
    if "transport" in report:
        o50, o99 = report.get("open_ms_p50"), report.get("open_ms_p99")
        rows += [
            ("transport", report["transport"]),
            ("channel open p50/p99 (ms)", f"{'-' if o50 is None else o50} / {'-' if o99 is None else o99}"),
        ]
    lat50, lat99 = report["latency_ms_p50"], report["latency_ms_p99"]
    rows += [
        ("bots requested", report["bots_requested"]),
        ("connected", report["connected"]),
        ("failures", report["failures"]),
        ("  reasons", ", ".join(f"{k}={v}" for k, v in sorted(
            {**report["failure_reasons"], **report["decode_errors"]}.items())) or "-"),
        ("snapshots / bot / s (complete ticks)", report["snapshots_per_bot_s"]),
        ("snapshot parts / bot / s", report.get("parts_per_bot_s", 0.0)),
        ("bytes in / bot / s", report["bytes_per_bot_s"]),
        ("inputs / bot / s", report["inputs_per_bot_s"]),
        ("move-to-observed p50 (ms)", "-" if lat50 is None else lat50),
        ("move-to-observed p99 (ms)", "-" if lat99 is None else lat99),
        ("latency samples", report["latency_samples"]),
        ("latency probes voided (blocked)", report.get("probes_blocked", 0)),
        ("packet loss", f"{100.0 * report['packet_loss']:.3f} %"),
        ("entities seen by observers", report["observed_entities_mean"]),
        ("refreshed share (observers)", "-" if report.get("observed_refreshed_share") is None
         else report["observed_refreshed_share"]),
        ("inputs sent, not applied p50/p99",
         f"{report['input_backlog_p50']} / {report['input_backlog_p99']}"),
        ("swarm send lateness p99 (ms)", report["send_late_ms_p99"]),
        ("swarm CPU (% of one core)", report["cpu_percent"]),
        ("processes", report["processes"]),
        ("set-up before measuring (s)", report.get("setup_s", "-")),
        ("measured (s)", report["duration_s"]),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile of ``values`` rounded to 2 decimals (None for no values)."""
    if not values:
        return None
    return round(float(np.percentile(np.asarray(values, dtype=np.float64), q)), 2)
