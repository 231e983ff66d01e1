"""Credentials out of everything Stratos shows or stores: URLs, error messages, logs, reports, records.

    redact_url("http://user:pw@host/v1?api-key=k&n=1")  -> "http://***@host/v1?api-key=***&n=1"
    redact_text("teacher at http://u:pw@h/v1 failed; key sk-...")  -> URLs redacted, known keys -> ***

A URL loses its userinfo and the values of key-like query (and fragment) parameters. Free text loses the
URLs inside it, `Bearer` tokens, and every known secret value: the keys configured in the environment
(OPENAI_API_KEY, VLLM_API_KEY, STRATOS_*KEY*, ...; the password and key-like query values of
OPENAI_BASE_URL) plus any registered at run time (`register_secret`: a key given as `--api-key`).
Applied at the sinks (tool errors, agent.log, events, report, doctor, deployment records, the CLI's error
line), so a message built anywhere is safe once it is shown or stored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

MASK = "***"
# Query parameter names whose values are credentials (compared lower-case, '-' read as '_').
SECRET_PARAMS = frozenset({
    "api_key", "apikey", "key", "token", "access_token", "refresh_token", "id_token", "auth", "authorization",
    "secret", "client_secret", "password", "passwd", "pwd", "sig", "signature", "x_api_key", "credential",
    "credentials", "session", "sessionid", "code",
})
_SECRET_SUFFIXES = ("_key", "_token", "_secret", "_password", "_sig", "_signature")
# Environment variables that hold secrets by name (plus any name containing one of these words).
SECRET_ENV = ("OPENAI_API_KEY", "VLLM_API_KEY", "STRATOS_API_KEY", "STRATOS_SERVE_API_KEY", "HF_TOKEN",
              "HUGGING_FACE_HUB_TOKEN")
_SECRET_ENV_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
_URL_ENV = ("OPENAI_BASE_URL",)
_MIN_SECRET_LEN = 8  # a shorter value ("EMPTY", "1") would mangle ordinary words; keys are longer
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`]+")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s'\",]+")
_registered: set[str] = set()
T = TypeVar("T")


def is_secret_param(name: str) -> bool:
    norm = name.strip().lower().replace("-", "_")
    return norm in SECRET_PARAMS or norm.endswith(_SECRET_SUFFIXES)


def _redact_pairs(text: str) -> str:
    """`a=1&api-key=x` -> `a=1&api-key=***` (text that is not name=value pairs comes back unchanged)."""
    if "=" not in text:
        return text
    pairs = parse_qsl(text, keep_blank_values=True)
    if not any(is_secret_param(name) for name, _ in pairs):
        return text
    return "&".join(f"{quote(name, safe='-_.~')}={MASK if is_secret_param(name) else quote(value, safe='-_.~/:')}"
                    for name, value in pairs)


def redact_url(url: str) -> str:
    """The URL without userinfo and with key-like query/fragment values masked; unchanged when clean."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced '[' in the host: not a URL we can take apart, so hide all of it
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query, fragment = _redact_pairs(parts.query), _redact_pairs(parts.fragment)
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def url_secrets(url: str) -> list[str]:
    """The credential values inside a URL: its password (and user) and key-like query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    values = [parts.password or "", parts.username or ""] if "@" in parts.netloc else []
    for text in (parts.query, parts.fragment):
        values += [v for k, v in parse_qsl(text, keep_blank_values=True) if is_secret_param(k)]
    return [v for v in values if v]


def register_secret(value: str | None) -> None:
    """Redact `value` from now on in this process (a key that came from a flag or a file, not the env)."""
    if value and len(value) >= _MIN_SECRET_LEN:
        _registered.add(value)


def known_secrets(environ: dict[str, str] | None = None) -> set[str]:
    """Secret values this process knows: keys in the environment, credentials in endpoint URLs, registered."""
    env = os.environ if environ is None else environ
    found = set(_registered)
    for name, value in env.items():
        if name in SECRET_ENV or (name.startswith("STRATOS_") and any(w in name for w in _SECRET_ENV_WORDS)):
            found.add(value)
    for name in _URL_ENV:
        found.update(url_secrets(env.get(name, "")))
    return {v for v in found if len(v) >= _MIN_SECRET_LEN}


def redact_text(text: str, secrets: Iterable[str] | None = None) -> str:
    """`text` with every URL redacted, `Bearer` tokens masked and known secret values replaced by ***."""
    if not text:
        return text
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    for secret in sorted(known_secrets() if secrets is None else set(secrets), key=len, reverse=True):
        text = text.replace(secret, MASK)  # longest first: a key that contains another is masked whole
    return text


def redact_value(value: T) -> T:
    """Strings inside dicts/lists/tuples redacted (for event details and other JSON-like records)."""
    out: Any = value
    if isinstance(value, str):
        out = redact_text(value)
    elif isinstance(value, dict):
        out = {k: redact_value(v) for k, v in value.items()}
    elif isinstance(value, (list, tuple)):
        out = type(value)(redact_value(v) for v in value)
    return out
