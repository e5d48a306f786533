"""One self-contained HTML report: inline CSS, no scripts, no network; figures are PNG/GIF files
next to the HTML, referenced by relative paths.

A :class:`Report` only ever links files that exist: :meth:`Report.figure` and :meth:`Report.link`
raise ``FileNotFoundError`` for a missing file, and :meth:`Report.write` checks every link again.
"""

from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

__all__ = ["Report", "linked_files"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
p.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.95em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.7em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; image-rendering: pixelated; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.warn { background: #fff3cd; border: 1px solid #e0c060; padding: 0.6em 1em; border-radius: 4px; }
code { background: #f4f4f4; padding: 0 0.25em; border-radius: 3px; }
"""


@dataclass
class Report:
    """An HTML report assembled block by block and written to ``path`` (figures must lie under its folder).

    Parameters
    ----------
    path: the ``.html`` file to write.
    title: page title and heading.
    """

    path: Path
    title: str
    subtitle: str = ""
    _blocks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # absolute from the start: a relative report path and relative figure paths are both relative to
        # the working directory, never to each other
        self.path = Path(self.path).absolute()

    @property
    def root(self) -> Path:
        return self.path.parent

    def _relative(self, file: str | os.PathLike) -> str:
        # a relative path is relative to the working directory, like every other path a caller passes
        target = Path(file).absolute()
        if not target.is_file():
            raise FileNotFoundError(f"the report would link {target}, which does not exist")
        try:
            rel = target.resolve().relative_to(self.root.resolve())
        except ValueError:
            raise InputError(f"{target} is not inside the report's folder {self.root}") from None
        return rel.as_posix()

    def heading(self, text: str) -> None:
        self._blocks.append(f"<h2>{html.escape(text)}</h2>")

    def text(self, text: str) -> None:
        """A paragraph of plain text (escaped)."""
        self._blocks.append(f"<p>{html.escape(text)}</p>")

    def warning(self, text: str) -> None:
        self._blocks.append(f'<p class="warn">{html.escape(text)}</p>')

    def table(self, header: list[str], rows: list[list]) -> None:
        """A table; floats are shown with 3 decimals."""

        def cell(v) -> str:
            return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))

        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
        self._blocks.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def figure(self, file: str | os.PathLike, caption: str = "", width: int | None = None) -> None:
        """An image (PNG/GIF/...) that must exist; linked relative to the report."""
        rel = self._relative(file)
        style = f' style="width:{int(width)}px"' if width else ""
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._blocks.append(
            f'<figure><a href="{html.escape(rel)}"><img src="{html.escape(rel)}" alt="{html.escape(caption or rel)}"'
            f"{style}></a>{cap}</figure>"
        )

    def link(self, file: str | os.PathLike, text: str | None = None) -> None:
        rel = self._relative(file)
        self._blocks.append(f'<p><a href="{html.escape(rel)}">{html.escape(text or rel)}</a></p>')

    def render(self) -> str:
        sub = f'<p class="sub">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head>\n<body>\n"
            f"<h1>{html.escape(self.title)}</h1>{sub}\n" + "\n".join(self._blocks) + "\n</body></html>\n"
        )

    def write(self) -> Path:
        """Write the HTML; raises ``FileNotFoundError`` if a linked file vanished meanwhile."""
        text = self.render()
        self.root.mkdir(parents=True, exist_ok=True)
        missing = [f for f in linked_files(text) if not (self.root / f).is_file()]
        if missing:
            raise FileNotFoundError(f"the report links files that do not exist: {', '.join(missing)}")
        self.path.write_text(text, encoding="utf-8")
        return self.path


def linked_files(text: str) -> list[str]:
    """Relative paths in ``src=``/``href=`` attributes of an HTML text (unescaped, deduplicated)."""
    found = re.findall(r'(?:src|href)="([^"]+)"', text)
    return list(dict.fromkeys(html.unescape(f) for f in found))
