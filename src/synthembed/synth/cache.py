"""Durable storage of LLM answers: LiteLLM's response cache on disk, and the raw-response journal.

The cache (a LiteLLM ``BaseCache`` over ``diskcache``) serves any identical request again, across runs and
stages. LiteLLM writes it from a background task after the call returns, so a run killed at that moment could
lose an answer it paid for; the journal closes that gap: every raw answer is appended, flushed and fsynced
before it is parsed, and a restarted run takes answers from the journal before it asks anyone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import diskcache
from litellm.caching.base_cache import BaseCache


class DiskResponseCache(BaseCache):
    """LiteLLM cache backend persisted with ``diskcache`` (SQLite), shared by every process using it."""

    def __init__(self, directory: str | Path):
        super().__init__(default_ttl=0)
        self._store = diskcache.Cache(str(directory), size_limit=2**40)

    def set_cache(self, key: str, value: Any, **kwargs: Any) -> None:
        self._store.set(key, value)

    async def async_set_cache(self, key: str, value: Any, **kwargs: Any) -> None:
        self.set_cache(key, value)

    async def async_set_cache_pipeline(self, cache_list: list[tuple[str, Any]], **kwargs: Any) -> None:
        for key, value in cache_list:
            self.set_cache(key, value)

    def get_cache(self, key: str, **kwargs: Any) -> Any:
        return self._store.get(key)

    async def async_get_cache(self, key: str, **kwargs: Any) -> Any:
        return self.get_cache(key)

    async def batch_cache_write(self, key: str, value: Any, **kwargs: Any) -> None:
        self.set_cache(key, value)

    async def disconnect(self) -> None:
        self.close()

    def close(self) -> None:
        self._store.close()

    def flush_cache(self) -> None:
        self._store.clear()

    def __len__(self) -> int:
        return len(self._store)


class Journal:
    """Append-only JSON lines of raw answers by key; a torn last line (a kill mid-write) is skipped."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self.entries[entry["key"]] = entry
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held for the run's lifetime
        if self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n"):
            self._handle.write("\n")  # end the torn line so the next entry starts clean

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def append(self, entry: dict[str, Any]) -> None:
        """Make ``entry`` durable before anyone reads it: write, flush, fsync."""
        self._handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.entries[entry["key"]] = entry

    @property
    def closed(self) -> bool:
        return self._handle.closed

    def close(self) -> None:
        self._handle.close()
