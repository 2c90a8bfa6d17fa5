"""One OpenAPI document for the public API, merged from the upstreams' own specs.

A path is taken only from the upstream the routing table sends it to (so health, metrics and
any path an upstream serves under another prefix drop out) and never when it is internal.
Components with the same name and the same content are shared; when two upstreams disagree,
each gets its own `<upstream>_<Name>` copy and its references are rewritten. Components no
public path reaches are pruned."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gateway.routing import is_blocked, resolve

Spec = dict[str, Any]
_REF_PREFIX = "#/components/"


def _walk_refs(node: Any, visit: Callable[[str], str | None]) -> None:
    """Call `visit` on every `$ref`; a returned string replaces it."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            ref = current.get("$ref")
            if isinstance(ref, str):
                replacement = visit(ref)
                if replacement is not None:
                    current["$ref"] = replacement
            stack.extend(v for k, v in current.items() if k != "$ref")
        elif isinstance(current, list):
            stack.extend(current)


def _public_paths(spec: Spec, upstream: str, routes: Mapping[str, str]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, item in (spec.get("paths") or {}).items():
        if is_blocked(path):
            continue
        target = resolve(path, routes)
        if target is not None and target.upstream == upstream:
            paths[path] = item
    return paths


def _rename_conflicts(specs: dict[str, Spec]) -> None:
    """Until no two upstreams define one component name differently, rename the disagreeing ones."""
    while True:
        definitions: dict[tuple[str, str], dict[str, str]] = {}
        for upstream, spec in specs.items():
            for section, items in (spec.get("components") or {}).items():
                for name, value in items.items():
                    canonical = json.dumps(value, sort_keys=True)
                    definitions.setdefault((section, name), {})[upstream] = canonical
        renames: dict[str, dict[str, str]] = {}
        for (section, name), by_upstream in definitions.items():
            if len(set(by_upstream.values())) > 1:
                for upstream in by_upstream:
                    old = f"{_REF_PREFIX}{section}/{name}"
                    renames.setdefault(upstream, {})[old] = f"{upstream}_{name}"
        if not renames:
            return
        for upstream, mapping in renames.items():
            spec = specs[upstream]
            components = spec["components"]
            for old, new_name in mapping.items():
                section, name = old[len(_REF_PREFIX) :].split("/", 1)
                components[section][new_name] = components[section].pop(name)
            full = {
                old: f"{_REF_PREFIX}{old[len(_REF_PREFIX) :].split('/', 1)[0]}/{new}"
                for old, new in mapping.items()
            }
            _walk_refs(spec, full.get)


def _prune(merged: Spec) -> None:
    components: dict[str, dict[str, Any]] = merged["components"]
    reached: set[str] = set()
    pending: list[Any] = [merged["paths"]]

    def visit(ref: str) -> None:
        if ref.startswith(_REF_PREFIX) and ref not in reached:
            reached.add(ref)
            section, name = ref[len(_REF_PREFIX) :].split("/", 1)
            target = components.get(section, {}).get(name)
            if target is not None:
                pending.append(target)
        return None

    while pending:
        _walk_refs(pending.pop(), visit)
    for section, items in components.items():
        if section == "securitySchemes":  # referenced by name from `security`, not by $ref
            continue
        for name in [n for n in items if f"{_REF_PREFIX}{section}/{n}" not in reached]:
            del items[name]
    merged["components"] = {k: v for k, v in components.items() if v}


def merge_specs(
    specs: Mapping[str, Spec], routes: Mapping[str, str], *, title: str, version: str
) -> Spec:
    specs_copy = {name: copy.deepcopy(spec) for name, spec in specs.items()}
    for name, spec in specs_copy.items():
        spec["paths"] = _public_paths(spec, name, routes)
    _rename_conflicts(specs_copy)
    merged: Spec = {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "The public API of the shop, merged from its services by the gateway.",
        },
        "paths": {},
        "components": {},
    }
    tags: dict[str, Any] = {}
    for spec in specs_copy.values():
        merged["paths"].update(spec["paths"])
        for section, items in (spec.get("components") or {}).items():
            merged["components"].setdefault(section, {}).update(items)
        for tag in spec.get("tags") or []:
            tags.setdefault(tag["name"], tag)
    _prune(merged)
    if tags:
        merged["tags"] = list(tags.values())
    merged["paths"] = dict(sorted(merged["paths"].items()))
    return merged


Fetch = Callable[[str], Awaitable[Spec | None]]


class MergedSpec:
    """Merged spec cached for `ttl` seconds (a short while only when an upstream was missing)."""

    def __init__(
        self,
        upstreams: list[str],
        routes: Mapping[str, str],
        fetch: Fetch,
        ttl: float,
        version: str,
    ) -> None:
        self.upstreams = upstreams
        self.routes = routes
        self.fetch = fetch
        self.ttl = ttl
        self.version = version
        self._cached: Spec | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> Spec:
        async with self._lock:
            now = time.monotonic()
            if self._cached is not None and now < self._expires:
                return self._cached
            results = await asyncio.gather(*(self.fetch(name) for name in self.upstreams))
            specs = {n: s for n, s in zip(self.upstreams, results, strict=True) if s is not None}
            merged = merge_specs(specs, self.routes, title="shop", version=self.version)
            missing = [n for n, s in zip(self.upstreams, results, strict=True) if s is None]
            if missing:
                merged["info"]["x-missing-upstreams"] = missing
            self._cached = merged
            self._expires = now + (min(self.ttl, 5.0) if missing else self.ttl)
            return merged
