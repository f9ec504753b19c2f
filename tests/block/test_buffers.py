"""Read buffers, reused by size class within a budget."""

from __future__ import annotations

from iscsifs.block.buffers import BufferPool


def test_buffer_pool_reuses_by_size_class_within_its_budget():
    pool = BufferPool(keep_bytes=8192)
    a = pool.take(100)
    assert len(a) == 4096
    pool.give(a)
    assert pool.take(4000) is a  # reused, no new allocation
    b, c = pool.take(5000), pool.take(5000)
    assert len(b) == len(c) == 8192
    pool.give(b)
    pool.give(c)  # over the budget: dropped
    assert pool.take(8192) is b and pool.take(8192) is not c
