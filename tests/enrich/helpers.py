"""Helpers shared by the enrich tests."""


def page_event(url="https://www.example.com/", referrer="", **extra):
    ev = {
        "v": 1,
        "site_id": "site1",
        "message_id": "m1",
        "type": "page",
        "anonymous_id": "a1",
        "user_id": "",
        "previous_id": "",
        "group_id": "",
        "event": "",
        "properties": {},
        "traits": {},
        "context": {"page": {"url": url, "referrer": referrer, "title": "Home"}},
        "timestamp": "2026-01-01T00:00:00Z",
        "original_timestamp": "",
        "sent_at": "",
        "received_at": "",
        "ip": "",
        "user_agent": "",
    }
    ev.update(extra)
    return ev
