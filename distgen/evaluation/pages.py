"""One report page as Markdown (index.md) and as one self-contained HTML file (index.html, images
embedded), from a list of blocks: ("h1"|"h2"|"p", text), ("facts", [(label, text)]), ("details",
(summary, text)), ("table", (name, header, rows)), ("img", (caption, png)), ("thumbs", [(caption,
thumbnail, full-size file)]). Table cells are text or (text, path) links; paths are written relative to
the page's folder. Used by launch/report.py (run and sweep pages):

    python launch/report.py RUN_DIR_OR_SWEEP_DIR
"""
from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path
from urllib.parse import quote


def link(path: Path, base: Path) -> str:
    return quote(Path(os.path.relpath(path, base)).as_posix(), safe="/=,+~")  # run ids keep their = and ,


def write(blocks: list[tuple], out: Path, title: str) -> tuple[Path, Path]:
    md, page = out / "index.md", out / "index.html"
    md.write_text(to_markdown(blocks, out))
    page.write_text(to_html(blocks, title, out))
    return md, page


def md_cell(cell, base: Path) -> str:
    text = f"[{cell[0]}]({link(cell[1], base)})" if isinstance(cell, tuple) else cell
    return text.replace("|", "\\|")


def to_markdown(blocks, base: Path) -> str:
    lines = []
    for kind, value in blocks:
        if kind == "h1":
            lines += [f"# {value}", ""]
        elif kind == "h2":
            lines += [f"## {value}", ""]
        elif kind == "p":
            lines += [value, ""]
        elif kind == "facts":
            lines += [f"- **{label}**: {text}" for label, text in value] + [""]
        elif kind == "details":
            summary, text = value
            lines += [f"**{summary}**", "", "```yaml", text.rstrip("\n"), "```", ""]
        elif kind == "table":
            name, header, rows = value
            lines += [f"**{name}**", "", "| " + " | ".join(md_cell(h, base) for h in header) + " |",
                      "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(md_cell(c, base) for c in r) + " |" for r in rows] + [""]
        elif kind == "img":
            caption, png = value
            lines += [f"![{caption}]({link(png, base)})", ""]
        elif kind == "thumbs" and value:
            lines += ["| " + " | ".join(md_cell(c, base) for c, _, _ in value) + " |", "|" + "---|" * len(value),
                      "| " + " | ".join(f"[![{md_cell(c, base)}]({link(t, base)})]({link(f, base)})"
                                        for c, t, f in value) + " |", ""]
    return "\n".join(lines)


def inline(text: str) -> str:
    """Escaped text with `code` spans."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))


def embed(path: Path) -> str:
    mime = "image/jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "image/png"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def to_html(blocks, title: str, base: Path) -> str:
    def cell(c) -> str:
        return f'<a href="{link(c[1], base)}">{html.escape(c[0])}</a>' if isinstance(c, tuple) else inline(c)

    body = []
    for kind, value in blocks:
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{inline(value)}</{kind}>")
        elif kind == "facts":
            trs = "".join(f"<tr><th>{html.escape(label)}</th><td>{inline(text)}</td></tr>" for label, text in value)
            body.append(f"<table class='facts'>{trs}</table>")
        elif kind == "details":
            summary, text = value
            body.append(f"<details><summary>{html.escape(summary)}</summary><pre>{html.escape(text)}</pre></details>")
        elif kind == "table":
            name, header, rows = value
            cells = "".join(f"<th>{cell(h)}</th>" for h in header)
            trs = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
            body.append(f"<p><b>{inline(name)}</b></p><table><tr>{cells}</tr>{trs}</table>")
        elif kind == "img":
            caption, png = value
            body.append(f'<figure><img src="{embed(png)}" alt="{html.escape(caption)}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        elif kind == "thumbs" and value:
            figs = "".join(f'<figure><a href="{link(full, base)}"><img src="{embed(thumb)}" '
                           f'alt="{html.escape(caption)}"></a><figcaption>{html.escape(caption)}</figcaption></figure>'
                           for caption, thumb, full in value)
            body.append(f"<div class='row'>{figs}</div>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}img{max-width:100%}"
             "table.facts th,table.facts td{text-align:left;vertical-align:top}table.facts th{white-space:nowrap}"
             ".row{display:flex;flex-wrap:wrap;gap:8px}.row figure{margin:0}figcaption{font-size:90%}"
             "pre{background:#f6f6f6;padding:8px;overflow:auto}code{background:#f6f6f6}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
