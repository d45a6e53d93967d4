"""The polarity and slot guard: refuses a semantic candidate that asks a different question.

Embedders score minimal pairs as near-identical: "Can I transfer money to a US account?" and
"... from a US account?" are 0.995 apart, "fee over 500 euros" and "over 5000 euros" 0.961,
"contactless enabled" and "disabled" 0.958. No threshold separates those from real paraphrases
("How long does a transfer take?" / "... take to arrive?" is 0.920), so after the hit policy
picks a candidate, this guard compares the two texts' words. A candidate is refused, with the
first reason found, when the question and the candidate's stored text differ in:

- ``negation``: one is negated (not, n't, never, no, without, unable, ...) and the other not;
  "I cannot activate it" and "I am unable to activate it, it won't let me" are both negated;
- ``opposite``: one text has more of one side of an opposite pair and fewer of the other
  (enable/disable, to/from, log in/log out, ...): extra words on one side alone are not refused;
- ``number``: the numbers, amounts, years, quantities and identifiers they name ("2" and "two",
  "5k" and "5000", "$500" and "500 dollars" are the same);
- ``unit``: the units or currencies attached to the same numbers (2 days vs 2 weeks);
- ``currency``: the currencies they name (USD vs EUR, "$" vs "euros");
- ``entity``: the months, weekdays, places and platforms they name (iOS vs Android);
- ``direction``: the same two slots in the other order (USD to EUR vs EUR to USD, from savings
  to checking vs from checking to savings).

Contractions are expanded first ("where's" = "where is", "can't" = "can not") and case and word
order elsewhere do not matter, so paraphrases pass. The word lists are data
(``guard_words.toml`` beside this module, or ``cache.guard_words``). Each text is analysed once
(memoised), so a check costs microseconds.
"""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

DEFAULT_WORDS = Path(__file__).with_name("guard_words.toml")
REASONS = ("negation", "opposite", "number", "unit", "currency", "entity", "direction")

_CONTRACTIONS = (
    (re.compile(r"\bwon't\b"), "will not"),
    (re.compile(r"\bshan't\b"), "shall not"),
    (re.compile(r"\bcan't\b|\bcannot\b"), "can not"),
    (re.compile(r"n't\b"), " not"),
    (re.compile(r"'re\b"), " are"),
    (re.compile(r"'m\b"), " am"),
    (re.compile(r"'ll\b"), " will"),
    (re.compile(r"'ve\b"), " have"),
    (re.compile(r"'d\b"), " would"),
    (re.compile(r"'s\b"), " is"),
)
# e-mail | time of day (15:00) | number (1,000.50) | currency symbol (maybe us$) | % | word
_TOKEN = re.compile(
    r"[\w.+-]+@[\w-]+\.[\w.-]+|\d{1,2}:\d\d|\d+(?:[.,]\d+)*|(?:us|nz|hk|c|a|s|r)?\$"
    r"|[€£¥₹₽₩₪₺%]|[^\W\d_]+"
)
_CASED = re.compile(r"\b([A-Z]{2,4})\b\s*([a-z]*)")  # an upper-case name and the word after it
_RATE_LEADS = frozenset({"per", "a", "an", "each", "every", "/"})
_DETERMINERS = frozenset(
    {"the", "a", "an", "my", "your", "our", "their", "his", "her", "its", "this", "that"}
    | {"these", "those", "some", "another", "other"}
)


@dataclass(frozen=True, slots=True)
class GuardWords:
    """The word lists, read from a TOML file (see guard_words.toml for its sections)."""

    negations: frozenset[str]
    cues: Mapping[str, tuple[tuple[int, int], ...]]  # word or phrase -> (pair, side) it stands for
    phrases: tuple[str, ...]  # the cues of more than one word
    currencies: Mapping[str, str]  # spelling -> currency code
    units: Mapping[str, str]  # spelling -> unit
    rates: Mapping[str, str]  # spelling -> period ("monthly" -> month)
    periods: frozenset[str]  # units that are periods: "per month" is a rate, "per meter" not
    numbers: Mapping[str, float]  # number word -> value
    multipliers: Mapping[str, float]
    names: frozenset[str]
    cased_names: frozenset[str]
    infinitive_leads: frozenset[str]
    verbs_after_to: frozenset[str]

    @classmethod
    def load(cls, path: Path = DEFAULT_WORDS) -> GuardWords:
        with path.open("rb") as handle:
            data: dict[str, Any] = tomllib.load(handle)
        cues: dict[str, list[tuple[int, int]]] = {}
        for pair, sides in enumerate(data.get("opposites", [])):
            if len(sides) != 2:
                raise ValueError(f"{path}: opposites[{pair}] must have two sides")
            for side, words in enumerate(sides):
                for word in words:
                    cues.setdefault(word.lower(), []).append((pair, side))
        names = data.get("names", {})
        return cls(
            negations=frozenset(w.lower() for w in data.get("negations", [])),
            cues={word: tuple(sides) for word, sides in cues.items()},
            phrases=tuple(sorted((w for w in cues if " " in w), key=len, reverse=True)),
            currencies=_invert(data.get("currencies", {})),
            units=_invert(data.get("units", {})),
            rates=_invert(data.get("rates", {})),
            periods=frozenset(data.get("rates", {})),
            numbers={k.lower(): float(v) for k, v in data.get("numbers", {}).items()},
            multipliers={k.lower(): float(v) for k, v in data.get("multipliers", {}).items()},
            names=frozenset(
                w.lower() for kind, words in names.items() if kind != "cased" for w in words
            ),
            cased_names=frozenset(names.get("cased", [])),
            infinitive_leads=frozenset(data.get("infinitive_leads", [])),
            verbs_after_to=frozenset(data.get("verbs_after_to", [])),
        )


