"""The BPE merge loop: turn the bytes of one pre-token into vocabulary tokens.

Start from single bytes. Repeatedly look at every pair of neighbouring parts; among the
pairs whose concatenation is a learned merge, merge the one with the lowest rank (the
earliest learned), the leftmost one if the same rank occurs twice. Stop when no
neighbouring pair is a merge. This is tiktoken's rule: it looks up the *concatenated
bytes* in ``ranks`` (bytes of a merged token -> the index of the merge that made it).

Two implementations with identical results:

- ``merge_short``: the classic loop, rescanning all pairs after each merge. O(n^2) for n
  bytes, but the fastest in Python for ordinary words (a few bytes).
- ``merge_long``: a doubly linked list of parts plus a heap of candidate pairs keyed by
  (rank, start offset), so that each merge costs O(log n). Entries made stale by a merge
  are skipped when popped. Used for long pieces such as a million repeated characters.
"""

import heapq

# Pieces longer than this (in bytes) go to the heap version.
LONG_PIECE = 64
_NO_MERGE = 1 << 62  # rank of a pair that is not a merge: larger than any real rank
_SINGLE_BYTES = [bytes([b]) for b in range(256)]
_GONE = -1  # end offset of a part that was absorbed by its left neighbour


def bpe_merge(piece: bytes, ranks: dict[bytes, int]) -> list[bytes]:
    """Split ``piece`` into the byte strings of its BPE tokens (see the module docstring)."""
    return merge_long(piece, ranks) if len(piece) > LONG_PIECE else merge_short(piece, ranks)


def merge_short(piece: bytes, ranks: dict[bytes, int]) -> list[bytes]:
    parts = [_SINGLE_BYTES[b] for b in piece]
    while len(parts) > 1:
        pair_ranks = [ranks.get(a + b, _NO_MERGE) for a, b in zip(parts, parts[1:])]
        best = min(pair_ranks)
        if best == _NO_MERGE:
            break
        i = pair_ranks.index(best)  # the leftmost pair of that rank
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


def merge_long(piece: bytes, ranks: dict[bytes, int]) -> list[bytes]:
    n = len(piece)
    # Each part is named by its start offset s and covers piece[s:end[s]]. prev[s] is the
    # start of the part to its left (-1 for none). rank[s] is the rank of the pair
    # (part s, the part right of it).
    end = list(range(1, n + 1))
    prev = list(range(-1, n - 1))
    rank = [ranks.get(piece[s : s + 2], _NO_MERGE) for s in range(n - 1)] + [_NO_MERGE]
    heap = [(r, s) for s, r in enumerate(rank) if r != _NO_MERGE]
    heapq.heapify(heap)

    def pair_rank(s: int) -> int:
        right = end[s]
        return ranks.get(piece[s : end[right]], _NO_MERGE) if right < n else _NO_MERGE

    while heap:
        r, s = heapq.heappop(heap)
        if end[s] == _GONE or rank[s] != r:
            continue  # stale: this part was absorbed, or its right neighbour changed
        right = end[s]
        end[s] = end[right]  # part s absorbs its right neighbour
        end[right] = _GONE
        if end[s] < n:
            prev[end[s]] = s
        for t in (s, prev[s]):  # the two pairs that changed: (s, next) and (prev, s)
            if t >= 0:
                rank[t] = pair_rank(t)
                if rank[t] != _NO_MERGE:
                    heapq.heappush(heap, (rank[t], t))

    parts, s = [], 0
    while s < n:
        parts.append(piece[s : end[s]])
        s = end[s]
    return parts
