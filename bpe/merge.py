"""The BPE merge loop: turn the bytes of one pre-token into vocabulary tokens.

Start from single bytes. Repeatedly look at every pair of neighbouring parts; among the
pairs whose concatenation is a learned merge, merge the one with the lowest rank (the
earliest learned), the leftmost one if the same rank occurs twice. Stop when no
neighbouring pair is a merge. This is tiktoken's rule: it looks up the *concatenated
bytes* in ``ranks`` (bytes of a merged token -> the index of the merge that made it).

Two implementations with identical results:

- ``merge_short``: the classic loop (as in tiktoken): a list of pair ranks, the minimum
  found by a scan after each merge. O(n^2) for n bytes, but the fastest in Python for
  ordinary words (a few bytes).
- ``merge_long``: a doubly linked list of parts plus a heap of candidate pairs keyed by
  (rank, start offset), so that each merge costs O(log n). Entries made stale by a merge
  are skipped when popped. Used for long pieces such as a million repeated characters.
"""

import heapq

# Pieces longer than this (in bytes) go to the heap version.
LONG_PIECE = 64
_NO_MERGE = 1 << 62  # rank of a pair that is not a merge: larger than any real rank
_SINGLE_BYTES = [bytes([b]) for b in range(256)]
_GONE = -1  # rank of a part that was absorbed by its left neighbour


def bpe_merge(piece: bytes, ranks: dict[bytes, int]) -> list[bytes]:
    """Split ``piece`` into the byte strings of its BPE tokens (see the module docstring)."""
    return merge_long(piece, ranks) if len(piece) > LONG_PIECE else merge_short(piece, ranks)


def merge_short(piece: bytes, ranks: dict[bytes, int]) -> list[bytes]:
    parts = [_SINGLE_BYTES[b] for b in piece]
    get = ranks.get
    # pair_ranks[i] is the rank of (parts[i], parts[i + 1]); after a merge at i only the
    # pairs either side of the new part change.
    pair_ranks = [get(a + b, _NO_MERGE) for a, b in zip(parts, parts[1:])]
    while pair_ranks:
        best = min(pair_ranks)
        if best == _NO_MERGE:
            break
        i = pair_ranks.index(best)  # the leftmost pair of that rank
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
        del pair_ranks[i]
        if i > 0:
            pair_ranks[i - 1] = get(parts[i - 1] + parts[i], _NO_MERGE)
        if i < len(pair_ranks):
            pair_ranks[i] = get(parts[i] + parts[i + 1], _NO_MERGE)
    return parts


def merge_long(piece: bytes, ranks: dict[bytes, int]) -> list[bytes]:
    n = len(piece)
    get = ranks.get
    # Each part is named by its start offset s and covers piece[s:end[s]]; prev[s] is the
    # start of the part to its left (-1 for none). rank[s] is the rank of the pair (part s,
    # the part after it), or _GONE once part s has been absorbed by its left neighbour.
    end = list(range(1, n + 1))
    prev = list(range(-1, n - 1))
    rank = [get(piece[s : s + 2], _NO_MERGE) for s in range(n - 1)] + [_NO_MERGE]
    # Heap entries pack (rank, start) into one int, rank << 32 | start: ordered the same
    # as the tuples, and faster to compare.
    heap = [r << 32 | s for s, r in enumerate(rank) if r != _NO_MERGE]
    heapq.heapify(heap)
    while heap:
        entry = heapq.heappop(heap)
        s = entry & 0xFFFFFFFF
        if rank[s] != entry >> 32:
            continue  # stale: part s was absorbed, or its right neighbour changed
        right = end[s]
        e = end[s] = end[right]  # part s absorbs its right neighbour
        rank[right] = _GONE
        if e < n:
            prev[e] = s
            r = rank[s] = get(piece[s : end[e]], _NO_MERGE)
            if r != _NO_MERGE:
                heapq.heappush(heap, r << 32 | s)
        else:
            rank[s] = _NO_MERGE
        p = prev[s]
        if p >= 0:
            r = rank[p] = get(piece[p:e], _NO_MERGE)
            if r != _NO_MERGE:
                heapq.heappush(heap, r << 32 | p)

    parts, s = [], 0
    while s < n:
        parts.append(piece[s : end[s]])
        s = end[s]
    return parts
