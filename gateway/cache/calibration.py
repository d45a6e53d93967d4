"""The semantic tier's operating point, chosen so that the estimated false-hit rate stays under
``cache.max_false_hit_rate``.

The cache's own labelled entries are the evidence: after a warm-up, each warmed entry whose
answer at least one other entry shares is asked against the rest of its scope (leave one out:
its own vector is searched and itself dropped from the neighbours), and the whole hit decision
(policy, then guard) is run at every point of a ladder of operating points, from loose to
strict: the consensus verifier's cut around its fitted value, then the verifier off with the
threshold raised step by step (for the threshold policy: the threshold alone). A hit is false
when the answer served is not the entry's own. The loosest point whose one-sided 95 % Wilson
upper bound of false hits per probe is at most the target is used for that scope; when none is,
the strictest point is used and the estimate says so (``met`` false).

The estimate is for questions whose answer is in the cache (a warmed FAQ). Questions about
things the cache has never seen are not in the probes, so their false-hit rate is not bounded
by it; the guard and the threshold rule still apply to them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from gateway.cache.decision import (
    DEFAULT_VERIFIER,
    HitPolicy,
    answer_key,
    choose_guarded,
    entry_answer_key,
)
from gateway.cache.entry import Neighbour, StoredEntry
from gateway.cache.guard import Guard
from gateway.cache.store import CacheStore

if TYPE_CHECKING:
    from gateway.cache.config import CacheConfig
    from gateway.cache.service import SemanticCache

log = logging.getLogger(__name__)

Z_95_ONE_SIDED = 1.645
CONSENSUS_CUTS = tuple(DEFAULT_VERIFIER.min_score + d / 4 for d in range(-16, 17))
STRICT_THRESHOLDS = (0.95, 0.96, 0.97, 0.98, 0.99)
PLAIN_THRESHOLDS = tuple(round(0.85 + i / 100, 2) for i in range(15))


def wilson_upper(failures: int, n: int, z: float = Z_95_ONE_SIDED) -> float:
    """One-sided upper confidence bound of a rate (1.0 with no evidence)."""
    if n == 0:
        return 1.0
    p = failures / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z * z / n))


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """Where one scope's semantic tier operates, and what the probes say of it."""

    model: str
    namespace: str
    threshold: float
    cut: float | None  # the consensus verifier's cut; inf = verifier off; None = threshold policy
    target: float  # the false-hit rate asked for
    false_hit_rate: float  # on the probes
    false_hit_upper: float  # its one-sided 95 % upper bound
    hit_rate: float  # on the probes
    probes: int
    met: bool
    computed_at: float

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        if self.cut is not None and math.isinf(self.cut):
            data["cut"] = "off"
        return data


@dataclass(frozen=True, slots=True)
class Probe:
    text: str
    answer: str  # answer_key of the entry's own answer
    neighbours: list[Neighbour]  # best first, the entry itself removed


def ladder(policy: HitPolicy, threshold: float) -> list[tuple[float, float | None]]:
    """(threshold, cut) points from loose to strict."""
    if policy.name != "consensus":
        return [(t, None) for t in PLAIN_THRESHOLDS if t >= min(threshold, PLAIN_THRESHOLDS[0])]
    points: list[tuple[float, float | None]] = [(threshold, cut) for cut in CONSENSUS_CUTS]
    return points + [(t, math.inf) for t in STRICT_THRESHOLDS if t >= threshold]


