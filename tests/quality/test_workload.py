"""The Banking77 chatbot workload and the load generator's false-hit attribution."""

from __future__ import annotations

from collections import Counter

from gateway.cache.evaluate import Labelled
from load.loadgen import AnswerBook
from load.workload import COMMON, ChatbotWorkload, canonical_answer

ROWS = [Labelled(f"question {i} about {intent}", intent) for intent in "abcdef" for i in range(20)]


def test_sessions_are_deterministic_and_share_the_system_prompt() -> None:
    one, two = ChatbotWorkload(ROWS, seed=3), ChatbotWorkload(ROWS, seed=3)
    sessions = [one.session() for _ in range(50)]
    assert sessions == [two.session() for _ in range(50)]
    assert any(len(s.turns) > 1 for s in sessions)
    turn = sessions[0].turns[0]
    messages = one.messages([(turn, "an answer")], turn)
    assert messages[0] == {"role": "system", "content": one.system_prompt}
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]


def test_popularity_is_zipf_and_queries_are_the_datasets_paraphrases() -> None:
    workload = ChatbotWorkload(ROWS, seed=1, zipf_s=1.5, mean_turns=1.0, repeat=0.0)
    asked = Counter(workload.session().turns[0].intent for _ in range(3000))
    ranked = [asked[intent] for intent in workload.intents]
    assert ranked[0] > 2 * ranked[2] > 0  # rank 1 vs rank 3: (3/1)**1.5 = 5.2x
    texts = {row.text: row.category for row in ROWS}
    turn = workload.session().turns[0]
    assert texts[turn.text] == turn.intent


def test_warm_up_texts_are_never_asked() -> None:
    workload = ChatbotWorkload(ROWS, seed=2, warm_per_intent=5, repeat=0.5)
    warm = {m["messages"][-1]["content"] for m in workload.warm_entries()}
    assert len(warm) == 6 * 5
    asked = {t.text for _ in range(500) for t in workload.session().turns}
    assert not warm & asked
    entry = workload.warm_entries()[0]
    assert entry["answer"] == canonical_answer(entry["messages"][-1]["content"].split()[-1])


def test_repeats_come_from_a_few_common_phrasings() -> None:
    workload = ChatbotWorkload(ROWS, seed=4, repeat=1.0, mean_turns=1.0)
    by_intent: dict[str, set[str]] = {}
    for _ in range(600):
        turn = workload.session().turns[0]
        by_intent.setdefault(turn.intent, set()).add(turn.text)
    assert max(len(texts) for texts in by_intent.values()) <= COMMON


def test_answer_book_judges_hits() -> None:
    book = AnswerBook()
    book.add(canonical_answer("card_arrival"), "card_arrival")
    book.add("I'm sorry.", "lost_card")
    book.add("I'm sorry.", "card_arrival")
    assert book.judge(canonical_answer("card_arrival"), "card_arrival") == "ok"
    assert book.judge(canonical_answer("card_arrival"), "lost_card") == "false"
    assert book.judge("I'm sorry.", "lost_card") == "ambiguous"
    assert book.judge("never seen", "lost_card") == "unknown"
