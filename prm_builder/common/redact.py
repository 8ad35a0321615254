"""Keep credentials and local paths out of what leaves the machine: cards, logs and error messages.

Credentials are found by shape, wherever they sit in a text: the userinfo of a URL
(`http://user:password@host`), secret query parameters (`?api_key=...`), well-known token
formats (`hf_...`, `sk-...`, `Bearer ...`) and the value of any environment variable whose
name says it is a secret (`HF_TOKEN`, `OPENAI_API_KEY`, ...). Local paths are shown as
`<local>/NAME` on cards: the last component says what it was, the rest is nobody's business.
"""

import logging
import os
import re
import urllib.parse
from pathlib import Path

REDACTED = "<redacted>"
LOCAL = "<local>"
# Option names, query parameters and environment variables whose values are secrets.
SECRET_NAME = re.compile(
    r"(^|[_-])(api[_-]?key|key|token|secret|password|passwd|pwd|auth|credentials?)$", re.IGNORECASE
)
# (TOKENIZERS_PARALLELISM and friends name tokenizers, not tokens.)
_SECRET_VARIABLE = re.compile(r"^(?!TOKENIZERS_).*(TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
# Environment values shorter than this are too likely to occur by chance ("1", "true").
_MIN_SECRET_LENGTH = 8
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^/\s@'\"<>]+@", re.IGNORECASE)
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&][\w.-]*(?:key|token|secret|password|passwd|sig|signature|auth)[\w.-]*=)[^&#\s'\"<>]+",
    re.IGNORECASE,
)
_TOKEN_SHAPES = re.compile(
    r"\b(?:hf_[A-Za-z0-9]{16,}|sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|xox[abpr]-[A-Za-z0-9-]{10,})"
    r"|(?i:\bbearer\s+)[A-Za-z0-9._~+/-]{8,}=*"
)


def redact(text: str) -> str:
    """`text` with every credential it holds replaced by `<redacted>`."""
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    text = _QUERY_SECRET.sub(lambda m: f"{m['name']}{REDACTED}", text)
    text = _TOKEN_SHAPES.sub(REDACTED, text)
    for value in _secret_environment_values():
        text = text.replace(value, REDACTED)
    return text


def redact_url(url: str) -> str:
    """A server URL as a build names it in messages: user:password and every query value become '***'.

    Stricter than `redact` (which keeps query values that do not look secret): a server URL is known to be
    one, so nothing in its query is shown."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc if "@" not in parts.netloc else "***@" + parts.netloc.rsplit("@", 1)[1]
    query = "&".join(f"{name}=***" for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secret_environment_values() -> list[str]:
    values = {
        value
        for name, value in os.environ.items()
        if _SECRET_VARIABLE.search(name) and len(value) >= _MIN_SECRET_LENGTH
    }
    return sorted(values, key=len, reverse=True)  # a value inside a longer one must not split it


def is_local_path(text: str) -> bool:
    """Does `text` name a file or folder on this machine (rather than a Hub id like `Qwen/Qwen3-8B`)?"""
    if "://" in text or "/" not in text.replace(os.sep, "/"):
        return False  # a URL, or a bare word ("gsm8k", "sample") that says nothing about the machine
    return os.path.isabs(text) or text.startswith(("~", "./", "../")) or os.path.exists(text)


def public_value(value):
    """An option value fit for a public card: local paths as `<local>/NAME`, credentials redacted."""
    if isinstance(value, str):
        return f"{LOCAL}/{Path(value.rstrip('/')).name}" if is_local_path(value) else redact(value)
    if isinstance(value, Path):
        return public_value(str(value))
    if isinstance(value, (list, tuple)):
        return type(value)(public_value(item) for item in value)
    if isinstance(value, dict):
        return {key: public_value(item) for key, item in value.items()}
    return value


def without_credentials(value, name: str = ""):
    """An option value (or a dict of options) fit for a file a command writes on this machine.

    Credentials go as in `redact`, and so does the whole value of an option whose name says it is
    a secret (`api_key=...`); local paths stay (unlike `public_value`): the file is read back on
    this machine, e.g. by prm-train for its model card, which applies `public_value` itself.
    """
    if isinstance(value, dict):
        return {key: without_credentials(item, str(key)) for key, item in value.items()}
    if name and SECRET_NAME.search(name) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (list, tuple)):
        return [without_credentials(item) for item in value]
    return value


class RedactingFilter(logging.Filter):
    """Redacts every record a handler emits (installed on the command line's log handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
