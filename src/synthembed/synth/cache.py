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
    """Append-only JSON lines of raw answers by key; a torn last line (a kill mid-write) is skipped.

    Only an index stays in memory, each key's line offset, not the answers: a paper-scale run journals
    hundreds of thousands of them, and an answer is read back from the file when it is asked for."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._offsets: dict[str, int] = {}
        self._handle = open(self.path, "a+b")  # noqa: SIM115 - held for the run's lifetime; writes go to the end
        self._handle.seek(0)
        offset, line = 0, b"\n"
        for line in self._handle:
            try:
                self._offsets[json.loads(line)["key"]] = offset
            except json.JSONDecodeError:
                pass
            offset += len(line)
        if not line.endswith(b"\n"):
            self._handle.write(b"\n")  # end the torn line so the next entry starts clean

    def get(self, key: str) -> dict[str, Any] | None:
        offset = self._offsets.get(key)
        if offset is None:
            return None
        self._handle.seek(offset)
        return json.loads(self._handle.readline())

    def __contains__(self, key: str) -> bool:
        return key in self._offsets

    def keys(self) -> list[str]:
        return list(self._offsets)

    def append(self, entry: dict[str, Any]) -> None:
        """Make ``entry`` durable before anyone reads it: write, flush, fsync."""
        offset = self._handle.seek(0, os.SEEK_END)
        self._handle.write((json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8"))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._offsets[entry["key"]] = offset

    @property
    def closed(self) -> bool:
        return self._handle.closed

    def close(self) -> None:
        self._handle.close()
