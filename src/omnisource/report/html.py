"""Self-contained HTML: inline CSS, images as base64 ``data:`` URIs, no external URL at all."""
from __future__ import annotations

import base64
import html
import math

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#212529;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #dee2e6;padding-bottom:.2em;margin-top:1.8em}
h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #dee2e6;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f1f3f5}
.na{color:#868e96;font-style:italic}.thumbs{display:flex;flex-wrap:wrap;gap:.5em}
figure{margin:0;font-size:.75em;text-align:center;max-width:120px;word-break:break-word}
img.plot{max-width:100%;height:auto}nav a{margin-right:1em}
"""

# Under --self-check the page reports, once loaded, how many images decoded and how many tables
# it holds into <pre id="report-check"> (read back by a headless browser in the tests).
CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                   .map(function (i) { return i.alt; });
  var out = document.createElement('pre');
  out.id = 'report-check';
  out.textContent = JSON.stringify({images: imgs.length, broken: broken,
                                    tables: document.getElementsByTagName('table').length});
  document.body.appendChild(out);
});
</script>"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def table(headers: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def img(data: bytes, alt: str, cls: str = "plot", kind: str = "png") -> str:
    """An embedded image; ``kind``: png or jpeg."""
    text = base64.b64encode(data).decode("ascii")
    return f'<img class="{cls}" alt="{esc(alt)}" src="data:image/{kind};base64,{text}">'


def unavailable(reason: str) -> str:
    return f'<p class="na">not available: {esc(reason)}</p>'


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]], self_check: bool = False) -> str:
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections)
    body = "\n".join(section(a, t, b) for a, t, b in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head>\n<body><h1>{esc(title)}</h1><p>{esc(subtitle)}</p><nav>{nav}</nav>\n"
            f"{body}\n{CHECK_SCRIPT if self_check else ''}</body></html>\n")


def interval_text(row: dict, key: str, lo: str | None = None, hi: str | None = None, sign: bool = False) -> str:
    """"96.7 [94.2, 98.1]" (percent) of ``row[key]`` and its interval; "" when there is no value."""
    value = row.get(key)
    if value is None:
        return ""
    fmt = "{:+.1f}" if sign else "{:.1f}"
    text = fmt.format(100 * value)
    a, b = row.get(lo or f"{key}_lo"), row.get(hi or f"{key}_hi")
    if a is not None and b is not None and math.isfinite(a) and math.isfinite(b):
        text += f" [{fmt.format(100 * a)}, {fmt.format(100 * b)}]"
    return text