def choose_point(
    probes: Sequence[Probe],
    policy: HitPolicy,
    guard: Guard | None,
    threshold: float,
    target: float,
    *,
    model: str,
    namespace: str,
) -> OperatingPoint:
    """The loosest point of the ladder whose upper bound meets the target (else the strictest)."""
    n = len(probes)
    outcomes = []
    for t, cut in ladder(policy, threshold):
        hits = false = 0
        for probe in probes:
            refusal = None if guard is None else partial(guard.refusal, probe.text)
            chosen, _ = choose_guarded(policy, probe.neighbours, t, cut=cut, refusal=refusal)
            if chosen is not None:
                hits += 1
                false += answer_key(chosen) != probe.answer
        upper = wilson_upper(false, n)
        outcomes.append((t, cut, hits, false, upper))
        if upper <= target:
            break
    t, cut, hits, false, upper = outcomes[-1]
    return OperatingPoint(
        model=model,
        namespace=namespace,
        threshold=t,
        cut=cut,
        target=target,
        false_hit_rate=false / n if n else 0.0,
        false_hit_upper=upper,
        hit_rate=hits / n if n else 0.0,
        probes=n,
        met=upper <= target,
        computed_at=time.time(),
    )


def probe_of(entry: StoredEntry, neighbours: Sequence[Neighbour]) -> Probe:
    others = [n for n in neighbours if n.entry.entry_id != entry.entry_id]
    return Probe(entry.text, entry_answer_key(entry), others)


def shared_answers(entries: Sequence[StoredEntry]) -> list[StoredEntry]:
    """The entries whose answer another entry of the list carries too (the labelled ones)."""
    keys = [entry_answer_key(e) for e in entries]
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return [e for e, key in zip(entries, keys, strict=True) if counts[key] > 1]


async def calibrate(
    store: CacheStore,
    policy: HitPolicy,
    guard: Guard | None,
    samples: Sequence[tuple[StoredEntry, np.ndarray]],
    *,
    threshold: float,
    target: float,
    k: int,
    max_probes: int,
) -> OperatingPoint | None:
    """The operating point of the scope the samples (warmed entries and their vectors) belong
    to, or None when fewer than two of them share an answer (nothing to learn from)."""
    labelled = {e.entry_id for e in shared_answers([entry for entry, _ in samples])}
    chosen = [(e, v) for e, v in samples if e.entry_id in labelled]
    if not chosen:
        return None
    if len(chosen) > max_probes:  # a fixed sample: the same warm-up gives the same point
        picks = np.random.default_rng(0).choice(len(chosen), max_probes, replace=False)
        chosen = [chosen[i] for i in sorted(picks)]
    k_search, floor = policy.search_params(threshold, k)
    floor = min(floor, PLAIN_THRESHOLDS[0])
    probes = [
        probe_of(entry, await store.search(entry.scope, vector, k_search + 1, floor))
        for entry, vector in chosen
    ]
    first = chosen[0][0]
    return choose_point(
        probes,
        policy,
        guard,
        threshold,
        target,
        model=first.answer.model,
        namespace=first.namespace,
    )


def calibration_target(config: CacheConfig, model: str, namespace: str) -> float | None:
    """The false-hit rate a warm-up of this model and namespace is calibrated for: None when no
    target is set, or a threshold is set explicitly (that is honoured exactly)."""
    if config.explicit_threshold(model, namespace) is not None:
        return None
    return config.max_false_hit_rate_for(model, namespace)


async def calibrate_warmed(
    cache: SemanticCache,
    model: str,
    namespace: str,
    samples: Sequence[tuple[StoredEntry, np.ndarray]],
    target: float,
) -> None:
    """After a warm-up: the warmed scope's operating point for ``target``. A failure leaves the
    configured policy in place: the warm-up itself succeeded."""
    config = cache.config
    try:
        point = await calibrate(
            cache.store,
            cache.policy,
            cache.guard,
            samples,
            threshold=config.threshold,
            target=target,
            k=config.search_k,
            max_probes=config.calibration_probes,
        )
    except Exception as exc:
        log.warning("calibrating the cache after a warm-up failed: %r", exc)
        return
    if point is not None:
        cache.operating_points[samples[0][0].scope] = point
        log.info("cache operating point for %s/%s: %s", model, namespace, point.as_dict())
        if cache.observer is not None:
            cache.observer.on_operating_point(point)
