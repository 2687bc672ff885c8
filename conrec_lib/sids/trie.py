"""The prefix tree of valid SIDs: which token may come next, so that decoding only ever yields real items.

`llm.decoding.SIDTrie` builds one from SID strings through an LLM's tokenizer; TIGER builds one from its codes.
"""
from __future__ import annotations

from typing import Iterable, Sequence

Prefix = tuple[int, ...]


class PrefixTrie:
    """Prefix tree of the valid item SIDs, each a sequence of token ids (an LLM's SID tokens, or TIGER's codes).

    >>> trie = PrefixTrie([(1, 2), (1, 3), (4, 2)])
    >>> trie.allowed(()), trie.allowed((1,)), trie.allowed((9,))
    ([1, 4], [2, 3], [])
    >>> trie.is_complete((1, 3)), trie.is_complete((1,)), len(trie)
    (True, False, 3)
    """

    def __init__(self, sequences: Iterable[Sequence[int]]):
        self._children: dict[Prefix, list[int]] = {}
        self._complete: set[Prefix] = set()
        self._size: dict[Prefix, int] = {}
        for seq in sequences:
            self._add(tuple(int(t) for t in seq))
        self.depth = max((len(s) for s in self._complete), default=0)

    def _add(self, seq: Prefix) -> None:
        if not seq:
            raise ValueError("PrefixTrie: an SID encoded to zero tokens; every SID needs at least one token")
        if seq in self._children or any(seq[:i] in self._complete for i in range(1, len(seq))):
            raise ValueError(f"PrefixTrie: token sequence {seq} is a prefix of another SID or has one as prefix; "
                             "SIDs must be prefix-free (give every SID the same number of levels)")
        for i in range(len(seq)):
            children = self._children.setdefault(seq[:i], [])
            if seq[i] not in children:
                children.append(seq[i])
            self._size[seq[:i + 1]] = self._size.get(seq[:i + 1], 0) + 1
        self._complete.add(seq)

    def size(self, prefix: Prefix) -> int:
        """How many SIDs start with `prefix` (a complete SID: 1)."""
        return self._size.get(tuple(prefix), 0)

    def allowed(self, prefix: Prefix) -> list[int]:
        """Token ids that extend `prefix` towards a valid SID (empty when there is none)."""
        return self._children.get(tuple(prefix), [])

    def is_complete(self, prefix: Prefix) -> bool:
        """Whether `prefix` is a whole valid SID."""
        return tuple(prefix) in self._complete

    def __len__(self) -> int:
        return len(self._complete)
