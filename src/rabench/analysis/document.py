"""A report as a list of blocks (headings, paragraphs, tables, images, lists), rendered
twice: markdown that links the PNGs next to it, and HTML with the same PNGs embedded as
base64 so the file can be mailed around and opened offline."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rabench.stats import FAIL, INCONCLUSIVE, NO_VERDICT, PASS


@dataclass
class Doc:
    """Blocks of a report, rendered to markdown or HTML."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("heading", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("para", text))

    def bullets(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("bullets", list(items)))

    def table(self, headers: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", (headers, rows)))

    def image(self, path: Path | None, alt: str) -> None:
        if path is not None:
            self.blocks.append(("image", (path, alt)))

    def markdown(self) -> str:
        out = []
        for kind, value in self.blocks:
            if kind == "heading":
                out.append("#" * value[0] + " " + value[1])
            elif kind == "para":
                out.append(value)
            elif kind == "bullets":
                out.append("\n".join(f"- {item}" for item in value))
            elif kind == "table":
                headers, rows = value
                cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
                lines = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers)]
                lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
                out.append("\n".join(lines))
            elif kind == "image":
                out.append(f"![{value[1]}]({value[0].name})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        body = []
        for kind, value in self.blocks:
            if kind == "heading":
                body.append(f"<h{value[0]}>{_inline(value[1])}</h{value[0]}>")
            elif kind == "para":
                body.append(f"<p>{_inline(value)}</p>")
            elif kind == "bullets":
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in value) + "</ul>")
            elif kind == "table":
                headers, rows = value
                head = "".join(f"<th>{_inline(h)}</th>" for h in headers)
                rows_html = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table>")
            elif kind == "image":
                data = base64.b64encode(value[0].read_bytes()).decode("ascii")
                alt = html.escape(value[1])
                body.append(f'<figure><img alt="{alt}" src="data:image/png;base64,{data}"><figcaption>{alt}</figcaption></figure>')
        return HTML_PAGE.format(title=html.escape(title), body="\n".join(body))


HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
code {{ background: #f3f3f3; padding: 0 0.2em; }}
img {{ max-width: 100%; }}
figure {{ margin: 1em 0; }} figcaption {{ color: #555; font-size: 0.85em; }}
.PASS {{ color: #0a7d2c; font-weight: bold; }} .FAIL {{ color: #b00020; font-weight: bold; }}
.INCONCLUSIVE {{ color: #9a6700; font-weight: bold; }} .NO_VERDICT {{ color: #555; font-weight: bold; }}
</style></head>
<body>
{body}
</body></html>
"""


LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _inline(text: str) -> str:
    """Escape HTML, then render [links](url), `code` spans and colour the verdict words."""
    escaped = LINK.sub(lambda m: f'<a href="{m.group(2)}">{m.group(1)}</a>', html.escape(str(text)))
    parts = escaped.split("`")
    for i in range(1, len(parts), 2):
        parts[i] = f"<code>{parts[i]}</code>"
    escaped = "".join(parts)
    for word in (PASS, FAIL, INCONCLUSIVE, NO_VERDICT):
        css = word.replace(" ", "_")
        escaped = escaped.replace(f"**{word}**", f'<span class="{css}">{word}</span>')
    return escaped.replace("**", "")
