"""What went wrong with a notification, and what to do next: pure functions of Telegram's error
code and description, and of the SMTP reply. The server's text is shown only after masking."""

from __future__ import annotations

from tasks.integrations.notify.settings import SMTP_BLOCK, TELEGRAM_BLOCK
from tasks.integrations.tls import untrusted_hint

TOKEN_SETTING = f"TELEGRAM_BOT_TOKEN (or the token in the '{TELEGRAM_BLOCK}' block)"
CHAT_SETTING = f"TELEGRAM_CHAT_ID (or chat_id in the '{TELEGRAM_BLOCK}' block)"


def telegram_explain(code: int | None, description: str, chat_id: str) -> tuple[str, str]:
    """(cause, hint) for a Bot API error answer ``{"ok": false, "error_code": ..., "description": ...}``."""
    low = description.lower()
    said = f": {description}" if description else ""
    if code == 401:
        return ("the bot token was refused (401 Unauthorized)",
                f"{TOKEN_SETTING} is wrong or was revoked: get the current token from @BotFather (/token)")
    if code == 404:
        return ("the Bot API answered 404 Not Found",
                f"the token is malformed or TELEGRAM_API_URL does not point at a Bot API server; check {TOKEN_SETTING}")
    if code == 400 and "chat not found" in low:
        return (f"chat {chat_id} was not found (400)",
                f"check {CHAT_SETTING}; a user must first send /start to the bot, and the bot must be a member "
                "of a group or channel")
    if code == 400 and "can't parse entities" in low:
        return (f"Telegram could not parse the message's HTML (400{said})",
                "this is a bug in the notification formatting; please report it with the notice")
    if code == 400 and ("text is too long" in low or "message is too long" in low or "text is empty" in low):
        return (f"Telegram refused the message's length (400{said})",
                "this is a bug in the notification trimming; please report it")
    if code == 403:
        return (f"the bot may not post to chat {chat_id} (403{said})",
                "unblock the bot, add it back to the group, or make it an admin that may post in the channel")
    if code == 429:
        return (f"rate limited by Telegram (429{said})", "too many messages at once: wait, then retry")
    if code is not None and code >= 500:
        return (f"the Bot API failed to serve the request ({code}{said})", "Telegram has trouble; retry later")
    return (f"Telegram refused the message ({code or 'error'}{said})", f"check {CHAT_SETTING} and {TOKEN_SETTING}")


def telegram_reach_hint(api_url: str) -> str:
    return (f"check that {api_url} is reachable from here (DNS, firewall, proxy) or set TELEGRAM_API_URL, "
            "then retry")


def telegram_tls_hint(api_url: str, ca_file: str | None) -> str:
    return untrusted_hint(api_url, ca_file, ca_setting=f"TELEGRAM_CA_FILE (or ca_file in the '{TELEGRAM_BLOCK}' "
                                                       "block)", which_ca="the CA of the Bot API server",
                          plain_tls=False)


def smtp_tls_hint(server: str, ca_file: str | None) -> str:
    return untrusted_hint(server, ca_file, ca_setting=f"SMTP_CA_FILE (or ca_file in the '{SMTP_BLOCK}' block)",
                          which_ca="the CA that signed the mail server's certificate", plain_tls=False)


def smtp_security_hint(security: str, port: int) -> str:
    """When the TLS handshake itself fails: most often the mode does not match the port."""
    if security == "tls":
        return (f"port {port} may not speak TLS from the first byte: use SMTP_SECURITY=starttls for port 587 "
                "(or 25), tls for port 465")
    return "the server's TLS does not work with this client: check its certificate and TLS versions"


def smtp_login_hint(username: str) -> str:
    return (f"the server refused user {username!r}: check SMTP_USERNAME and SMTP_PASSWORD (or the '{SMTP_BLOCK}' "
            "block); many providers need an app password, not the account password")


def smtp_reach_hint(server: str) -> str:
    return (f"check that the mail server runs at {server} (SMTP_HOST, SMTP_PORT) and that the network allows it, "
            "then retry")
