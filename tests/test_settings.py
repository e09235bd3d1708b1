from __future__ import annotations

import re
from pathlib import Path

import pytest

from parley.config import ENV_PREFIX, Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_env_example_documents_every_setting() -> None:
    documented = set(re.findall(rf"^{ENV_PREFIX}(\w+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_the_embedded_defaults_need_no_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(f"{ENV_PREFIX}{name.upper()}", raising=False)
    settings = load_settings()
    assert settings.database_url.startswith("sqlite:///var/")
    assert (settings.host, settings.port, settings.max_message_chars) == ("127.0.0.1", 8080, 10_000)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("PARLEY_PORT", "http"), ("PARLEY_DATABASE_URL", "mysql://x"), ("PARLEY_ADMIN_TOKEN", "short"),
     ("PARLEY_MAX_MESSAGE_CHARS", "0")],
)
def test_a_bad_setting_names_its_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()
