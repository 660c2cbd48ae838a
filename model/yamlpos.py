"""YAML loading that remembers where every value came from.

pydantic reports errors by field path; users need a file and a line. ``load_with_lines``
returns the plain data plus a map from field path to line, and rejects duplicate keys,
which PyYAML would otherwise silently overwrite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path_ = tuple[str | int, ...]
MERGE_TAG = "tag:yaml.org,2002:merge"
# libyaml's parser when available: several times faster, same node tree.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
    doc.data = _convert(root, (), doc)
    return doc


def _convert(node: yaml.Node, path: Path_, doc: YamlDocument) -> Any:
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        merged: dict[Any, Any] = {}  # from `<<: *anchor`; explicit keys win
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    value = _convert(source, path, doc)
                    if not isinstance(value, dict):
                        raise YamlSyntaxError(source.start_mark.line + 1, "invalid YAML: `<<` must merge a mapping")
                    merged = {**value, **merged}
                continue
            key = _scalar(key_node)
            child = (*path, key)
            if key in out:
                doc.duplicates.append((child, key_node.start_mark.line + 1))
                continue
            doc.lines[child] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, child, doc)
        return {**merged, **out}
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            child = (*path, index)
            doc.lines[child] = item.start_mark.line + 1
            items.append(_convert(item, child, doc))
        return items
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise YamlSyntaxError(node.start_mark.line + 1, "invalid YAML: a mapping key must be a scalar")
    return _SCALARS.construct_object(node, deep=True)


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
