"""The pure parts: usage in event streams, rate buckets, token estimates."""

from __future__ import annotations

import json

import pytest

from rainier.api.openai_requests import estimate_tokens
from rainier.api.ratelimit import TokenBucket
from rainier.api.stream_usage import is_whole_event, usage_event


def test_usage_chunk_is_dropped_unless_asked_for() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    final = [f"data: {json.dumps({'id': 'x', 'choices': [], 'usage': usage})}"]
    assert usage_event(final, wants_usage=False) == (usage, None)
    assert usage_event(final, wants_usage=True) == (usage, final)
    text = [f"data: {json.dumps({'id': 'x', 'choices': [{'text': 'hi'}], 'usage': None})}"]
    assert usage_event(text, wants_usage=False) == (None, text)
    assert usage_event(["data: [DONE]"], wants_usage=False) == (None, ["data: [DONE]"])


def test_a_stream_ending_without_its_blank_line_is_whole_only_if_its_data_parses() -> None:
    assert is_whole_event(b"data: [DONE]")
    assert is_whole_event(b'data: {"choices": []}\n')
    assert is_whole_event(b": a comment\nevent: x\ndata: [DONE]\r\n")
    assert not is_whole_event(b'data: {"choices": [{"text": "hel')
    assert not is_whole_event(b'data: {"a": 1}\ndata: {"b"')
    assert not is_whole_event(b"data: \xff\xfe")


def test_usage_riding_on_a_content_chunk_is_metered_and_removed() -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 1}
    event = [f"data: {json.dumps({'choices': [{'text': 'a'}], 'usage': usage})}"]
    found, kept = usage_event(event, wants_usage=False)
    assert found == usage and kept is not None
    assert json.loads(kept[0].removeprefix("data: ")) == {"choices": [{"text": "a"}]}


@pytest.mark.parametrize("rpm", [1, 3, 600])
def test_token_bucket_allows_rpm_a_minute(rpm: int) -> None:
    bucket = TokenBucket(rpm)
    assert all(bucket.take(1.0, 100.0) == 0.0 for _ in range(rpm))
    wait = bucket.take(1.0, 100.0)
    assert wait == pytest.approx(60.0 / rpm)
    assert bucket.take(1.0, 100.0 + wait / 2) > 0
    assert bucket.take(1.0, 100.0 + wait + 1e-6) == 0.0
    passed = sum(bucket.take(1.0, 200.0 + i * 0.5) == 0.0 for i in range(240))
    assert min(240, 2 * rpm) <= passed <= rpm + 2 * rpm, "a burst, then rpm a minute"


def test_token_bucket_refills_to_a_burst_of_rpm_only() -> None:
    bucket = TokenBucket(2)
    assert bucket.take(1.0, 0.0) == 0.0
    assert bucket.take(1.0, 3600.0) == 0.0 and bucket.take(1.0, 3600.0) == 0.0
    assert bucket.take(1.0, 3600.0) > 0


def test_token_bucket_corrections_refund_and_charge() -> None:
    bucket = TokenBucket(600)  # 10 tokens a second
    assert bucket.take(500.0, 0.0) == 0.0
    assert bucket.take(200.0, 0.0) == pytest.approx(10.0), "100 left, 100 short"
    bucket.adjust(450.0)  # the answer was 50 tokens, not 500
    assert bucket.remaining() == 550 and bucket.take(200.0, 0.0) == 0.0
    bucket.adjust(-700.0)  # an answer bigger than its estimate: the key owes tokens
    assert bucket.remaining() == 0
    assert bucket.wait(1.0, 0.0) == pytest.approx((350.0 + 1.0) / 10.0)
    assert bucket.reset_s() == pytest.approx(950.0 / 10.0)
    bucket.adjust(10_000.0)
    assert bucket.remaining() == 600, "never more than a minute's worth"


def test_estimate_is_the_prompt_plus_every_answer() -> None:
    assert estimate_tokens({"prompt": "x" * 40, "max_tokens": 10}, "/v1/completions") == 20
    assert estimate_tokens({"prompt": [1, 2, 3], "max_tokens": 5, "n": 2}, "/v1/completions") == 13
    assert estimate_tokens({"prompt": "abcd"}, "/v1/completions") == 1 + 16
    chat = {"messages": [{"role": "user", "content": "y" * 8}], "max_completion_tokens": 7}
    assert estimate_tokens(chat, "/v1/chat/completions") == 2 + 7
    assert estimate_tokens({"messages": []}, "/v1/chat/completions") == 256
