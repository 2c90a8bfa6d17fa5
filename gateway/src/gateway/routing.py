"""Path normalisation and the routing table: which upstream serves a request, if any.

The check is done on a fully decoded, dot-resolved form of the path, so `/%69nternal`,
`//internal`, `/orders/../internal` and `/INTERNAL` are all seen as `/internal`. What is
forwarded is the dot-resolved raw path (percent-encoding kept as sent), i.e. exactly the
resource that was checked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

BLOCKED_SEGMENT = "internal"
_MAX_DECODE_ROUNDS = 4
_DOT_SEGMENTS = frozenset({".", ".."})


@dataclass(frozen=True, slots=True)
class Target:
    prefix: str  # first segment, decoded: the key of the routing table
    upstream: str
    path: str  # raw (still percent-encoded) path to send upstream


def _fully_decoded(raw: str) -> str:
    """Decode until stable, so double encoding (`%2569`) cannot hide a segment."""
    for _ in range(_MAX_DECODE_ROUNDS):
        decoded = unquote(raw, errors="replace")
        if decoded == raw:
            break
        raw = decoded
    return raw.replace("\\", "/")


def _resolve_dots(segments: list[str], is_dot: list[bool]) -> list[int]:
    """Indices of the segments that survive RFC 3986 dot-segment removal (empty ones dropped)."""
    kept: list[int] = []
    for index, segment in enumerate(segments):
        if is_dot[index]:
            if segments[index] == ".." and kept:
                kept.pop()
        elif segment:
            kept.append(index)
    return kept


def _canonical(segment: str) -> str:
    return segment.split(";", 1)[0].strip().lower()


def is_blocked(raw_path: str) -> bool:
    """True when any segment of the normalised path is `internal`, whatever its case or encoding."""
    segments = _fully_decoded(raw_path).split("/")
    dots = [segment.strip() in _DOT_SEGMENTS for segment in segments]
    cleaned = [segment.strip() for segment in segments]
    return any(_canonical(cleaned[i]) == BLOCKED_SEGMENT for i in _resolve_dots(cleaned, dots))


def normalise(raw_path: str) -> str:
    """Collapse `//` and resolve dot segments (also `%2e`-encoded ones), keeping encoding otherwise."""
    segments = raw_path.split("/")
    dots = [unquote(segment) in _DOT_SEGMENTS for segment in segments]
    kept = _resolve_dots(segments, dots)
    path = "/" + "/".join(segments[i] for i in kept)
    ends_in_directory = raw_path.endswith("/") or (bool(segments) and dots[-1])
    if ends_in_directory and path != "/":
        path += "/"
    return path


def _is_plain(raw_path: str) -> bool:
    return (
        raw_path.startswith("/")
        and "%" not in raw_path
        and "//" not in raw_path
        and "/." not in raw_path
        and "\\" not in raw_path
        and BLOCKED_SEGMENT not in raw_path.lower()
    )


def resolve(raw_path: str, routes: Mapping[str, str]) -> Target | None:
    """The upstream and forward path for a request path, or None (answered 404 by the gateway)."""
    if _is_plain(raw_path):  # the common case: nothing to decode or resolve
        path = raw_path
    else:
        if is_blocked(raw_path):
            return None
        path = normalise(raw_path)
    end = path.find("/", 1)
    first = path[1:] if end == -1 else path[1:end]
    prefix = unquote(first)
    upstream = routes.get(prefix)
    if upstream is None:
        return None
    return Target(prefix, upstream, path)
