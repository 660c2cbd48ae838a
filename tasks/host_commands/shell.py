"""Small named pieces of POSIX sh, and ``script`` to compose them (Kamal's ``combine``).

A piece is a shell function; a script names the pieces it uses and gets exactly their
definitions in front of its body. Pieces take their operands as arguments (never spliced into
the text), so quoting stays with ``shlex.join`` in the transport.
"""

from __future__ import annotations

from tasks.host_commands.layout import LOCK, LOCK_OWNER, LOCK_OWNER_HELD

PIECES = {
    # write_atomic FILE VALUE: FILE holds VALUE and a newline, replaced by rename
    "write_atomic": 'write_atomic() { printf \'%s\\n\' "$2" > "$1.tmp" && mv -f -- "$1.tmp" "$1"; }',
    # take_lock STATE OWNER_JSON: the deploy lock is an atomic mkdir; prints @@acquired when taken.
    # Fails (1) when another run holds it; a lock whose owner file cannot be written is removed.
    "take_lock": (f'take_lock() {{ mkdir "$1/{LOCK}" 2>/dev/null || return 1; '
                  f'{{ printf \'%s\\n\' "$2" > "$1/{LOCK_OWNER}" && echo @@acquired; }} || rm -rf -- "$1/{LOCK}"; }}'),
    # lock_owner STATE: the owner JSON of the host's deploy lock, nothing if it is free
    "lock_owner": f'lock_owner() {{ cat "$1/{LOCK_OWNER}" 2>/dev/null; }}',
    # file_digest FILE: FILE's sha256, or "none" when there is no such file
    "file_digest": ('file_digest() { [ -f "$1" ] || { echo none; return 0; }; '
                    'd=$(sha256sum < "$1") || return 1; echo "${d%% *}"; }'),
    # unlock_if STATE DIGEST: remove the deploy lock only if its owner file still has DIGEST.
    # The owner file is first moved aside (a rename): while it is away the lock dir stays, so no
    # run can take the lock, and none can release or break it (both check the owner file). Then
    # the file held is compared and the lock removed, or the file put back. Prints @@removed,
    # @@free, or @@changed DIGEST_FOUND (returns 3).
    "unlock_if": (
        f'unlock_if() {{ [ -d "$1/{LOCK}" ] || {{ echo @@free; return 0; }}; held="$1/{LOCK_OWNER_HELD}.$$"; '
        f'if mv -- "$1/{LOCK_OWNER}" "$held" 2>/dev/null; then got=$(file_digest "$held"); '
        f'else [ -d "$1/{LOCK}" ] || {{ echo @@free; return 0; }}; got=none; fi; '
        f'if [ "$got" = "$2" ]; then rm -rf -- "$1/{LOCK}" && echo @@removed; return; fi; '
        f'[ "$got" = none ] || mv -- "$held" "$1/{LOCK_OWNER}" || return 1; '
        f'echo "@@changed $got"; return 3; }}'),
    # section NAME: a tagged section header of a multi-part answer (see sections.py)
    "section": "section() { printf '\\n%s%s\\n' '@@homelab:' \"$1\"; }",
}


def script(body: str, *uses: str) -> str:
    """``body`` preceded by the definitions of the pieces it ``uses``."""
    return "\n".join([*(PIECES[name] for name in uses), body.strip("\n")]) + "\n"


def sh(script_text: str, name: str, *operands: str) -> list[str]:
    """argv that runs ``script_text`` with ``$0`` = ``name`` (how logs show it) and the operands."""
    return ["sh", "-c", script_text, name, *operands]
