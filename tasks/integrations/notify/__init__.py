"""Notifications: a notice (``notice.py``), its pure formatting into Telegram HTML and e-mail
(``format.py``, ``html.py``), and one client per channel (``telegram.py``, ``smtp.py``) with
their settings, errors and hints.

Knows no Prefect and no SSH. The Blocks are in ``blocks/notify.py``; the fan-out that the flows
call, which never raises, is ``tasks/engine/notify.py``.
"""
