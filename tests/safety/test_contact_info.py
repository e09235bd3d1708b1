"""PARLEY_CONTACT_INFO: the detection table (hits, disguises and legitimate text that must pass),
then masking as the recipient sees it over REST and WebSocket (the original kept for moderators),
and blocking (422 naming the kinds, nothing stored), on the REST and worker paths."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from parley.config import Settings
from parley.errors import Invalid
from parley.models import Message
from parley.services.contact_info import MASK, find_contact_info
from parley.services.messages import MessageDraft, send_message
from tests.api.conftest import provision, start_conversation
from tests.realtime.conftest import connect, frame_where, of_type
from tests.safety.conftest import AppFor, error_of, load_user

ALLOWED = ["parley.com"]

# (text, the kinds found: empty for text that must pass untouched)
TABLE: list[tuple[str, set[str]]] = [
    # email addresses, plain and disguised
    ("write to john.doe@gmail.com please", {"email"}),
    ("JOHN.DOE@GMAIL.COM", {"email"}),
    ("mail: a_b+c@sub.example.co.uk", {"email"}),
    ("john at gmail dot com", {"email"}),
    ("john(at)gmail(dot)com", {"email"}),
    ("john [at] gmail [dot] com", {"email"}),
    ("jane {at} outlook {dot} com", {"email"}),
    ("john at gmail.com", {"email"}),
    ("john @ gmail . com", {"email"}),
    ("j o h n @ g m a i l . c o m", {"email"}),
    ("john\u200b@\u200bgmail.com", {"email"}),
    ("ｊｏｈｎ＠ｇｍａｉｌ．ｃｏｍ", {"email"}),
    # phone numbers
    ("call me at (415) 555-2671", {"phone"}),
    ("my cell 415.555.2671", {"phone"}),
    ("4155552671", {"phone"}),
    ("+1 415 555 2671", {"phone"}),
    ("+44 20 7946 0958 is my office", {"phone"}),
    ("my number: +49 30 901820", {"phone"}),
    ("4 1 5 5 5 5 2 6 7 1", {"phone"}),
    ("4-1-5-5-5-5-2-6-7-1", {"phone"}),
    ("４１５５５５２６７１", {"phone"}),
    ("4\u200b1\u200b5\u200b5\u200b5\u200b5\u200b2\u200b6\u200b7\u200b1", {"phone"}),
    ("ring 415 555 2671 tonight", {"phone"}),
    # links and domains outside the allowed ones
    ("see www.example.com", {"link"}),
    ("go to https://evil.io/x?y=1", {"link"}),
    ("http://203.0.113.7/login", {"link"}),
    ("visit example.org for more", {"link"}),
    ("my portfolio: janedoe.dev", {"link"}),
    ("example dot com", {"link"}),
    ("example(dot)net", {"link"}),
    ("VISIT EXAMPLE.COM", {"link"}),
    ("t.me/johnny", {"link"}),
    ("wa.me/14155552671", {"link"}),
    # messenger handles
    ("telegram: @johnny", {"messenger"}),
    ("add me on snapchat: jsmith", {"messenger"}),
    ("ping me on skype: live:jane.doe", {"messenger"}),
    ("my insta is jane_doe_99", {"messenger"}),
    ("discord - gamer#1234 hmm, or discord: gamer_1234", {"messenger"}),
    ("whatsapp me @jane", {"messenger"}),
    ("wechat id: wx_jane88", {"messenger"}),
    # several at once
    ("email john@example.com or call (415) 555-2671", {"email", "phone"}),
    ("telegram: @johnny, site jo.io", {"messenger", "link"}),
    # legitimate text that must pass
    ("The price is $1,299.99 including VAT", set()),
    ("Total 12,500 for 3 items", set()),
    ("I can deliver on 2024-05-12 at 10:30", set()),
    ("Dates: 12/05/2024 - 15/06/2024", set()),
    ("order #4815162342 has shipped", set()),
    ("Order 4815162342 shipped today", set()),
    ("invoice 2025550143 is paid", set()),
    ("Invoice INV-2024-0042 attached", set()),
    ("tracking number: 1Z999AA10123456784", set()),
    ("see https://app.parley.com/orders/42", set()),
    ("details on parley.com/help", set()),
    ("www.parley.com", set()),
    ("the package weighs 2.5 kg", set()),
    ("ZIP 94103, 2 units", set()),
    ("version 1.2.3 released", set()),
    ("I paid 30000000 once", set()),
    ("whatsapp is great but let's stay here", set()),
    ("Look at this.It is nice", set()),
    ("see you at noon. thanks", set()),
    ("i am at home. dot your i", set()),
    ("I arrive at 5. Done", set()),
    ("e.g. the file report.pdf", set()),
    ("Call 555-0199 is fictional", set()),
    ("Meeting at 3pm, room 404", set()),
    ("Budget: 1500 - 2000 EUR", set()),
    ("Thanks! 🙂 Talk soon", set()),
    ("@jane can you check the design?", set()),
]


def test_the_table_has_enough_hits_and_misses() -> None:
    assert len(TABLE) >= 60
    assert sum(1 for _, kinds in TABLE if kinds) >= 30 and sum(1 for _, kinds in TABLE if not kinds) >= 20


@pytest.mark.parametrize(("text", "kinds"), TABLE, ids=[t[:40] for t, _ in TABLE])
def test_detection(text: str, kinds: set[str]) -> None:
    found = find_contact_info(text, region="US", allowed_domains=ALLOWED)
    assert {f.kind for f in found} == kinds, [(f.kind, f.text) for f in found]
    for finding in found:
        assert text[finding.start:finding.end] == finding.text


async def test_masked_messages_reach_the_recipient_masked_over_rest_and_websocket_with_the_original_kept(
    app_for: AppFor, sessions: sessionmaker[Session], settings: Settings
) -> None:
    client = await app_for(contact_info="mask", contact_info_allowed_domains=ALLOWED)
    alice, bob = await provision(client, "alice"), await provision(client, "bob")
    conversation = await start_conversation(client, alice, bob)
    bob_ws = await connect(client, bob)
    text = "mail me at john at gmail dot com or call (415) 555-2671, details on parley.com/help"

    sent = await client.post(f"/api/v1/conversations/{conversation['id']}/messages", json={"content": text}, headers=alice.auth)
    assert sent.status == 201
    shown = await sent.json()
    expected = f"mail me at {MASK} or call {MASK}, details on parley.com/help"
    assert shown["content"] == expected and shown["flags"] == ["contact_info"]

    frame = await frame_where(bob_ws, of_type("message.created"))
    assert frame["data"]["message"]["content"] == expected and frame["data"]["message"]["flags"] == ["contact_info"]
    history = await (await client.get(f"/api/v1/conversations/{conversation['id']}/messages", headers=bob.auth)).json()
    assert history["items"][0]["content"] == expected and text not in str(history)
    inbox = await (await client.get("/api/v1/conversations", headers=bob.auth)).json()
    assert inbox["items"][0]["last_message"]["content"] == expected
    with sessions() as session:
        stored = session.scalar(select(Message).where(Message.id == shown["id"]))
        assert stored is not None and stored.original_content == text and stored.content == expected

    # Clean text is untouched and unflagged.
    clean = await client.post(f"/api/v1/conversations/{conversation['id']}/messages",
                              json={"content": "see you on 2024-05-12"}, headers=alice.auth)
    assert (await clean.json())["flags"] == [] and (await clean.json())["content"] == "see you on 2024-05-12"

    # A worker's send is masked alike.
    mask_settings = settings.model_copy(update={"contact_info": "mask"})
    with sessions() as session:
        message, _ = send_message(session, mask_settings, load_user(sessions, bob.id), conversation["id"],
                                  MessageDraft(content="telegram: @bobby"))
    assert message.content == MASK and message.flags == ["contact_info"]


async def test_blocked_contact_info_is_refused_naming_the_kinds_and_nothing_is_stored(
    app_for: AppFor, sessions: sessionmaker[Session], settings: Settings
) -> None:
    client = await app_for(contact_info="block")
    alice, bob = await provision(client, "alice"), await provision(client, "bob")
    conversation = await start_conversation(client, alice, bob)
    refused = await client.post(f"/api/v1/conversations/{conversation['id']}/messages",
                                json={"content": "john@example.com / +1 415 555 2671"}, headers=alice.auth)
    assert refused.status == 422
    error = await error_of(refused)
    assert error["code"] == "contact_info_not_allowed" and error["details"] == {"kinds": ["email", "phone"]}
    # A first message carrying contact details refuses the whole first contact.
    first = await client.post("/api/v1/conversations",
                              json={"user_id": alice.id, "message": {"content": "t.me/bob"}}, headers=bob.auth)
    assert first.status == 422 and (await error_of(first))["details"] == {"kinds": ["link"]}
    block_settings = settings.model_copy(update={"contact_info": "block"})
    with sessions() as session, pytest.raises(Invalid) as denied:
        send_message(session, block_settings, load_user(sessions, bob.id), conversation["id"],
                     MessageDraft(content="whatsapp me @bob"))
    assert denied.value.code == "contact_info_not_allowed"
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 0
    ok = await client.post(f"/api/v1/conversations/{conversation['id']}/messages",
                           json={"content": "price is $1,299.99"}, headers=alice.auth)
    assert ok.status == 201
