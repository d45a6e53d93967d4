"""The polarity and slot guard on its own: what it refuses, what it lets through, its data."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cache.guard import DEFAULT_WORDS, Guard, GuardWords


@pytest.fixture(scope="module")
def guard() -> Guard:
    return Guard()


@pytest.mark.parametrize(
    ("stored", "asked", "reason"),
    [  # the pairs of the issue, each served the other's answer before the guard
        (
            "Can I transfer money to a US account?",
            "Can I transfer money from a US account?",
            "opposite",
        ),
        (
            "What's the exchange rate for USD to EUR?",
            "What's the exchange rate for EUR to USD?",
            "direction",
        ),
        (
            "My card expires in 2026, what do I do?",
            "My card expires in 2028, what do I do?",
            "number",
        ),
        (
            "Is there a fee for transfers over 500 euros?",
            "Is there a fee for transfers over 5000 euros?",
            "number",
        ),
        (
            "Is contactless payment enabled on my card?",
            "Is contactless payment disabled on my card?",
            "opposite",
        ),
        ("Why is my card blocked?", "Why isn't my card blocked?", "negation"),
        ("I can log in", "I cant log in", "negation"),
        ("How do I log in?", "How do I log out?", "opposite"),
        ("Move 50 from savings to checking", "Move 50 from checking to savings", "direction"),
        ("Delivery in 2 days?", "Delivery in 2 weeks?", "unit"),
        ("Is the fee 2 percent per month?", "Is the fee 2 percent per year?", "unit"),
        ("Can I pay in dollars?", "Can I pay in euros?", "currency"),
        ("Does the app work on iOS?", "Does the app work on Android?", "entity"),
        ("Can I book for 3pm?", "Can I book for 4pm?", "number"),
        ("Is my order #48213 shipped?", "Is my order #48231 shipped?", "number"),
        (
            "How do I subscribe to the newsletter?",
            "How do I unsubscribe from the newsletter?",
            "opposite",
        ),
    ],
)
def test_refuses_a_different_question(guard: Guard, stored: str, asked: str, reason: str) -> None:
    assert guard.refusal(asked, stored) == reason
    assert guard.refusal(stored, asked) == reason  # the same either way round


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("Where is my card?", "Where's my card?"),
        ("How do I reset my password?", "How can I reset my password?"),
        ("How do I reset my password?", "How to reset my password"),
        ("I can't log in", "I cannot log in"),
        ("I can't log in", "I am unable to log in, it won't let me"),
        ("My card has not arrived", "My card still hasn't arrived yet"),
        ("How long does a transfer take?", "How long does it take for a transfer to arrive?"),
        ("I want to send money to my friend", "How do I send money to my friend?"),
        ("Can I pay by card online?", "Can I pay online by card?"),
        ("Is there a fee for $500?", "Is there a fee for 500 dollars?"),
        ("Is there a fee for 5k?", "Is there a fee for 5,000?"),
        ("Delivery in 2 weeks?", "Delivery in two weeks?"),
        ("Can I book for 3pm?", "Can I book for 15:00?"),
        ("What's the fee to convert USD?", "What is the fee to convert US dollars?"),
        ("May I know my balance?", "Can I know my balance?"),
        ("Which one should I pick?", "Which should I pick?"),
        ("How do I find out my balance?", "How can I check my balance in the app?"),
    ],
)
def test_lets_paraphrases_through(guard: Guard, stored: str, asked: str) -> None:
    assert guard.refusal(asked, stored) is None


def test_the_word_lists_are_data(tmp_path: Path) -> None:
    """A deployment extends the lists in its own file: a new opposite pair takes effect."""
    stored, asked = "Is the premium plan cheaper yearly?", "Is the premium plan cheaper lifetime?"
    assert Guard().refusal(asked, stored) == "unit"  # yearly is a rate; lifetime is not
    stored, asked = "Show me vegan recipes", "Show me carnivore recipes"
    assert Guard().refusal(asked, stored) is None
    words = tmp_path / "words.toml"
    words.write_text(
        DEFAULT_WORDS.read_text().replace(
            "opposites = [", 'opposites = [\n    [["vegan"], ["carnivore"]],', 1
        )
    )
    assert Guard(GuardWords.load(words)).refusal(asked, stored) == "opposite"


def test_a_malformed_pair_is_rejected(tmp_path: Path) -> None:
    words = tmp_path / "words.toml"
    words.write_text('opposites = [[["on"], ["off"], ["maybe"]]]\n')
    with pytest.raises(ValueError, match="two sides"):
        GuardWords.load(words)
