"""sids.beam: the one constrained beam search of the LLMs and TIGER, checked against exhaustive scoring."""
import pytest
import torch

from conrec_lib.sids import beam
from conrec_lib.sids.trie import PrefixTrie

VOCAB = 7


class TableStepper:
    """A model whose next-token logits are a fixed function of the row's prefix (seeded random)."""

    def __init__(self, num_prompts: int, seed: int = 0):
        self.prefixes = [(p,) for p in range(num_prompts)]  # the prompt id first, then the tokens
        self.seed, self.forwards = seed, 0
        self.logits = self.score(self.prefixes)

    def score(self, prefixes):
        self.forwards += len(prefixes)
        return torch.stack([torch.randn(VOCAB, generator=torch.Generator().manual_seed(hash((self.seed, p))))
                            for p in prefixes])

    def select(self, rows):
        self.prefixes = [self.prefixes[r] for r in rows.tolist()]

    def advance(self, tokens):
        self.prefixes = [p + (t,) for p, t in zip(self.prefixes, tokens.tolist())]
        self.logits = self.score(self.prefixes)


def exhaustive(trie, sids, prompt, seed, over_trie, banned=()):
    """Every SID's score by brute force, best first (what a beam search of unlimited width returns)."""
    step = TableStepper(1, seed)
    out = []
    for sid in sids:
        if sid in banned:
            continue
        total = 0.0
        for j in range(len(sid)):
            logits = step.score([(prompt,) + sid[:j]])[0]
            allowed = torch.full((VOCAB,), float("-inf"))
            allowed[trie.allowed(sid[:j])] = 0.0
            logp = torch.log_softmax(logits + allowed, -1) if over_trie else torch.log_softmax(logits, -1)
            total += float(logp[sid[j]])
        out.append((sid, total))
    return sorted(out, key=lambda s: -s[1])


def random_sids(seed, n=40, depth=3):
    g = torch.Generator().manual_seed(seed)
    sids = {tuple(torch.randint(0, VOCAB, (depth,), generator=g).tolist()) for _ in range(n)}
    return sorted(sids)


@pytest.mark.parametrize("over_trie", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_search_as_wide_as_the_catalogue_returns_every_sid_with_its_exact_score(over_trie, seed):
    sids = random_sids(seed)
    trie = PrefixTrie(sids)
    found = beam.search(TableStepper(2, seed), trie, 2, width=len(sids), over_trie=over_trie)
    for prompt in range(2):
        truth = exhaustive(trie, sids, prompt, seed, over_trie)
        assert [f.tokens for f in found[prompt]] == [s for s, _ in truth]
        assert [f.score for f in found[prompt]] == pytest.approx([v for _, v in truth], abs=1e-5)


def plain_beam(trie, prompt, seed, width):
    """Textbook constrained beam search (no shortcut): every step scores all alive beams with the model."""
    step = TableStepper(1, seed)
    alive, finished = [((), 0.0)], []
    while alive:
        candidates = []
        for prefix, score in alive:
            logits = step.score([(prompt,) + prefix])[0]
            allowed = torch.full((VOCAB,), float("-inf"))
            allowed[trie.allowed(prefix)] = 0.0
            logp = torch.log_softmax(logits + allowed, -1)
            candidates += [(prefix + (t,), score + float(logp[t])) for t in trie.allowed(prefix)]
        best = sorted(candidates, key=lambda c: -c[1])[:width]
        finished += [c for c in best if trie.is_complete(c[0])]
        alive = [c for c in best if not trie.is_complete(c[0])]
    return sorted(finished, key=lambda c: -c[1]), step.forwards


@pytest.mark.parametrize("seed", range(6))
def test_a_narrow_search_finishing_forced_endings_early_keeps_the_textbook_top_k_with_fewer_steps(seed):
    # most SIDs end in a forced token (their prefix has one continuation), as the LLMs' last SID code does
    g = torch.Generator().manual_seed(seed)
    sids = sorted({s + (int(torch.randint(0, 2, (1,), generator=g)),) for s in random_sids(seed, n=60, depth=2)})
    trie, width, k = PrefixTrie(sids), 8, 5
    assert sum(len(trie.allowed(s[:-1])) == 1 for s in sids) > 0
    step = TableStepper(1, seed)
    found = beam.search(step, trie, 1, width=width)[0]
    truth, textbook_forwards = plain_beam(trie, 0, seed, width)
    assert [f.tokens for f in found[:k]] == [s for s, _ in truth[:k]]
    assert [f.score for f in found[:k]] == pytest.approx([v for _, v in truth[:k]], abs=1e-5)
    assert step.forwards < textbook_forwards


@pytest.mark.parametrize("seed", range(4))
def test_banned_sids_are_never_returned_and_the_rest_keep_their_order(seed):
    sids = random_sids(seed)
    trie = PrefixTrie(sids)
    banned_sids = sids[::3]
    found = beam.search(TableStepper(1, seed), trie, 1, width=len(sids), over_trie=False,
                        banned=[beam.banned_endings(banned_sids, trie)])[0]
    truth = exhaustive(trie, sids, 0, seed, over_trie=False, banned=set(banned_sids))
    assert [f.tokens for f in found] == [s for s, _ in truth]
