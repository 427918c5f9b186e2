"""Read a report.html the way the tests need it (the standard library's HTML parser, no browser)."""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path


class Page(HTMLParser):
    """What the tests read from a report: meta tags, images, text by element id, and tables' cell texts."""

    def __init__(self, html: str):
        super().__init__()
        self.metas, self.images, self.text, self.tables = [], [], {}, {}
        self._ids: list[tuple[str, int]] = []  # open elements with an id, and their depth
        self._depth, self._table, self._row, self._cell = 0, None, None, None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "meta":
            self.metas.append(attrs)
            return
        if tag == "img":
            self.images.append(attrs["src"])
            return
        self._depth += 1
        if "id" in attrs:
            self._ids.append((attrs["id"], self._depth))
            self.text.setdefault(attrs["id"], "")
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", f"table{len(self.tables)}"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("meta", "img"):
            return
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join(self._cell.split()))
            self._cell = None
        elif tag == "table":
            self._table = None
        while self._ids and self._ids[-1][1] >= self._depth:
            self._ids.pop()
        self._depth -= 1

    def handle_data(self, data):
        for element_id, _ in self._ids:
            self.text[element_id] += data
        if self._cell is not None:
            self._cell += data

    def say(self, element_id: str) -> str:
        return " ".join(self.text[element_id].split())

    @property
    def refresh(self) -> bool:
        return any(m.get("http-equiv") == "refresh" for m in self.metas)


def page(path: Path) -> Page:
    return Page(Path(path).read_text(encoding="utf-8"))
