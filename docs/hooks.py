"""MkDocs hooks (mkdocs.yml ``hooks``): pages may link to repository files outside ``docs/``.

The pages link to repository files with relative paths (``../scripts/reproduce/doorkey/ood_bars.png``),
which work where the Markdown is read in the repository. On the site, a figure is copied in under
``_repo/<path>`` and the link points there; any other file links to the repository
(``<repo_url>/blob/main/<path>``) when ``repo_url`` is set, and is shown as its link text otherwise.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parent.parent
FIGURES = (".png", ".gif", ".svg", ".jpg", ".jpeg")
LINK = re.compile(r"(?P<bang>!?)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")


def _outside(page_uri: str, target: str) -> str | None:
    """The repository path a page's link points to, if it leaves ``docs/``."""
    if re.match(r"[a-z]+:|#", target):
        return None
    path = posixpath.normpath(posixpath.join("docs", posixpath.dirname(page_uri), target.split("#")[0]))
    return None if path.startswith("docs/") or path.startswith("..") else path


def on_files(files: Files, config: Any) -> Files:
    """Add every figure a page links to outside ``docs/`` to the site, under ``_repo/``."""
    for page in [f for f in files if f.src_uri.endswith(".md")]:
        for match in LINK.finditer(Path(page.abs_src_path).read_text()):
            path = _outside(page.src_uri, match["target"])
            if path and path.endswith(FIGURES) and files.get_file_from_path(f"_repo/{path}") is None:
                files.append(File.generated(config, f"_repo/{path}", abs_src_path=str(REPO / path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Point links that leave ``docs/`` at the copied figure or at the repository."""
    depth = posixpath.dirname(page.file.src_uri)

    def rewrite(match: re.Match[str]) -> str:
        path = _outside(page.file.src_uri, match["target"])
        if path is None:
            return match[0]
        if path.endswith(FIGURES):
            return f"{match['bang']}[{match['text']}]({posixpath.relpath(f'_repo/{path}', depth or '.')})"
        if config.repo_url:
            return f"{match['bang']}[{match['text']}]({config.repo_url.rstrip('/')}/blob/main/{path})"
        return match["text"]

    return LINK.sub(rewrite, markdown)
