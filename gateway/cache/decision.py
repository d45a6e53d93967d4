"""Hit policies: which of a lookup's nearest neighbours, if any, a semantic lookup serves.

``threshold`` (the default) serves the nearest live neighbour whose cosine similarity is at
least the threshold, as RedisVL, LiteLLM and GPTCache do.

``consensus`` looks at the k nearest neighbours together and groups them by answer (the
answer's text, whitespace collapsed and case folded). Neighbours that share an answer are votes
for it; the winning answer is the one with the most similarity-weighted votes. A light
verifier, a logistic model over four cheap features of that neighbourhood (FEATURES), then
says whether serving the winning answer is safe. Its weights were fitted on a tuning split of
Banking77 (docs/benchmarks.md, ``python -m load.tune_policy``): a query surrounded by several
close entries that agree on one answer, with no close entry that disagrees, is served even
below the threshold. When the verifier says no, the threshold rule applies, except that an
entry above the threshold is not served when the majority's nearest entry is almost as close
(within ``outvoted_by``) and carries another answer.

The verifier only speaks when at least ``min_votes`` neighbours share the winning answer; with
fewer, and wherever no two entries share an answer (answers generated one by one), ``consensus``
is exactly the threshold rule. A request that sets its own
threshold (``cache.threshold``) always gets the plain threshold rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.cache.entry import Neighbour, StoredEntry

FEATURES = ("best", "margin", "share", "density")


class HitPolicy(Protocol):
    name: str

    def search_params(self, threshold: float, k: int) -> tuple[int, float]:
        """(how many neighbours, lowest similarity) the store search must return."""
        ...

    def choose(
        self,
        neighbours: Sequence[Neighbour],
        threshold: float,
        *,
        strict: bool = False,
        cut: float | None = None,
    ) -> Neighbour | None:
        """The neighbour to serve (live ones, best first), or None for a miss. ``strict``: the
        request set its own threshold, so the plain threshold rule applies. ``cut``: the
        verifier's cut of a calibrated operating point (calibration.py), if any."""
        ...


def nearest_above(neighbours: Sequence[Neighbour], threshold: float) -> Neighbour | None:
    for neighbour in neighbours:  # best first
        if neighbour.similarity >= threshold:
            return neighbour
    return None


class ThresholdPolicy:
    """The nearest neighbour at or above the threshold."""

    name = "threshold"

    def search_params(self, threshold: float, k: int) -> tuple[int, float]:
        return k, threshold

    def choose(
        self,
        neighbours: Sequence[Neighbour],
        threshold: float,
        *,
        strict: bool = False,
        cut: float | None = None,
    ) -> Neighbour | None:
        return nearest_above(neighbours, threshold)


@dataclass(frozen=True, slots=True)
class Verifier:
    """A logistic model: accept when ``bias + sum(weights * features) >= min_score``."""

    weights: tuple[float, ...]
    bias: float
    min_score: float

    def score(self, features: Sequence[float]) -> float:
        return self.bias + math.fsum(w * x for w, x in zip(self.weights, features, strict=True))


# Fitted by `python -m load.tune_policy` on the tune split; min_score keeps the tune split's
# false-hit rate at or below the 0.95 threshold's.
DEFAULT_VERIFIER = Verifier(weights=(11.362, 5.964, 2.447, 11.35), bias=-20.727, min_score=3.929)


@dataclass(frozen=True, slots=True)
class Neighbourhood:
    """The neighbours grouped by answer, and the winning group's features."""

    winner: Neighbour  # the best neighbour of the winning answer
    votes: int  # neighbours that carry the winning answer
    features: tuple[float, ...]  # in FEATURES order


def entry_answer_key(entry: StoredEntry) -> str:
    """An entry's answer, whitespace collapsed and case folded: entries with equal keys share
    an answer."""
    return " ".join(entry.answer.text.split()).casefold()


def answer_key(neighbour: Neighbour) -> str:
    return entry_answer_key(neighbour.entry)


