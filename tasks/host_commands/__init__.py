"""Host commands: pure argv builders, each next to the parser of its output.

Nothing here opens a connection or imports Prefect. The host-side file layout is written out
in ``layout.py`` only; inline ``sh -c`` scripts (used where one round trip or atomicity needs
them) are composed from the named pieces in ``shell.py``.
"""