def _invert(groups: Mapping[str, Iterable[str]]) -> dict[str, str]:
    return {spelling.lower(): name for name, spellings in groups.items() for spelling in spellings}


@dataclass(frozen=True, slots=True)
class Signature:
    """What the guard compares of one text."""

    negated: bool
    cues: Counter[tuple[int, int]]
    numbers: tuple[float, ...]  # sorted
    quantities: tuple[tuple[float, str], ...]  # (number, unit or currency), sorted
    currencies: frozenset[str]
    rates: frozenset[str]
    entities: frozenset[str]
    directions: frozenset[tuple[str, str]]  # (source, target) slots


class Guard:
    """``refusal(query, candidate)``: the reason to refuse the candidate, or None."""

    def __init__(self, words: GuardWords | None = None, *, memo: int = 16_384) -> None:
        self.words = words or GuardWords.load()
        self.signature = lru_cache(maxsize=memo)(self._signature)

    def refusal(self, query: str, candidate: str) -> str | None:
        a, b = self.signature(query), self.signature(candidate)
        if a.negated != b.negated:
            return "negation"
        if _opposed(a.cues, b.cues):
            return "opposite"
        if a.numbers != b.numbers:
            return "number"
        if a.quantities != b.quantities:
            return "unit"
        if a.currencies != b.currencies:
            return "currency"
        if a.rates != b.rates:
            return "unit"
        if a.entities != b.entities:
            return "entity"
        if any((target, source) in b.directions for source, target in a.directions):
            return "direction"
        return None

    def _signature(self, text: str) -> Signature:
        w = self.words
        cased = frozenset(  # "US" is a place, but "US dollars" a currency
            name
            for name, after in _CASED.findall(text)
            if name in w.cased_names and after not in w.currencies
        )
        tokens = _tokens(text)
        joined = " " + " ".join(tokens) + " "
        cues: Counter[tuple[int, int]] = Counter()
        for phrase in w.phrases:  # longest first; a matched phrase is taken out of the text
            while f" {phrase} " in joined:
                cues.update(w.cues[phrase])
                joined = joined.replace(f" {phrase} ", " ", 1)
        tokens = joined.split()
        directional = [self._directional(tokens, i) for i in range(len(tokens))]
        for i, token in enumerate(tokens):
            if token == "to" and not directional[i]:
                continue
            cues.update(self._cue(token))
        numbers, quantities, currencies = self._slots(tokens)
        return Signature(
            negated=any(token in w.negations for token in tokens),
            cues=cues,
            numbers=tuple(sorted(numbers)),
            quantities=tuple(sorted(quantities)),
            currencies=frozenset(currencies),
            rates=frozenset(self._rates(tokens)),
            entities=frozenset(t for t in tokens if t in w.names) | cased,
            directions=self._directions(tokens, directional),
        )

    def _cue(self, token: str) -> tuple[tuple[int, int], ...]:
        for form in _forms(token):
            if form in self.words.cues:
                return self.words.cues[form]
        return ()

    def _directional(self, tokens: list[str], i: int) -> bool:
        """Whether tokens[i] is "to" as a direction, not as the start of an infinitive."""
        if tokens[i] not in ("to", "into"):
            return False
        before = tokens[i - 1] if i else ""
        after = tokens[i + 1] if i + 1 < len(tokens) else ""
        return before not in self.words.infinitive_leads and after not in self.words.verbs_after_to

    def _slots(self, tokens: list[str]) -> tuple[list[float], list[tuple[float, str]], set[str]]:
        """Numbers (a run of digits and number words is one number), each number's unit or
        currency (the word after it, or a currency just before it), and every currency named."""
        w = self.words
        numbers: list[float] = []
        quantities: list[tuple[float, str]] = []
        currencies = {w.currencies[t] for t in tokens if t in w.currencies}
        i = 0
        while i < len(tokens):
            value, end = self._number(tokens, i)
            if end == i:
                i += 1
                continue
            after = tokens[end] if end < len(tokens) else ""
            before = tokens[i - 1] if i else ""
            unit = w.units.get(after) or w.currencies.get(after) or w.currencies.get(before)
            if ":" in tokens[i] or (after in ("am", "pm") and value <= 12):
                value, unit = _minute_of_day(tokens[i], after), "time"  # 3pm = 15:00
            numbers.append(value)
            if unit:
                quantities.append((value, unit))
            i = end
        return numbers, quantities, currencies

    def _rates(self, tokens: list[str]) -> Iterable[str]:
        for i, token in enumerate(tokens):
            if token in self.words.rates:
                yield self.words.rates[token]
            elif i and tokens[i - 1] in _RATE_LEADS:
                period = self.words.units.get(token)
                if period in self.words.periods:
                    yield period

    def _number(self, tokens: list[str], i: int) -> tuple[float, int]:
        """The number starting at tokens[i] and the index after it ((0, i): no number)."""
        w = self.words
        total = current = 0.0
        j = i
        while j < len(tokens):
            token = tokens[j]
            if ":" in token:  # a time of day stands alone
                return 0.0, (i + 1 if j == i else j)
            if token[0].isdigit() and (j == i or tokens[j - 1] in w.numbers):
                current += _parse_number(token)
            elif token in w.multipliers and j > i:
                current = max(current, 1.0) * w.multipliers[token]
                if current >= 1000:
                    total, current = total + current, 0.0
            elif token in w.numbers and not (token == "one" and not self._counted(tokens, j)):
                current += w.numbers[token]
            else:
                break
            j += 1
            if token[0].isdigit() and not (j < len(tokens) and tokens[j] in w.multipliers):
                break  # "2 3" is two numbers; "5 k" and "5 million" are one
        return total + current, j

    def _counted(self, tokens: list[str], j: int) -> bool:
        """ "one" is a number only before a unit, a currency or a multiplier ("one card", not
        "this one")."""
        after = tokens[j + 1] if j + 1 < len(tokens) else ""
        w = self.words
        return after in w.units or after in w.currencies or after in w.multipliers

    def _directions(self, tokens: list[str], directional: list[bool]) -> frozenset[tuple[str, str]]:
        """(source, target) of "from X to Y", "to Y from X" and "X to Y" where X is a slot."""
        targets = [_content_after(tokens, i) for i, d in enumerate(directional) if d]
        sources = [_content_after(tokens, i) for i, t in enumerate(tokens) if t == "from"]
        if not sources:
            w = self.words
            sources = [
                tokens[i - 1]
                for i, d in enumerate(directional)
                if d and i and (tokens[i - 1] in w.currencies or tokens[i - 1] in w.names)
            ]
        return frozenset((s, t) for s in sources for t in targets if s and t and s != t)


