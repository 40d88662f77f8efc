"""HTML of the dashboard's health row and beach badges, from a :meth:`Hub.snapshot` (pure, tested without
a server). Every number sits in an element a browser test can find: ``[data-metric=<name>] .value``,
``[data-beach="<name>"]`` with ``data-level``, ``[data-reason=<code>]``, ``[data-latest="<name>"]`` (a row of
the latest-reading table).
"""

from __future__ import annotations

from html import escape
from typing import Any

from sensor_pipeline.dashboard import status

STYLE = """
:host { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: 6px 10px; width: 190px; background: #fafbfc; }
.card .label { font-size: 12px; color: #57606a; }
.card .value { font-size: 22px; font-weight: 600; color: #1f2328; }
.card .note { font-size: 11px; color: #57606a; }
.card.alert { border-color: #cf222e; }
.beaches { display: flex; flex-wrap: wrap; gap: 6px 18px; }
.beach { font-size: 13px; }
.badge { display: inline-block; border-radius: 10px; padding: 1px 8px; margin-left: 4px; font-size: 12px; color: #fff; }
.badge.ok { background: #1a7f37; }
.badge.watch { background: #bc4c00; }
.badge.alert { background: #cf222e; }
.badge.unknown { background: #6e7781; }
table.latest { border-collapse: collapse; width: 100%; font-size: 13px; }
table.latest th, table.latest td { text-align: left; padding: 4px 10px; border-bottom: 1px solid #d0d7de; }
table.latest th { color: #57606a; font-weight: 600; }
table.latest td.number { text-align: right; font-variant-numeric: tabular-nums; }
"""


def _rate(value: float | None) -> str:
    if value is None:
        return "&ndash;"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "&ndash;"
    if value >= 86_400:
        return "&ge; 1 d"
    if value >= 120:
        return f"{value / 60:.0f} min"
    return f"{value:.2f} s" if value < 10 else f"{value:.0f} s"


def _card(metric: str, label: str, value: str, note: str = "", alert: bool = False) -> str:
    return (
        f'<div class="card{" alert" if alert else ""}" data-metric="{metric}">'
        f'<div class="label">{label}</div><div class="value">{value}</div><div class="note">{note}</div></div>'
    )


#: Dead letters above this share of the readings in are worth a look (the real buoys' fault rate is far below).
DEAD_SHARE_ALERT = 0.01


def dead_alert(rates: dict[str, float | None], reasons: dict[str, int]) -> bool:
    """The dead-letter card is marked when they exceed ``DEAD_SHARE_ALERT`` of the input, or when the
    store refused readings (``store_rejected``: not the data's fault)."""
    dead, readings_in = rates.get("dead") or 0.0, rates.get("in") or 0.0
    return "store_rejected" in reasons or (dead > 0 and dead > DEAD_SHARE_ALERT * readings_in)


def consumer_state(health: dict[str, Any]) -> str:
    return "connected" if health["connected"] else ("reconnecting" if health["alive"] else "stopped")


def health_html(snapshot: dict[str, Any]) -> str:
    """The pipeline-health row: rates in and out, dead letters by reason, the job's lag, the delay."""
    pipeline = snapshot["pipeline"]
    rates = pipeline["rates"]
    reasons: dict[str, int] = snapshot["reasons"]
    reason_list = " &middot; ".join(
        f'<span data-reason="{escape(code)}">{escape(code)} {count}</span>' for code, count in reasons.items()
    )
    lag = pipeline["lag"]
    group = escape(pipeline["group"])
    if lag is None and pipeline.get("broker_silent_for"):
        lag_value, lag_note = "&ndash;", f"the broker has not answered for {_seconds(pipeline['broker_silent_for'])}"
    elif lag is None and pipeline.get("group_error"):
        lag_value, lag_note = "&ndash;", f"cannot read group {group}: {escape(str(pipeline['group_error'])[:160])}"
    elif lag is None:
        lag_value, lag_note = "&ndash;", f"no offsets committed by group {group} yet"
    else:
        lag_value, lag_note = f"{lag:,}", f"readings in RawSensorData not yet processed (group {group})"
        if rates["clean"] and lag:
            lag_note += f"; about {_seconds(lag / max(rates['in'] or 0.0, rates['clean'], 1e-9))} of input"
    delay = snapshot["delay"]
    health = snapshot["health"]
    consumer = (
        f"{health['received']:,} readings, {health['rejected']} rejected, {health['errors']} errors "
        f"&middot; consumer {consumer_state(health)}"
    )
    if health.get("not_shown"):
        consumer += f" &middot; {health['not_shown']:,} readings of unknown beaches beyond the first few not drawn"
    if pipeline["last_error"]:
        consumer += f" &middot; meter: {escape(str(pipeline['last_error'])[:160])}"
    if health["last_error"]:
        consumer += f" &middot; last error: {escape(str(health['last_error'])[:160])}"
    cards = [
        _card("in", "readings in /s", _rate(rates["in"]), "RawSensorData, last 10 s"),
        _card("clean", "clean /s", _rate(rates["clean"]), "CleanSensorData, last 10 s"),
        _card(
            "dead",
            "dead letters /s",
            _rate(rates["dead"]),
            f"last minute: {reason_list}" if reasons else "none in the last minute",
            alert=dead_alert(rates, reasons),
        ),
        _card("lag", "job lag", lag_value, lag_note, alert=bool(lag) and lag > 10 * max(rates["in"] or 0, 100)),
        _card(
            "delay",
            "end-to-end delay p50",
            _seconds(delay["p50"]),
            f"p95 {_seconds(delay['p95'])} &middot; reading time &rarr; CleanSensorData, "
            f"{delay['count']:,} readings in the last minute",
        ),
        _card("dashboard", "dashboard", f"{health['received']:,}", consumer, alert=not health["connected"]),
    ]
    return f'<div class="cards">{"".join(cards)}</div>'


def badges_html(badges: dict[str, list[status.Badge]]) -> str:
    """One entry per beach: its name and badges, the entry's ``data-level`` the worst of them."""
    entries = []
    for beach, items in badges.items():
        level = status.worst([b.level for b in items])
        spans = "".join(f'<span class="badge {b.level}">{escape(b.text)}</span>' for b in items)
        name = escape(beach)
        entries.append(f'<span class="beach" data-beach="{name}" data-level="{level}">{name}{spans}</span>')
    return f'<div class="beaches">{"".join(entries)}</div>'


def latest_html(columns: dict[str, list[Any]]) -> str:
    """The latest reading per beach (``shaping.latest_table``'s columns) as an HTML table."""
    names = list(columns)
    head = "".join(f"<th>{escape(name)}</th>" for name in names)
    rows = []
    for i in range(len(columns[names[0]]) if names else 0):
        cells = []
        for name in names:
            value = columns[name][i]
            kind = ' class="number"' if isinstance(value, int | float) else ""
            cells.append(f"<td{kind}>{escape(str(value))}</td>")
        rows.append(f'<tr data-latest="{escape(str(columns[names[0]][i]))}">{"".join(cells)}</tr>')
    body = "".join(rows) or f'<tr><td colspan="{len(names)}">no readings yet</td></tr>'
    return f'<table class="latest"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
