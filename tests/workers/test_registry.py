"""Which consumers exist and which events they take: one registry, extended only through settings."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from parley.config import SettingsError, load_settings
from parley.events import EventType
from parley.outbox.consumers import Consumer, ConsumerRegistry, EventDelivery, WorkKind, consumers_from_modules
from workers.consumers import BUILTIN_CONSUMERS, build_registry


def _ignore(session: Session, delivery: EventDelivery) -> None:
    return None


def test_the_registry_answers_which_consumers_take_an_event_type() -> None:
    everything = Consumer(name="everything", event_types=frozenset(EventType), handle=_ignore, kind=WorkKind.WEBHOOKS)
    reads = Consumer(name="reads", event_types=frozenset({EventType.MESSAGE_READ}), handle=_ignore, kind=WorkKind.EMAIL)
    registry = ConsumerRegistry((everything, reads))

    assert registry.for_type("message.read") == (everything, reads)
    assert registry.for_type("message.created") == (everything,)
    assert registry.for_type("no.such.type") == ()
    assert registry.get("reads") is reads and registry.get("nobody") is None


def test_consumer_names_are_unique() -> None:
    one = Consumer(name="same", event_types=frozenset({EventType.MESSAGE_READ}), handle=_ignore, kind=WorkKind.EMAIL)
    with pytest.raises(ValueError, match="same"):
        ConsumerRegistry((one, one))


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"event_types": frozenset({"message.sent"})}, "unknown event types"),
        ({"event_types": frozenset()}, "no event types"),
        ({"name": ""}, "name"),
        ({"soft_time_limit": 90.0, "time_limit": 60.0}, "soft_time_limit"),
        ({"kind": WorkKind.EVENTS}, "dispatcher"),
    ],
)
def test_a_malformed_consumer_is_refused(fields: dict[str, object], complaint: str) -> None:
    values: dict[str, object] = {
        "name": "c", "event_types": frozenset({EventType.MESSAGE_READ}), "handle": _ignore, "kind": WorkKind.EMAIL
    }
    with pytest.raises(ValueError, match=complaint):
        Consumer(**{**values, **fields})  # type: ignore[arg-type]


def test_production_ships_no_test_or_benchmark_consumer() -> None:
    registry = build_registry(load_settings(extra_consumers=[]))
    assert registry.consumers == BUILTIN_CONSUMERS
    assert not any(c.name.startswith("test") or c.name == "log" for c in registry)


def test_extra_consumer_modules_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_EXTRA_CONSUMERS", "workers.log_consumer, tests.workers.consumers")
    registry = build_registry(load_settings())
    assert {c.name for c in registry} >= {"log", "test-effects", "test-ordered"}


def test_a_module_without_consumers_is_refused() -> None:
    with pytest.raises(ValueError, match="no CONSUMERS"):
        consumers_from_modules(["parley.events"])
    with pytest.raises(ModuleNotFoundError):
        consumers_from_modules(["no_such_module_here"])


def test_the_visibility_timeout_is_checked_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_BROKER_VISIBILITY_TIMEOUT", "5")
    with pytest.raises(SettingsError, match="PARLEY_BROKER_VISIBILITY_TIMEOUT"):
        load_settings()
