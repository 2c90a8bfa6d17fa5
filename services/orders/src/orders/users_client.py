"""Username look-ups in the users service, for the top-spenders report. Best effort by design:
when users is down or slow the report degrades to bare user ids."""

from __future__ import annotations

import logging
from collections.abc import Collection

import httpx

from shop_common.middleware import propagation_headers

log = logging.getLogger("orders.users")


class UsersClient:
    def __init__(
        self, client: httpx.Client, *, base_url: str, service_token: str, timeout_seconds: float
    ) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._token = service_token
        self._timeout = timeout_seconds

    def usernames(self, user_ids: Collection[int]) -> dict[int, str]:
        """One batch call for every id; {} when users cannot answer."""
        if not user_ids:
            return {}
        try:
            response = self._client.get(
                f"{self._base}/internal/users",
                params={"ids": ",".join(str(i) for i in sorted(user_ids))},
                headers={"X-Service-Token": self._token, **propagation_headers()},
                timeout=self._timeout,
            )
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("users lookup failed, answering ids only: %s", exc)
            return {}
        rows = data.get("items", []) if isinstance(data, dict) else data
        names: dict[int, str] = {}
        for row in rows if isinstance(rows, list) else []:
            if (
                isinstance(row, dict)
                and isinstance(row.get("id"), int)
                and isinstance(row.get("username"), str)
            ):
                names[row["id"]] = row["username"]
        return names
