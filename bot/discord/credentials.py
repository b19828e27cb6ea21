"""The bot token: read from DISCORD_TOKEN or the file named by bot.token_file, and kept out of every log line."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from index.config import ConfigError

TOKEN_ENV = "DISCORD_TOKEN"
REDACTED = "[REDACTED]"


def token_configured(cfg: Any, env: Mapping[str, str] | None = None) -> bool:
    """True when a token is set in DISCORD_TOKEN or bot.token_file names a file (read_token reports a bad one)."""
    env = os.environ if env is None else env
    return bool(env.get(TOKEN_ENV, "").strip() or str(cfg.bot.token_file).strip())


def token_path(cfg: Any) -> Path:
    """bot.token_file resolved against the config file's folder."""
    return (Path(cfg.base_dir) / Path(cfg.bot.token_file).expanduser()).resolve()


def read_token(cfg: Any, env: Mapping[str, str] | None = None) -> str:
    """The bot token from DISCORD_TOKEN, else from bot.token_file; ConfigError naming the key if neither gives one."""
    env = os.environ if env is None else env
    token = env.get(TOKEN_ENV, "").strip()
    if token:
        return token
    name = str(cfg.bot.token_file).strip()
    if not name:
        raise ConfigError(f"config: no Discord token: set {TOKEN_ENV} or bot.token_file (a file holding the token)")
    path = token_path(cfg)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config: bot.token_file = {name!r}: cannot read {path} ({exc.__class__.__name__}); "
                          "expected a file holding the bot token") from None
    if not token or len(token.split()) != 1:
        raise ConfigError(f"config: bot.token_file = {name!r}: {path} does not hold a token; "
                          "expected one line with the bot token")
    return token


class RedactSecrets(logging.Filter):
    """A logging filter that replaces each secret in a record's message, arguments and traceback with [REDACTED]."""

    def __init__(self, secrets: Iterable[str]):
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def _clean(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place; never drops it."""
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is left to the handler to report
            return True
        clean = self._clean(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        if record.stack_info:
            record.stack_info = self._clean(record.stack_info)
        return True


def install_redaction(token: str, logger_names: Iterable[str] = ("", "discord", "citebot")) -> RedactSecrets:
    """Add a RedactSecrets filter for `token` to every handler of the root, discord and citebot loggers."""
    redact = RedactSecrets([token])
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactSecrets) and token in f.secrets for f in handler.filters):
                handler.addFilter(redact)
    return redact
