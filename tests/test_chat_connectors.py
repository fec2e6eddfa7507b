"""discord_message and teams_message against a real local receiver that checks the payload shapes."""
from __future__ import annotations

import pytest

from app.connectors import ActionError
from app.connectors import validate as connectors_validate
from app.connectors.discord import DiscordMessage
from app.connectors.teams import CARD_TYPE, TeamsMessage
from app.engine.cancel import CancelToken
from app.errors import ValidationFailed
from tests.receiver import Reply, make_client, receiver  # noqa: F401 (fixtures)

EMBED = {"title": "Order 42", "description": "paid", "fields": [{"name": "amount", "value": "12.50"}]}


def test_discord_posts_content_embeds_and_username(receiver, make_client):
    receiver.respond("/discord", Reply(204, body=""))
    config = {"webhook_url": receiver.url("/discord"), "content": "New order", "embeds": [EMBED], "username": "ipaas"}
    result = DiscordMessage().execute(config, make_client(), CancelToken())
    sent = receiver.wait_for(1, path="/discord")[0]
    assert result.status_code == 204 and sent.headers["content-type"] == "application/json"
    assert sent.json() == {"content": "New order", "embeds": [EMBED], "username": "ipaas"}


def test_discord_honours_the_retry_after_of_its_429_body(receiver, make_client):
    receiver.respond("/discord", Reply(429, body='{"message": "You are being rate limited.", "retry_after": 0.35,'
                                                 ' "global": false}', headers={"Retry-After": "1"}))
    with pytest.raises(ActionError) as caught:
        DiscordMessage().execute({"webhook_url": receiver.url("/discord"), "content": "x"}, make_client(),
                                 CancelToken())
    assert caught.value.retryable and caught.value.retry_after == 0.35


def test_teams_sends_text_as_an_adaptive_card_attachment(receiver, make_client):
    receiver.respond("/teams", Reply(202, body=""))
    TeamsMessage().execute({"webhook_url": receiver.url("/teams"), "text": "Build **green**"}, make_client(),
                           CancelToken())
    body = receiver.wait_for(1, path="/teams")[0].json()
    assert body["type"] == "message" and len(body["attachments"]) == 1
    attachment = body["attachments"][0]
    assert attachment["contentType"] == CARD_TYPE == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["body"] == [{"type": "TextBlock", "text": "Build **green**", "wrap": True}]


def test_teams_sends_a_given_card_as_it_is(receiver, make_client):
    card = {"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "FactSet", "facts": [
        {"title": "Amount", "value": "12.50"}]}]}
    TeamsMessage().execute({"webhook_url": receiver.url("/teams"), "card": card}, make_client(), CancelToken())
    assert receiver.wait_for(1, path="/teams")[0].json()["attachments"][0]["content"] == card


@pytest.mark.parametrize("action_type, config, field", [
    ("discord_message", {"webhook_url": "https://discord.com/api/webhooks/1/x"}, "config.content"),
    ("discord_message", {"webhook_url": "ftp://x", "content": "hi"}, "config.webhook_url"),
    ("discord_message", {"webhook_url": "https://d.test/x", "embeds": {"title": "x"}}, "config.embeds"),
    ("discord_message", {"webhook_url": "https://d.test/x", "embeds": [{}] * 11}, "config.embeds"),
    ("discord_message", {"webhook_url": "https://d.test/x", "content": 5}, "config.content"),
    ("discord_message", {"webhook_url": "https://d.test/x", "content": "x", "tts": True}, "config.tts"),
    ("discord_message", {"webhook_url": "https://d.test/x", "embeds": [{"title": "{{ x"}]}, "config.embeds[0].title"),
    ("teams_message", {"webhook_url": "https://t.test/x"}, "config.text"),
    ("teams_message", {"webhook_url": "https://t.test/x", "text": "a", "card": {"type": "AdaptiveCard"}},
     "config.text"),
    ("teams_message", {"webhook_url": "https://t.test/x", "card": {"type": "MessageCard"}}, "config.card"),
    ("teams_message", {"webhook_url": "https://t.test/x", "text": ["a"]}, "config.text"),
    ("teams_message", {"webhook_url": "https://t.test/x", "card": {"type": "AdaptiveCard",
                                                                   "body": [{"text": "{% if %}"}]}},
     "config.card.body[0].text"),
])
def test_bad_chat_configs_are_refused_naming_the_field(action_type, config, field):
    with pytest.raises(ValidationFailed) as caught:
        connectors_validate(action_type, config)
    assert caught.value.field == field
