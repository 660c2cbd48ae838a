"""YAML loading that remembers where every value came from.

pydantic reports errors by field path; users need a file and a line. ``load_with_lines``
returns the plain data plus a map from field path to line, and rejects duplicate keys,
which PyYAML would otherwise silently overwrite.

It is the one loader for YAML we did not write ourselves (inventories, compose files, at a
``--ref`` or read from a host): an alias is built again at each use, so aliases may add at
most ``ALIAS_BUDGET`` values in all (a "billion laughs" of a few hundred bytes is refused in
milliseconds instead of filling memory), and an alias inside the block it names is refused
too. Both errors name the line of the alias.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path_ = tuple[str | int, ...]
MERGE_TAG = "tag:yaml.org,2002:merge"
# libyaml's parser when available: several times faster, same node tree.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Values that aliases may add to a document, all uses together. An `x-common` block of 50
# values merged into 100 services adds 5,000. (Go's yaml.v3, in docker compose, allows ~400,000.)
ALIAS_BUDGET = 20_000
MAX_DEPTH = 200  # nested mappings and sequences (libyaml itself stops at 1,000)


@dataclass
class YamlDocument:
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    duplicates: list[tuple[Path_, int]] = field(default_factory=list)

    def line_of(self, path: Path_) -> int | None:
        """Line of the deepest known prefix of ``path`` (1-based)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


class YamlSyntaxError(ValueError):
    def __init__(self, line: int | None, message: str):
        self.line = line
        super().__init__(message)


def load_with_lines(text: str) -> YamlDocument:
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlSyntaxError(mark.line + 1 if mark else None, f"invalid YAML: {problem}") from exc
    doc = YamlDocument(data=None)
    if root is None:
        return doc
    doc.data = _Converter(text, doc).convert(root, (), None)
    return doc


class _Converter:
    """Nodes to plain data and lines. The composer hands back the anchored node itself for
    each alias, so a node met a second time is an alias being built again: those values are
    counted against ``ALIAS_BUDGET``, and a node met again while it is still being built is
    a cycle (``a: &a [*a]``)."""

    def __init__(self, text: str, doc: YamlDocument):
        self.text = text
        self.doc = doc
        self.seen: set[int] = set()  # nodes built at least once
        self.building: set[int] = set()  # collections being built now
        self.aliases: list[tuple[yaml.Node, yaml.Node | None]] = []  # (aliased node, node holding the alias)
        self.added = 0  # values built again through aliases

    def convert(self, node: yaml.Node, path: Path_, holder: yaml.Node | None) -> Any:
        if id(node) not in self.seen:
            self.seen.add(id(node))
            return self._build(node, path)
        if id(node) in self.building:
            raise self._alias_error(node, holder, "names the block that contains it (a cycle); an alias "
                                    "must name a complete block written before it")
        self.aliases.append((node, holder))
        try:
            return self._build(node, path)
        finally:
            self.aliases.pop()

    def _build(self, node: yaml.Node, path: Path_) -> Any:
        if self.aliases:
            self.added += 1
            if self.added > ALIAS_BUDGET:
                raise self._alias_error(*self.aliases[0], f"expands to more than {ALIAS_BUDGET:,} values in all "
                                        "(an alias bomb?); write the repeated block out, or nest fewer aliases")
        if len(path) > MAX_DEPTH:
            raise YamlSyntaxError(node.start_mark.line + 1, f"invalid YAML: nested deeper than {MAX_DEPTH} levels")
        doc = self.doc
        doc.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            return _scalar(node)
        self.building.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    child = (*path, index)
                    doc.lines[child] = item.start_mark.line + 1
                    items.append(self.convert(item, child, node))
                return items
            out: dict[Any, Any] = {}
            merged: dict[Any, Any] = {}  # from `<<: *anchor`; explicit keys win
            for key_node, value_node in node.value:
                if key_node.tag == MERGE_TAG:
                    sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                    for source in sources:
                        value = self.convert(source, path, node)
                        if not isinstance(value, dict):
                            raise YamlSyntaxError(source.start_mark.line + 1,
                                                  "invalid YAML: `<<` must merge a mapping")
                        merged = {**value, **merged}
                    continue
                key = _scalar(key_node)
                child = (*path, key)
                if key in out:
                    doc.duplicates.append((child, key_node.start_mark.line + 1))
                    continue
                doc.lines[child] = key_node.start_mark.line + 1
                out[key] = self.convert(value_node, child, node)
            return {**merged, **out}
        finally:
            self.building.discard(id(node))

    def _alias_error(self, node: yaml.Node, holder: yaml.Node | None, what: str) -> YamlSyntaxError:
        """The error at the alias itself: the node tree keeps no alias, so find it in the
        events, as the first alias of ``node``'s anchor written inside ``holder``."""
        line = (holder or node).start_mark.line + 1
        lo, hi = (holder.start_mark.index, holder.end_mark.index) if holder is not None else (0, len(self.text))
        try:
            events = list(yaml.parse(self.text, Loader=_LOADER))
        except yaml.YAMLError:
            events = []
        anchors = {e.start_mark.index: e.anchor for e in events
                   if isinstance(e, yaml.NodeEvent) and not isinstance(e, yaml.AliasEvent) and e.anchor}
        name = anchors.get(node.start_mark.index, "")
        found = next((e for e in events if isinstance(e, yaml.AliasEvent) and e.anchor == name
                      and lo <= e.start_mark.index <= hi), None)
        if found is not None:
            line = found.start_mark.line + 1
        return YamlSyntaxError(line, f"invalid YAML: {f'alias *{name}' if name else 'an alias'} {what}")


def _scalar(node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise YamlSyntaxError(node.start_mark.line + 1, "invalid YAML: a mapping key must be a scalar")
    try:
        return _SCALARS.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, OverflowError) as exc:  # a tag `!foo`, `!!int x`, a date 2024-02-30
        problem = getattr(exc, "problem", None) or f"{node.value!r}: {exc}"
        raise YamlSyntaxError(node.start_mark.line + 1, f"invalid YAML: {problem}") from exc
    finally:
        _SCALARS.constructed_objects.pop(node, None)  # the constructor's cache would keep every node


# One constructor resolves every scalar tag (int, bool, null, ...) exactly as safe_load would.
_SCALARS = yaml.SafeLoader("")


def format_path(path: Path_) -> str:
    """('phases', 'core', 'stacks', 0) -> 'phases.core.stacks[0]'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(document)"
