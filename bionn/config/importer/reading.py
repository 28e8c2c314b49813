"""Reading: a TOML file's values (tomllib) and its comments (tomlkit), and which kind of file it is."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit import items

from bionn.config.errors import ConfigError

CONFIG_SECTIONS = ("structure", "compile", "dataset", "training")
DATASET_SECTIONS = ("parameters", "shape", "simulation")

# A place in the TOML: table and key names, and list positions, e.g. ("P", "structure", "layers", 2).
Place = tuple[Any, ...]


@dataclass
class Comments:
    """Comment lines above, and trailing comments beside, a table, a key or a list element."""

    above: dict[Place, list[str]] = field(default_factory=dict)
    trailing: dict[Place, list[str]] = field(default_factory=dict)

    def of(self, place: Place) -> tuple[list[str], list[str]]:
        return self.above.get(place, []), self.trailing.get(place, [])


@dataclass
class TomlFile:
    path: Path
    data: dict[str, Any]
    comments: Comments
    kind: str  # "configurations", "data" or "empty"


def read_toml(path: Path) -> TomlFile:
    """Values, comments and kind of a TOML file; ConfigError naming the file on any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err})") from None
    try:
        data = tomllib.loads(text)  # its errors give line and column
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    return TomlFile(path, data, read_comments(text), file_kind(path, data))


def file_kind(path: Path, data: dict[str, Any]) -> str:
    """configurations.toml ([X.structure], ...) or data.toml ([D.shape], ...); never both."""
    kinds = set()
    for name, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(
                f"{path}: top-level key {name!r} = {table!r} is not a table; "
                "write each configuration or dataset as [name]"
            )
        if set(table) & set(CONFIG_SECTIONS):
            kinds.add("configurations")
        elif set(table) & set(DATASET_SECTIONS):
            kinds.add("data")
    if len(kinds) > 1:
        raise ConfigError(
            f"{path}: mixes configurations ({', '.join(CONFIG_SECTIONS)}) and datasets "
            f"({', '.join(DATASET_SECTIONS)}); keep them in configurations.toml and data.toml"
        )
    return kinds.pop() if kinds else ("empty" if not data else "configurations")


class _CommentReader:
    """Walks tomlkit's document in file order. A comment block belongs to the next table or key
    (a blank line drops it); an indented comment line continues the comment beside the key above."""

    def __init__(self) -> None:
        self.comments = Comments()
        self.pending: list[str] = []
        self.last_trailing: Place | None = None

    def walk(self, container: Any, prefix: Place) -> None:
        for key, item in container.body:
            if key is None:
                self.loose(item)
                continue
            place = prefix + (key.key,)
            if not (isinstance(item, items.Table) and item.is_super_table()):  # `a.b = 1`: b owns them
                self.owner(place, _text(item.trivia.comment))
            if isinstance(item, items.Table):
                self.walk(item.value, place)
            elif isinstance(item, items.Array):
                self.elements(place, item)

    def loose(self, item: Any) -> None:
        if isinstance(item, items.Whitespace):  # a blank line
            self.pending, self.last_trailing = [], None
        elif isinstance(item, items.Comment):
            if item.trivia.indent and self.last_trailing is not None:
                self.comments.trailing[self.last_trailing].append(_text(item.trivia.comment))
            else:
                self.pending.append(_text(item.trivia.comment))

    def owner(self, place: Place, trailing: str) -> None:
        if self.pending:
            self.comments.above[place] = self.pending
        self.pending, self.last_trailing = [], None
        if trailing:
            self.comments.trailing[place] = [trailing]
            self.last_trailing = place

    def elements(self, place: Place, array: items.Array) -> None:
        """Comment lines inside a multi-line list belong to the next element, one beside an element to it."""
        index = -1
        for group in array._value:  # tomlkit keeps each element with its comma, whitespace and comment
            element = next((x for x in group if not isinstance(x, _NOT_A_VALUE)), None)
            note = next((x for x in group if isinstance(x, items.Comment)), None)
            if element is not None:
                index += 1
            if note is None:
                continue
            own_line = any(isinstance(x, items.Whitespace) and "\n" in x.s for x in group)
            if element is not None:
                target = place + (index,)
            else:  # a comment line, or one beside the opening bracket
                target = place + (index + 1,) if own_line else place
            where = self.comments.trailing if element is not None or not own_line else self.comments.above
            where.setdefault(target, []).append(_text(note.trivia.comment))


_NOT_A_VALUE = (items.Whitespace, items.Comment, items.Null)


def _text(comment: str) -> str:
    return comment.lstrip("#").strip() if comment else ""


def read_comments(text: str) -> Comments:
    """Comments of a TOML text by the place they describe (tables, keys, list elements)."""
    reader = _CommentReader()
    reader.walk(tomlkit.parse(text), ())
    return reader.comments
