"""Self-contained HTML pages: one file, images inline (PNG ``data:`` URIs, inline SVG), no script, no
external style sheet, no request to any host; written atomically (a reader never sees half a page)."""

from __future__ import annotations

import base64
import html
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#212529}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #dee2e6}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #dee2e6;padding:.3em .5em;vertical-align:top;text-align:left}
th{background:#f1f3f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv th{width:14em}img{max-width:100%;height:auto}svg.arch{max-width:min(100%,440px);height:auto;display:block}
code{font-size:.8em;word-break:break-all}.state{color:#495057}.live{color:#d9480f;font-weight:bold}
figure{margin:.5em 0}figcaption{color:#495057;font-size:.9em}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def figure_html(path: Path, alt: str, caption: str = "") -> str:
    """A PNG file inlined as a ``data:`` URI, with its caption."""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{png_data_uri(path)}" alt="{esc(alt)}">{cap}</figure>'


def kv_table(rows: Sequence[tuple[str, Any]], table_id: str = "") -> str:
    ident = f' id="{esc(table_id)}"' if table_id else ""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv"{ident}><tbody>{body}</tbody></table>'


def table(header: Sequence[str], rows: Sequence[tuple[dict[str, Any], Sequence[str]]], table_id: str) -> str:
    """``rows``: (data attributes of the ``<tr>``, cells as HTML already escaped)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for attrs, cells in rows:
        attr = "".join(f' data-{k}="{esc(v)}"' for k, v in attrs.items())
        body.append(f"<tr{attr}>" + "".join(cell if cell.startswith("<td") else f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return f'<table id="{esc(table_id)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return '<td class="num">-</td>'
    text = f"{value:,}" if isinstance(value, int) else f"{value:.{digits}g}" if isinstance(value, float) else str(value)
    return f'<td class="num">{esc(text)}</td>'


def page(title: str, body: str, refresh_s: int | None = None, subtitle: str = "") -> str:
    """A whole page; ``refresh_s`` makes the browser reload it (a run still going), without JavaScript."""
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s else ""
    sub = f'<p class="state">{subtitle}</p>' if subtitle else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{refresh}<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        f"<h1>{esc(title)}</h1>{sub}\n{body}\n</body></html>\n"
    )


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path`` (``os.replace``): a
    reader sees the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
