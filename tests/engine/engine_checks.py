"""Checks the engine tests share."""

from __future__ import annotations

from swiftserve import LLM


def all_free(llm: LLM) -> bool:
    """Every KV block back in the pool and no request left: nothing leaked."""
    llm.engine.scheduler.check_integrity()
    stats = llm.engine.stats()
    return stats.num_free_blocks == stats.num_total_blocks and not llm.engine.requests