def neighbourhood(
    neighbours: Sequence[Neighbour], *, k: int, floor: float, tau: float
) -> Neighbourhood | None:
    """Votes of the first k neighbours at or above ``floor`` (best first), weighted by
    exp((similarity - 1) / tau); ties go to the nearest neighbour's answer. Features:

    - best: similarity of the winning answer's nearest entry;
    - margin: best minus the similarity of the nearest entry with another answer (or floor);
    - share: the winning answer's part of all the vote weight;
    - density: mean similarity of the winning answer's 3 nearest entries (missing ones: floor).
    """
    votes = [n for n in neighbours[:k] if n.similarity >= floor]
    if not votes:
        return None
    weight: dict[str, float] = {}
    members: dict[str, list[Neighbour]] = {}
    for n in votes:
        key = answer_key(n)
        weight[key] = weight.get(key, 0.0) + math.exp((n.similarity - 1.0) / tau)
        members.setdefault(key, []).append(n)
    top_key = answer_key(votes[0])
    win_key = max(weight, key=lambda key: (weight[key], key == top_key))
    group = members[win_key]
    others = [n.similarity for n in votes if answer_key(n) != win_key]
    best = group[0].similarity
    dense = [n.similarity for n in group[:3]] + [floor] * max(0, 3 - len(group))
    features = (
        best,
        best - (max(others) if others else floor),
        weight[win_key] / math.fsum(weight.values()),
        sum(dense) / 3,
    )
    return Neighbourhood(group[0], len(group), features)


@dataclass(slots=True)
class ConsensusPolicy:
    """Answer agreement among the k nearest neighbours, checked by a light verifier."""

    k: int = 10
    floor: float = 0.7
    tau: float = 0.2
    min_votes: int = 3
    outvoted_by: float = 0.03
    verifier: Verifier = field(default_factory=lambda: DEFAULT_VERIFIER)
    name: str = "consensus"

    def search_params(self, threshold: float, k: int) -> tuple[int, float]:
        return max(k, self.k), min(threshold, self.floor)

    def choose(
        self,
        neighbours: Sequence[Neighbour],
        threshold: float,
        *,
        strict: bool = False,
        cut: float | None = None,
    ) -> Neighbour | None:
        if strict:
            return nearest_above(neighbours, threshold)
        hood = neighbourhood(neighbours, k=self.k, floor=self.floor, tau=self.tau)
        nearest = nearest_above(neighbours, threshold)
        if hood is None or hood.votes < self.min_votes:  # no consensus to go by
            return nearest
        if self.verifier.score(hood.features) >= (self.verifier.min_score if cut is None else cut):
            return hood.winner
        outvoted = (
            nearest is not None
            and answer_key(nearest) != answer_key(hood.winner)
            and hood.winner.similarity >= nearest.similarity - self.outvoted_by
        )
        return None if outvoted else nearest  # outvoted: a majority almost as close disagrees


def choose_guarded(
    policy: HitPolicy,
    neighbours: Sequence[Neighbour],
    threshold: float,
    *,
    strict: bool = False,
    cut: float | None = None,
    refusal: Callable[[str], str | None] | None = None,
) -> tuple[Neighbour | None, str | None]:
    """The policy's choice if the guard lets it through, and otherwise the nearest neighbour at
    or above the threshold that the guard lets through and whose answer no refused entry carries
    (the plain threshold rule: the policy's votes were cast with the refused entry among them,
    so they do not carry over; and an answer stored for the opposite question is suspect
    whichever of its questions is asked about).
    Returns (neighbour to serve or None, the guard's reason for refusing the policy's choice).
    ``refusal`` maps a candidate's stored text to a reason to refuse it, None when it passes."""
    chosen = policy.choose(neighbours, threshold, strict=strict, cut=cut)
    if refusal is None or chosen is None:
        return chosen, None
    reason = refusal(chosen.entry.text)
    if reason is None:
        return chosen, None
    refused = {answer_key(chosen)}
    for n in neighbours:  # best first
        if n.similarity < threshold:
            break
        if answer_key(n) in refused:
            continue
        if refusal(n.entry.text) is None:
            return n, reason
        refused.add(answer_key(n))
    return None, reason


def build_policy(name: str, *, min_score: float | None = None) -> HitPolicy:
    """The policy a config names; ``min_score`` overrides the verifier's cut (consensus)."""
    if name == "threshold":
        return ThresholdPolicy()
    if name == "consensus":
        verifier = DEFAULT_VERIFIER
        if min_score is not None:
            verifier = Verifier(verifier.weights, verifier.bias, min_score)
        return ConsensusPolicy(verifier=verifier)
    raise ValueError(f"unknown cache policy {name!r}")
