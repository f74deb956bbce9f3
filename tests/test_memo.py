"""``state.memo.BoundedMemo``: the process-local memo behind the request path's caches."""

from __future__ import annotations

from statsapi.state.memo import BoundedMemo


def test_a_memo_keeps_at_most_its_size_dropping_the_oldest() -> None:
    memo: BoundedMemo[int, str | None] = BoundedMemo(3)
    for n in range(5):
        memo.put(n, f"v{n}")
    assert [n in memo for n in range(5)] == [False, False, True, True, True]
    assert memo.get(4) == "v4" and memo.get(0) is None


def test_a_kept_none_is_told_apart_from_a_miss() -> None:
    memo: BoundedMemo[str, int | None] = BoundedMemo()
    memo.put("no key", None)
    assert "no key" in memo and "other" not in memo
    assert memo.get("other", -1) == -1
    memo.clear()
    assert "no key" not in memo
