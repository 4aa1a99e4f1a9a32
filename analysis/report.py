"""report.md and report.html from one document model, so both always say the same thing.

The Markdown links the PNGs beside it (``plots/``); the HTML embeds them (base64) so it can be
mailed or archived as one file.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from analysis.numbers import DIGITS, number


def fmt(value: Any, digits: int = DIGITS) -> str:
    """A table cell or number in running text, as ``analysis.numbers.number`` writes it."""
    return number(value, digits)


@dataclass
class Document:
    """A flat list of blocks: ('h', level, text) ('p', text) ('ul', items) ('table', headers, rows)
    ('img', relative path, alt, caption) ('code', text)."""
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(("table", list(headers), [[fmt(c) for c in r] for r in rows]))

    def img(self, rel_path: str, alt: str, caption: str) -> None:
        self.blocks.append(("img", rel_path, alt, caption))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    # ------------------------------------------------------------ renderers
    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                out += [f"{'#' * (b[1] + 1)} {b[2]}", ""]
            elif kind == "p":
                out += [b[1], ""]
            elif kind == "ul":
                out += [f"- {item}" for item in b[1]] + [""]
            elif kind == "table":
                cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
                out.append("| " + " | ".join(cell(h) for h in b[1]) + " |")
                out.append("|" + "|".join("---" for _ in b[1]) + "|")
                out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in b[2]]
                out.append("")
            elif kind == "img":
                out += [f"![{b[2]}]({b[1]})", "", f"*{b[3]}* (PDF: `{Path(b[1]).with_suffix('.pdf')}`)", ""]
            elif kind == "code":
                out += ["```", b[1], "```", ""]
        return "\n".join(out).rstrip() + "\n"

    def html(self, base_dir: Path) -> str:
        e = html.escape
        parts = [
            "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{e(self.title)}</title>",
            "<style>body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;"
            "padding:0 1em;color:#222;line-height:1.45}table{border-collapse:collapse;margin:.8em 0;font-size:.86em}"
            "th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}"
            "th{background:#f2f2f2}tr:nth-child(even) td{background:#fafafa}figure{margin:1.2em 0}"
            "img{max-width:100%;border:1px solid #eee}figcaption{font-size:.9em;color:#444}"
            "pre{background:#f6f6f6;padding:.6em;overflow-x:auto}code{font-size:.92em}</style>",
            "</head><body>", f"<h1>{e(self.title)}</h1>",
        ]
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                parts.append(f"<h{b[1] + 1}>{e(b[2])}</h{b[1] + 1}>")
            elif kind == "p":
                parts.append(f"<p>{_inline(b[1])}</p>")
            elif kind == "ul":
                parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b[1]) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{e(str(h))}</th>" for h in b[1])
                body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in b[2])
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode((base_dir / b[1]).read_bytes()).decode("ascii")
                pdf = Path(b[1]).with_suffix(".pdf")
                parts.append(f'<figure><img alt="{e(b[2])}" src="data:image/png;base64,{data}">'
                             f"<figcaption>{_inline(b[3])} (PDF: <code>{e(str(pdf))}</code>)</figcaption></figure>")
            elif kind == "code":
                parts.append(f"<pre><code>{e(b[1])}</code></pre>")
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"


def _inline(text: str) -> str:
    """Escape, then render `code` spans (the only inline markup the report uses)."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))
