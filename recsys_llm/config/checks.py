"""The generic checks every config section runs: declared types, choices, ranges, and no secrets.

One function, :func:`check_fields`, checks every field of a section dataclass against its annotation
(read with :func:`typing.get_type_hints`, so a new field is checked the moment it is declared) and against the
``choices`` in its metadata; the section's own range checks run after it and never see a wrong type.
:class:`ConfigError` masks passwords and tokens in every message, so no error echoes a secret.

Example:
    >>> type_problem(2.5, int)
    'got a float (integers only)'
    >>> type_problem([10, 20], list[int]) is None
    True
    >>> mask_secrets("http://user:hunter2@milvus:19530?token=abc")
    'http://user:***@milvus:19530?token=***'
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import types
import typing
from collections.abc import Iterator
from typing import Any, Union
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

MILVUS_TOKEN_ENV = "RECSYS_LLM_MILVUS_TOKEN"
"""Where the Milvus token belongs; the same name as ``recsys_llm.index.milvus_index.TOKEN_ENV`` (a test keeps
them equal: config imports nothing from the stages above it)."""

SECRET_QUERY_KEYS = ("token", "password", "passwd", "pwd", "secret", "api_key", "apikey", "access_token")
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)"
                       r"(?P<user>[^/\s:@'\"]*)(?P<password>:[^/\s@'\"]*)?@")
_KEYS = "|".join(SECRET_QUERY_KEYS)
_SECRET_PARAM = re.compile(rf"(?P<key>[?&;](?:{_KEYS})=)[^&;#\s'\"]*", re.IGNORECASE)
_NONE = type(None)


def mask_secrets(text: str) -> str:
    """``text`` with each ``scheme://user:password@`` password and ``token=...`` value replaced by ***."""
    text = _USERINFO.sub(lambda m: m["scheme"] + (f"{m['user']}:***@" if m["password"] else "***@"), text)
    return _SECRET_PARAM.sub(lambda m: m["key"] + "***", text)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and how to fix it (secrets masked)."""

    def __init__(self, message: str) -> None:
        super().__init__(mask_secrets(str(message)))


def show(value: Any) -> str:
    """A value as the user wrote it: JSON for JSON values (``"abc"``, ``true``, ``null``), else ``repr``."""
    if isinstance(value, str | int | float | bool | list | dict | _NONE):
        try:
            return json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            pass
    return repr(value)


def kind(value: Any) -> str:
    """What a value is, in words: ``a string``, ``an integer``, ``null``, ``PosixPath``, ..."""
    words = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "a list",
             dict: "an object", _NONE: "null"}
    return words.get(type(value), type(value).__name__)


def check(cond: bool, section: str, name: str, value: Any, what: str) -> None:
    """Raise :class:`ConfigError` ``section.name=value is invalid: what`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"{section}.{name}={show(value)} is invalid: {what}")


def _scalar_problem(value: Any, tp: type) -> str | None:
    if tp is bool:
        return None if isinstance(value, bool) else f"got {kind(value)} (write true or false)"
    if isinstance(value, bool) and tp in (int, float):
        return f"got a boolean (booleans are not {'integers' if tp is int else 'numbers'})"
    if tp is int and isinstance(value, float):
        if value.is_integer():
            return f"got a float (integers only, without a decimal point: write {int(value)})"
        return "got a float (integers only)"
    ok = isinstance(value, int | float) if tp is float else isinstance(value, tp)
    return None if ok else f"got {kind(value)}"


def type_problem(value: Any, tp: Any) -> str | None:
    """Why ``value`` does not fit the annotation ``tp`` (``"got a string"``), or None when it fits.

    Booleans are not integers, floats are not integers (not even 3.0), integers are fine for floats, a
    scalar is not a list (list elements are checked one by one), and None fits only ``X | None``.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None:
            return None if _NONE in args else "got null (this field cannot be null)"
        problems = [type_problem(value, a) for a in args if a is not _NONE]
        return None if None in problems else problems[0]
    if value is None:
        return "got null (this field cannot be null)"
    if origin is list:
        if not isinstance(value, list):
            return f"got {kind(value)} (a list is needed, even for one value)"
        for i, item in enumerate(value):
            problem = type_problem(item, args[0])
            if problem:
                return f"element {i} is {show(item)}: {problem}"
        return None
    if isinstance(tp, type) and origin is None:
        return _scalar_problem(value, tp)
    raise TypeError(f"unsupported annotation {tp!r}: teach recsys_llm.config.checks.type_problem about it")


_FIELD_TYPES: dict[type, dict[str, Any]] = {}


def field_types(cls: type) -> dict[str, Any]:
    """``{field name: resolved annotation}`` of a config dataclass (cached per class)."""
    if cls not in _FIELD_TYPES:
        hints = typing.get_type_hints(cls)
        _FIELD_TYPES[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    return _FIELD_TYPES[cls]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def _example_values(f: dataclasses.Field, value: Any) -> Iterator[Any]:
    """Candidate fixes, best first: the value itself parsed or wrapped, the field's example, its default."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        yield parsed
    if isinstance(value, float) and value.is_integer():
        yield int(value)
    if not isinstance(value, list):
        yield [value]
    yield f.metadata.get("example")
    yield _default(f)


def set_example(key: str, value: Any) -> str:
    """``--set key=value`` as typed in a shell (quoted where needed); TypeError for what JSON cannot write."""
    text = value if isinstance(value, str) else json.dumps(value)
    return f"--set {shlex.quote(f'{key}={text}')}"


def example(key: str, f: dataclasses.Field, tp: Any, value: Any) -> str | None:
    """A ``--set`` that fits the field, derived from the wrong value where possible; None if none is found."""
    for candidate in _example_values(f, value):
        if candidate in (None, [], "") or type_problem(candidate, tp) is not None:
            continue
        try:
            return set_example(key, candidate)
        except TypeError:  # a whole section (PipelineConfig's fields): no one-line example
            continue
    return None


def check_fields(obj: Any, section: str) -> None:
    """Check every field of a config dataclass against its declared type, then against its ``choices``.

    Raises:
        ConfigError: naming ``section.field``, the value, the declared type and a ``--set`` that fits.
    """
    types_ = field_types(type(obj))
    for f in dataclasses.fields(obj):
        value, tp = getattr(obj, f.name), types_[f.name]
        key = f"{section}.{f.name}" if section else f.name
        problem = type_problem(value, tp)
        if problem:
            declared = f.type if isinstance(f.type, str) else getattr(tp, "__name__", str(tp))
            hint = example(key, f, tp, value)
            raise ConfigError(f"{key}={show(value)} has the wrong type: expected {declared}, {problem}"
                              + (f"; e.g. {hint}" if hint else ""))
        choices = f.metadata.get("choices")
        if choices is not None:
            check(value in choices, section, f.name, value, f"choose one of {', '.join(choices)}")


def credentials_in_uri(uri: str) -> str | None:
    """What secret ``uri`` carries (``"a user:password@ part"``, ``"a token= parameter"``), or None."""
    try:
        parsed = urlparse(uri)
        if parsed.username is not None or parsed.password is not None:
            return "credentials (a user:password@ part)"
        keys = [k for k, _ in parse_qsl(parsed.query, keep_blank_values=True)
                if k.lower() in SECRET_QUERY_KEYS]
    except ValueError:  # not a URL at all (e.g. an unclosed IPv6 bracket): nothing to leak, Milvus rejects it
        return None
    return f"a {keys[0]}= parameter" if keys else None


def without_credentials(uri: str) -> str:
    """``uri`` with its user:password@ part and secret query parameters removed."""
    parsed = urlparse(uri)
    netloc = parsed.netloc.rpartition("@")[2]
    query = [(k, v) for k, v in parse_qsl(parsed.query, keep_blank_values=True)
             if k.lower() not in SECRET_QUERY_KEYS]
    return urlunparse(parsed._replace(netloc=netloc, query=urlencode(query)))
