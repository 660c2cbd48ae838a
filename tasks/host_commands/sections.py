"""Multi-part answers of one round trip: ``@@homelab:<name>`` sections, and ``@@<tag> <header>``
blocks inside them. The one parser for both."""

from __future__ import annotations

SECTION_MARK = "@@homelab:"


def split_sections(text: str) -> dict[str, str]:
    """``@@homelab:<name>`` lines -> name -> the stripped text up to the next section."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(SECTION_MARK):
            current = sections.setdefault(line[len(SECTION_MARK):].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in sections.items()}


def split_blocks(text: str, *tags: str) -> list[tuple[str, str, str]]:
    """``@@<tag> <header>`` lines, each followed by a body -> (tag, header, body), in order.
    Lines starting with ``@@`` but another tag end the previous block and are skipped."""
    blocks: list[tuple[str, str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("@@"):
            tag, _, header = line[2:].partition(" ")
            if tag in tags:
                blocks.append((tag, header.strip(), []))
                continue
            blocks.append(("", "", []))
        elif blocks:
            blocks[-1][2].append(line)
    return [(tag, header, "\n".join(body)) for tag, header, body in blocks if tag]


# A section whose command failed ends with "@@failed <exit status>" after the command's output.
FAILED_MARK = "@@failed"


def failed(text: str) -> bool:
    return FAILED_MARK in text


def failure_text(text: str) -> str:
    """The command's own output of a failed section, on one line, without the marker."""
    return " ".join(line for line in text.splitlines() if not line.startswith(FAILED_MARK))[:500]
