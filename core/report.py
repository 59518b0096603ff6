"""Self-contained HTML reports: tables and matplotlib figures embedded as PNG data URIs."""

import base64
import html
import io

STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.3em .7em;text-align:right}"
    "th{background:#eee}td:first-child{text-align:left}p.warning{color:#a40000;font-weight:bold}"
)


def figure(width=6.0, height=4.0):
    # A bare Figure, not pyplot: no global state or GUI backend inside QGIS.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="tight")


def image(fig, alt):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table(header, rows):
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_format(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _format(value):
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def page(title, sections):
    """sections: (heading, html) pairs; returns the whole document."""
    body = "".join(f"<h2>{html.escape(heading)}</h2>{content}" for heading, content in sections)
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def paragraph(text, warning=False):
    return f"<p{' class=warning' if warning else ''}>{html.escape(text)}</p>"
