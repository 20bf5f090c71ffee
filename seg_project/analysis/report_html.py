"""HTML pieces of the run report (:mod:`.report`): sections, tables, embedded PNGs, the page.

Everything is escaped here; callers pass plain text (or HTML they built with these helpers).
Pictures are embedded as ``data:image/png;base64`` URIs, so the page is one self-contained
file with no external CSS, JavaScript or images.
"""

import base64
import html
import io
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = [
    "Section",
    "figure_png",
    "image_png",
    "img_tag",
    "page",
    "paragraph",
    "table",
]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1280px; padding: 1em 2em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td.text, th.text { text-align: left; }
td.diag { background: #e6f4e6; font-weight: 600; }
td.zero { color: #aaa; }
.missing { color: #8a4b00; background: #fff6e5; border-left: 4px solid #f0a030;
           padding: 0.4em 0.8em; }
.note { color: #555; font-size: 0.92em; }
figure { margin: 0.6em 0 1.4em; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd;
             image-rendering: auto; }
figcaption { font-size: 0.9em; color: #444; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; }
.cards figure { flex: 1 1 440px; max-width: 100%; }
.cards figure.image-card { flex: 1 1 100%; }
#headline table { font-size: 1.05em; }
#headline th, #headline td { padding: 0.3em 0.9em; }
summary { cursor: pointer; color: #335; }
footer { margin-top: 2em; color: #777; font-size: 0.85em; }
"""


@dataclass
class Section:
    """One section of the page.

    Attributes:
        id: its element id (stable: tests and links find sections by it).
        title: its heading.
        body: its HTML content.
        missing: why the section (or part of it) could not be made; "" when complete.
        notes: short remarks shown under the heading (plain text).
        collapsed: the body is folded away (a ``<details>`` element) behind this text; ""
            shows it.
    """

    id: str
    title: str
    body: str = ""
    missing: str = ""
    notes: List[str] = field(default_factory=list)
    collapsed: str = ""

    def to_html(self) -> str:
        """The section as an HTML ``<section>`` element."""
        parts = [f'<section id="{html.escape(self.id)}">', f"<h2>{html.escape(self.title)}</h2>"]
        if self.missing:
            parts.append(f'<p class="missing">Not available: {html.escape(self.missing)}</p>')
        parts.extend(paragraph(note, "note") for note in self.notes)
        if self.collapsed:
            parts.append(f"<details><summary>{html.escape(self.collapsed)}</summary>{self.body}"
                         "</details>")
        else:
            parts.append(self.body)
        parts.append("</section>")
        return "\n".join(parts)


def _attrs(attrs: Optional[Dict[str, object]]) -> str:
    if not attrs:
        return ""
    return "".join(f' {html.escape(k)}="{html.escape(str(v))}"' for k, v in attrs.items())


def paragraph(text: str, css_class: str = "") -> str:
    """A ``<p>`` of plain text."""
    klass = f' class="{css_class}"' if css_class else ""
    return f"<p{klass}>{html.escape(text)}</p>"


def table(headers: Optional[Sequence[str]], rows: Sequence[Sequence[object]],
          cell_attrs: Optional[Sequence[Sequence[Optional[Dict[str, object]]]]] = None,
          caption: str = "", text_columns: int = 1, table_id: str = "") -> str:
    """An HTML table of plain-text cells.

    Args:
        headers: the column headers (None: no header row).
        rows: the cells (converted with ``str``).
        cell_attrs: per cell, a dict of extra attributes (``data-key``, ``class``...) or None.
        caption: a caption above the table.
        text_columns: how many leading columns are left-aligned text; the first of them
            holds the row labels (``<th>``).
        table_id: the table's ``id`` attribute ("" for none).

    Returns:
        str: the ``<table>`` element.
    """
    out = [f'<table{_attrs({"id": table_id} if table_id else None)}>']
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    text_class = ' class="text"'
    if headers is not None:
        out.append("<tr>" + "".join(
            f"<th{text_class if i < text_columns else ''}>{html.escape(str(h))}</th>"
            for i, h in enumerate(headers)) + "</tr>")
    for r, row in enumerate(rows):
        cells = []
        for c, value in enumerate(row):
            attrs = dict(cell_attrs[r][c] or {}) if cell_attrs else {}
            if c < text_columns:
                attrs["class"] = ("text " + str(attrs.get("class", ""))).strip()
            tag = "th" if c == 0 < text_columns else "td"
            cells.append(f"<{tag}{_attrs(attrs)}>{html.escape(str(value))}</{tag}>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def img_tag(png: bytes, alt: str, attrs: Optional[Dict[str, object]] = None) -> str:
    """An ``<img>`` with the PNG embedded as a base64 data URI."""
    data = base64.b64encode(png).decode("ascii")
    return (f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"'
            f"{_attrs(attrs)}>")


def figure_png(fig, dpi: int = 100) -> bytes:
    """A matplotlib ``Figure`` as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def image_png(image_rgb: np.ndarray, max_bytes: int, max_width: int,
              min_width: int = 320) -> bytes:
    """An RGB picture as PNG, shrunk (area interpolation) to at most ``max_width`` pixels
    wide and then, step by step, until the PNG is at most ``max_bytes`` (or the picture is
    ``min_width`` wide)."""
    import cv2

    picture = np.ascontiguousarray(image_rgb[..., ::-1])  # cv2 writes BGR
    while True:
        height, width = picture.shape[:2]
        if width > max_width:
            scale = max_width / width
            picture = cv2.resize(picture, (max_width, max(1, round(height * scale))),
                                 interpolation=cv2.INTER_AREA)
            continue
        ok, data = cv2.imencode(".png", picture, [cv2.IMWRITE_PNG_COMPRESSION, 6])
        if not ok:
            raise OSError(f"cannot encode a picture of shape {picture.shape} as PNG")
        if len(data) <= max_bytes or width <= min_width:
            return data.tobytes()
        max_width = max(min_width, int(width * 0.9 * (max_bytes / len(data)) ** 0.5))


def page(title: str, header_html: str, sections: Sequence[Section], footer: str) -> str:
    """The whole HTML document: a heading, links to the sections, the sections, a footer."""
    nav = " ".join(f'<a href="#{html.escape(s.id)}">{html.escape(s.title)}</a>'
                   for s in sections)
    missing = [s for s in sections if s.missing]
    summary = ""
    if missing:
        items = "".join(f"<li><a href='#{html.escape(s.id)}'>{html.escape(s.title)}</a>: "
                        f"{html.escape(s.missing)}</li>" for s in missing)
        summary = (f'<div class="missing" id="missing-sections"><strong>Incomplete '
                   f"sections</strong><ul>{items}</ul></div>")
    body = "\n".join(s.to_html() for s in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{header_html}\n<nav>{nav}</nav>\n{summary}\n"
        f"{body}\n<footer>{html.escape(footer)}</footer>\n</body>\n</html>\n"
    )
