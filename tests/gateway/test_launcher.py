"""``gateway up``: the settings it serves the bundled engine with (completion budget, admin key)
and its ready message; and ``gateway cache warm`` finding the key ``gateway up`` made."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.admin_key import ENV, key_file, local_key_hash, read_local_key
from gateway.auth import AuthConfig, Authenticator, hash_key
from gateway.config import Settings
from gateway.errors import PermissionDenied
from gateway.launcher import BUNDLED_MAX_TOKENS, ready_message, served_settings
from gateway.routing.config import BudgetConfig, ModelBudget, RoutingConfig

MODEL = "smollm2-135m-instruct"


@pytest.fixture(autouse=True)
def _no_admin_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)


def serve(settings: Settings, data: Path) -> tuple[Settings, str | None]:
    return served_settings(settings, "http://127.0.0.1:9", MODEL, data / "model", data)


def test_the_bundled_model_gets_a_short_budget_and_the_engine(tmp_path: Path) -> None:
    served, _ = serve(Settings(), tmp_path)
    budget = served.routing.budget
    assert budget.models[MODEL].max_tokens == BUNDLED_MAX_TOKENS <= 256
    assert budget.max_tokens == 1024  # other models keep the global budget
    assert budget.default_tokenizer == str(tmp_path / "model")
    assert [(b.url, b.models) for b in served.backends] == [("http://127.0.0.1:9", [MODEL])]


def test_a_budget_the_user_set_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_ROUTING__BUDGET__MAX_TOKENS", "512")
    served, _ = serve(Settings(), tmp_path)
    assert MODEL not in served.routing.budget.models
    assert served.routing.budget.max_tokens == 512
    monkeypatch.delenv("GATEWAY_ROUTING__BUDGET__MAX_TOKENS")

    mine = ModelBudget(max_tokens=300, context_len=99)
    own = Settings(routing=RoutingConfig(budget=BudgetConfig(models={MODEL: mine})))
    served, _ = serve(own, tmp_path)
    assert served.routing.budget.models[MODEL] == mine


def test_up_makes_a_private_admin_key_once_and_warm_reads_it(tmp_path: Path) -> None:
    served, where = serve(Settings(), tmp_path)
    path = key_file(tmp_path)
    assert where == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = read_local_key(tmp_path)
    assert key and served.auth.admin_key_hash == hash_key(key)
    Authenticator(served.auth).admin(f"Bearer {key}")  # the key opens the admin API
    with pytest.raises(PermissionDenied):
        Authenticator(served.auth).admin("Bearer guessed")
    again, _ = serve(Settings(), tmp_path)  # a restart keeps the key
    assert again.auth.admin_key_hash == served.auth.admin_key_hash


def test_admin_key_from_the_environment_or_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "sk-mine")
    served, where = serve(Settings(), tmp_path)
    assert (served.auth.admin_key_hash, where) == (hash_key("sk-mine"), ENV)
    assert read_local_key(tmp_path) == "sk-mine" and not key_file(tmp_path).exists()

    configured = Settings(auth=AuthConfig(admin_key_hash=hash_key("sk-configured")))
    served, where = serve(configured, tmp_path)
    assert (served.auth.admin_key_hash, where) == (hash_key("sk-configured"), None)


def test_an_empty_key_file_is_refused_not_overwritten(tmp_path: Path) -> None:
    key_file(tmp_path).write_text("")
    with pytest.raises(SystemExit, match="holds no key"):
        local_key_hash(tmp_path)


def test_ready_message_names_the_playground_and_the_dashboard(tmp_path: Path) -> None:
    settings = Settings(host="0.0.0.0", port=8150)
    text = ready_message(settings, MODEL, str(key_file(tmp_path)), 42.4)
    assert text.startswith("ready in 42 s.")
    assert 'OpenAI(base_url="http://127.0.0.1:8150/v1", api_key="unused")' in text
    assert "http://127.0.0.1:8150/playground" in text
    assert "http://127.0.0.1:8150/dashboard" in text
    assert str(key_file(tmp_path)) in text
