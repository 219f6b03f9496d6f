"""The end-of-run report: the run's intraday KPIs per queue from the KPI service, as one HTML page.

Each queue gets a chart per KPI (inline SVG, no scripts, opens anywhere) and the table behind them,
bucket by bucket, exactly as the KPI service's QueryKpis returns them (the views Grafana uses).
"""

from __future__ import annotations

import html
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from callcenter.kpi.v1 import service_pb2 as kpi_pb
from callcenter.kpi.v1 import service_pb2_grpc as kpi_grpc

CHARTS = (
    ("Contacts", ("offered", "handled", "abandoned"), "{:.0f}"),
    (
        "Service level (answered in T / offered, short abandons excluded)",
        ("service_level_offered",),
        "{:.0%}",
    ),
    ("ASA and AHT, seconds", ("asa_s", "aht_s"), "{:.1f}"),
    ("Abandon rate", ("abandon_rate",), "{:.0%}"),
)
COLUMNS = (
    "offered", "handled", "abandoned", "short_abandoned", "answer_rate", "service_level_answered",
    "service_level_answered_abandoned", "service_level_offered", "asa_s", "aht_s",
    "avg_time_to_abandon_s", "abandon_rate", "transfer_rate", "callback_completion_rate",
)  # fmt: skip
COLOURS = ("#1f77b4", "#2ca02c", "#d62728")


def fetch(
    kpis: kpi_grpc.KpiServiceStub, since: datetime, until: datetime, interval: int
) -> list[kpi_pb.KpiRow]:
    request = kpi_pb.QueryKpisRequest(scope=kpi_pb.SCOPE_QUEUE, interval=interval)
    getattr(request, "from").FromDatetime(since)
    request.to.FromDatetime(until)
    return list(kpis.QueryKpis(request, timeout=30).rows)


def write_report(rows: list[kpi_pb.KpiRow], title: str, path: Path) -> None:
    by_queue: dict[str, list[kpi_pb.KpiRow]] = defaultdict(list)
    for row in rows:
        by_queue[row.key].append(row)
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for queue_id, queue_rows in sorted(by_queue.items()):
        queue_rows.sort(key=lambda row: row.bucket_start.ToDatetime())
        parts.append(f"<h2>{html.escape(queue_id)}</h2><div class='charts'>")
        for caption, names, _ in CHARTS:
            parts.append(_chart(caption, names, queue_rows))
        parts.append("</div>" + _table(queue_rows))
    if not rows:
        parts.append("<p>No queue visits in the run's window.</p>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        + html.escape(title)
        + "</title><style>body{font-family:sans-serif;margin:2em}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;"
        "text-align:right}.charts{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}</style></head><body>"
        + "".join(parts)
        + "</body></html>"
    )


def _chart(caption: str, names: tuple[str, ...], rows: list[kpi_pb.KpiRow]) -> str:
    width, height, pad = 320, 140, 24
    series = [[row.values.get(name) for row in rows] for name in names]
    present = [v for values in series for v in values if v is not None]
    top = max(present, default=1.0) or 1.0
    step = (width - 2 * pad) / max(len(rows) - 1, 1)
    lines = []
    for colour, name, values in zip(COLOURS, names, series, strict=False):
        points = " ".join(
            f"{pad + i * step:.1f},{height - pad - (v / top) * (height - 2 * pad):.1f}"
            for i, v in enumerate(values)
            if v is not None
        )
        lines.append(f"<polyline fill='none' stroke='{colour}' stroke-width='2' points='{points}'/>")
        lines.append(
            f"<text x='{pad + 90 * names.index(name)}' y='12' font-size='10' fill='{colour}'>{name}</text>"
        )
    axis = f"<line x1='{pad}' y1='{height - pad}' x2='{width - pad}' y2='{height - pad}' stroke='#999'/>"
    peak = f"<text x='2' y='{pad}' font-size='9'>{top:.3g}</text>"
    return (
        f"<figure><svg width='{width}' height='{height}'>{axis}{peak}{''.join(lines)}</svg>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _table(rows: list[kpi_pb.KpiRow]) -> str:
    head = "<tr><th>bucket</th>" + "".join(f"<th>{name}</th>" for name in COLUMNS) + "</tr>"
    body = []
    for row in rows:
        cells = []
        for name in COLUMNS:
            value = row.values.get(name)
            cells.append("<td>-</td>" if value is None else f"<td>{value:.3g}</td>")
        body.append(f"<tr><td>{row.bucket_start.ToDatetime():%H:%M}</td>{''.join(cells)}</tr>")
    return f"<table>{head}{''.join(body)}</table>"
