"""Hit policies on hand-made neighbourhoods (no embedder: the similarities are given)."""

from __future__ import annotations

import pytest

from gateway.cache.decision import (
    DEFAULT_VERIFIER,
    ConsensusPolicy,
    ThresholdPolicy,
    Verifier,
    build_policy,
    neighbourhood,
)
from gateway.cache.entry import CachedAnswer, Neighbour, StoredEntry


def near(answer: str, similarity: float, entry_id: str | None = None) -> Neighbour:
    entry_id = entry_id or f"{answer}-{similarity}"
    entry = StoredEntry(
        entry_id=entry_id,
        scope="default:s",
        exact_key=entry_id,
        text=entry_id,
        answer=CachedAnswer(answer, "stop", "m", 1, 1, 0.0),
        created_at=0.0,
        expires_at=1e18,
    )
    return Neighbour(entry, similarity)


def test_threshold_serves_the_nearest_at_or_above_the_threshold() -> None:
    policy = ThresholdPolicy()
    chosen = policy.choose([near("a", 0.97), near("b", 0.96)], 0.95)
    assert chosen is not None and chosen.entry.answer.text == "a"
    assert policy.choose([near("a", 0.949)], 0.95) is None
    assert policy.search_params(0.95, 4) == (4, 0.95)


def test_consensus_serves_an_agreeing_neighbourhood_below_the_threshold() -> None:
    hood = [near("reset", s) for s in (0.94, 0.93, 0.93, 0.91, 0.89)] + [near("email", 0.71)]
    assert ThresholdPolicy().choose(hood, 0.95) is None
    chosen = ConsensusPolicy().choose(hood, 0.95)
    assert chosen is not None and chosen.entry.answer.text == "reset"
    assert chosen.similarity == 0.94  # the best neighbour of the winning answer


def test_consensus_does_not_serve_a_contradicted_neighbour_above_the_threshold() -> None:
    # The nearest entry (0.96) says "pin"; four entries almost as close say "card".
    hood = [near("pin", 0.96), *(near("card", s) for s in (0.95, 0.945, 0.94, 0.93))]
    nearest = ThresholdPolicy().choose(hood, 0.95)
    assert nearest is not None and nearest.entry.answer.text == "pin"
    # Outvoted, and the majority is not sure enough (its best is only 0.95): a miss.
    assert ConsensusPolicy().choose(hood, 0.95) is None


def test_a_rejected_neighbourhood_falls_back_to_the_threshold_rule() -> None:
    # Three entries agree (0.96, 0.80, 0.75) but not closely: the verifier says no, and the
    # nearest entry, above the threshold and of the majority's answer, is served as usual.
    hood = [near("reset", 0.96), near("other", 0.85), near("reset", 0.80), near("reset", 0.75)]
    chosen = ConsensusPolicy().choose(hood, 0.95)
    assert chosen is not None and chosen.similarity == 0.96
    # The same, but the entry above the threshold is outvoted by a majority not much further:
    close = [near("pin", 0.955), *(near("card", s) for s in (0.93, 0.80, 0.75))]
    assert ConsensusPolicy().choose(close, 0.95) is None
    far = [near("pin", 0.99), *(near("card", s) for s in (0.90, 0.80, 0.75))]
    chosen = ConsensusPolicy().choose(far, 0.95)
    assert chosen is not None and chosen.entry.answer.text == "pin"


def test_consensus_refuses_a_split_neighbourhood() -> None:
    sims = (0.9, 0.9, 0.89, 0.89, 0.88, 0.88)
    hood = [near(answer, s) for answer, s in zip("ababab", sims, strict=True)]
    assert ConsensusPolicy().choose(hood, 0.95) is None


def test_consensus_is_the_threshold_rule_when_answers_are_all_different() -> None:
    policy, plain = ConsensusPolicy(), ThresholdPolicy()
    for sims in ((0.99, 0.98, 0.97), (0.96, 0.80), (0.94, 0.93, 0.93, 0.92), (0.9,), ()):
        hood = [near(f"answer {i}", s) for i, s in enumerate(sims)]
        assert policy.choose(hood, 0.95) == plain.choose(hood, 0.95), sims


def test_a_request_threshold_gets_the_plain_threshold_rule() -> None:
    hood = [near("reset", s) for s in (0.94, 0.93, 0.93, 0.91, 0.89)]
    assert ConsensusPolicy().choose(hood, 0.95) is not None
    assert ConsensusPolicy().choose(hood, 0.95, strict=True) is None


def test_consensus_searches_wider_than_the_threshold() -> None:
    k, floor = ConsensusPolicy().search_params(0.95, 4)
    assert k >= 10 and floor < 0.95


def test_answers_group_by_text_ignoring_case_and_spacing() -> None:
    hood = [
        near("Reset it  here.", 0.9),
        near("reset it here.", 0.89),
        near("RESET IT HERE.", 0.88),
    ]
    found = neighbourhood(hood, k=10, floor=0.7, tau=0.2)
    assert found is not None and found.votes == 3


def test_build_policy() -> None:
    assert build_policy("threshold").name == "threshold"
    strict = build_policy("consensus", min_score=DEFAULT_VERIFIER.min_score + 100)
    assert isinstance(strict, ConsensusPolicy)
    assert strict.verifier == Verifier(
        DEFAULT_VERIFIER.weights, DEFAULT_VERIFIER.bias, DEFAULT_VERIFIER.min_score + 100
    )
    hood = [near("reset", s) for s in (0.94, 0.93, 0.93, 0.91, 0.89)]
    assert strict.choose(hood, 0.95) is None  # an unreachable cut serves nothing of this kind
    with pytest.raises(ValueError):
        build_policy("nearest")
