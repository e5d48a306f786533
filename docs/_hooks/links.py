"""MkDocs hook: the pages outside ``docs/`` that the site needs, and links that work both on GitHub and on the site.

The Markdown pages link to files beside ``docs/`` (``../benchmarks/RESULTS.md``, the gallery scripts in
``../examples/``, the question scripts in ``questions/``) so that they work when read on GitHub. MkDocs only sees
``docs/``, so this hook

- adds ``benchmarks/RESULTS.md`` to the site as ``results.md`` (read from the checkout at build time, never
  copied into ``docs/``);
- rewrites those links to the pages the site builds: the results page and the gallery pages that mkdocs-gallery
  generates from the scripts (``generated/gallery/<name>.md``, ``generated/questions/<name>.md``), and the
  results page's own links to ``../docs/...`` to the same files on the site.

A link that matches none of these rules is left as it is, so strict mode still reports it when it is broken.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

_ROOT = Path(__file__).resolve().parents[2]  # the repository (docs/_hooks/links.py)
_RESULTS = _ROOT / "benchmarks" / "RESULTS.md"
_LINK = re.compile(r"\]\(([^)\s#]+)(#[^)\s]*)?\)")


def on_files(files, config):
    if _RESULTS.is_file():
        files.append(File.generated(config, "results.md", content=_RESULTS.read_text(encoding="utf-8")))
    return files


def _site_target(target: str) -> str | None:
    """The docs-relative page of ``target`` (docs-relative, normalised), or None when no rule applies."""
    if target == "../benchmarks/RESULTS.md":
        return "results.md"
    for source, generated in (("../examples", "generated/gallery"), ("questions", "generated/questions")):
        if target in (source, source + "/", source + "/README.md"):
            return generated + "/index.md"
        if target.startswith(source + "/") and target.endswith(".py") and "/" not in target[len(source) + 1 :]:
            return f"{generated}/{target[len(source) + 1 : -3]}.md"
    return None


def on_page_markdown(markdown, page, config, files):
    here = posixpath.dirname(page.file.src_uri)
    # results.md is benchmarks/RESULTS.md: its links are relative to benchmarks/, e.g. ../docs/own-data.md
    from_results = page.file.src_uri == "results.md" and page.file.generated_by is not None

    def replace(match: re.Match) -> str:
        url, anchor = match.group(1), match.group(2) or ""
        if "://" in url or url.startswith(("/", "mailto:")):
            return match.group(0)
        if from_results:  # relative to benchmarks/ in the repository
            in_repo = posixpath.normpath(posixpath.join("benchmarks", url))
            target = in_repo[len("docs/") :] if in_repo.startswith("docs/") else None
        else:
            target = _site_target(posixpath.normpath(posixpath.join(here, url)))
        if target is None:
            return match.group(0)
        return f"]({posixpath.relpath(target, here or '.')}{anchor})"

    return _LINK.sub(replace, markdown)
