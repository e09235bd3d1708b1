"""Signing secrets at rest: encrypted, readable back with the same key only, and a key generated
once (and shared by every process of the machine) when PARLEY_SECRET_KEY is unset."""

from __future__ import annotations

from pathlib import Path

import pytest

from parley.config import load_settings
from parley.secret_box import KEY_FILE, SecretBox, SecretUnreadable, secret_box


def test_a_secret_reads_back_with_its_key_only() -> None:
    box = SecretBox("k" * 40)
    token = box.encrypt("whsec_abc")
    assert "whsec_abc" not in token and box.decrypt(token) == "whsec_abc"
    with pytest.raises(SecretUnreadable):
        SecretBox("other" * 10).decrypt(token)


def test_without_a_configured_key_one_is_generated_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'parley.db'}", secret_key=None)
    token = secret_box(settings).encrypt("whsec_abc")
    key = (tmp_path / KEY_FILE).read_text()
    assert len(key) >= 32 and (tmp_path / KEY_FILE).stat().st_mode & 0o077 == 0
    assert secret_box(settings).decrypt(token) == "whsec_abc"
    assert (tmp_path / KEY_FILE).read_text() == key
    assert list((tmp_path / KEY_FILE).parent.iterdir()) == [tmp_path / KEY_FILE]  # no draft left behind


def test_a_short_configured_key_is_refused() -> None:
    with pytest.raises(Exception, match="PARLEY_SECRET_KEY"):
        load_settings(secret_key="short")