def _tokens(text: str) -> list[str]:
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    for pattern, replacement in _CONTRACTIONS:
        text = pattern.sub(replacement, text)
    return _TOKEN.findall(text)


def _content_after(tokens: list[str], i: int) -> str:
    for token in tokens[i + 1 : i + 4]:
        if token not in _DETERMINERS:
            return token
    return ""


def _forms(token: str) -> Iterable[str]:
    """The word and what it may be with a common ending taken off (enabled -> enable)."""
    yield token
    if len(token) <= 3:
        return
    if token.endswith("ing"):
        stem = token[:-3]
        yield from (stem, stem + "e")
        if len(stem) > 2 and stem[-1] == stem[-2]:
            yield stem[:-1]  # stopping -> stop
    elif token.endswith("ed"):
        yield from (token[:-1], token[:-2])
        if token[-3] == token[-4]:
            yield token[:-3]  # stopped -> stop
    elif token.endswith("es"):
        yield from (token[:-1], token[:-2])
    elif token.endswith("s") and not token.endswith("ss"):
        yield token[:-1]


def _minute_of_day(token: str, after: str) -> float:
    hours, _, minutes = token.partition(":")
    hour = (
        int(hours) % 12 + 12 if after == "pm" else int(hours) % 12 if after == "am" else int(hours)
    )
    return float(hour * 60 + int(minutes or 0))


def _parse_number(token: str) -> float:
    """1,000 and 1.000,5 style separators: a separator followed by exactly three digits groups
    thousands; the last other one is the decimal point."""
    groups = re.split(r"[.,]", token)
    if len(groups) == 1:
        return float(token)
    if all(len(g) == 3 for g in groups[1:]):
        return float("".join(groups))
    return float("".join(groups[:-1]) + "." + groups[-1])


def _opposed(a: Counter[tuple[int, int]], b: Counter[tuple[int, int]]) -> bool:
    """One text has more of one side of a pair and fewer of the other."""
    pairs = {pair for pair, _ in a} | {pair for pair, _ in b}
    for pair in pairs:
        more = a[(pair, 0)] - b[(pair, 0)]
        fewer = a[(pair, 1)] - b[(pair, 1)]
        if more * fewer < 0:
            return True
    return False
