"""worldserver.limits: token buckets, address keys, trusted networks, per-address counts.

Pure functions and explicit ``now`` values; the transports' use of them is tested with real
sockets in tests/test_admission.py and tests/test_rtc_admission.py.
"""

from __future__ import annotations

import pytest

from worldserver.config import ConfigError, load_config
from worldserver.limits import (
    UNKNOWN_ADDRESS,
    AddressCounts,
    AddressLimits,
    Networks,
    Penalties,
    TokenBucket,
    TokenBuckets,
    address_key,
    parse_address,
)


def limits(**overrides) -> AddressLimits:
    values = {"limits.trusted_networks": ""}
    values.update({f"limits.{k}": str(v) for k, v in overrides.items()})
    return AddressLimits(load_config(path=None, env={}, overrides=values).limits)


def test_bucket_burst_then_rate_and_peek_takes_nothing() -> None:
    buckets = TokenBuckets(rate=2.0, burst=3)
    assert [buckets.take("u", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.peek("u", 0.0) == pytest.approx(0.5)
    assert buckets.peek("u", 0.0) == pytest.approx(0.5)  # peeking took nothing
    assert buckets.take("u", 0.0) == pytest.approx(0.5)
    assert buckets.take("u", 0.5) == 0.0
    assert buckets.peek("new", 0.5) == 0.0 and len(buckets) == 1
    assert buckets.take("u", 0.4) == pytest.approx(0.5)  # a clock going back adds nothing


def test_bucket_table_stays_bounded_under_many_keys() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=2000)
    for i in range(50_000):  # every key spent one token: nothing is full again
        buckets.take(i, 0.0)
        assert len(buckets) <= 2000
    assert buckets.take(49_999, 0.0) > 0  # the newest keys are kept
    buckets.sweep(10.0)
    assert len(buckets) == 0


def test_bucket_table_is_swept_on_the_way() -> None:
    buckets = TokenBuckets(rate=10.0, burst=1)
    for i in range(10_000):  # one key a second: each is full again a tenth of a second later
        buckets.take(i, float(i))
    assert len(buckets) <= 2048


def test_bucket_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBuckets(rate=0.0, burst=1)
    with pytest.raises(ValueError):
        TokenBucket(rate=1.0, burst=0.5, now=0.0)


def test_one_bucket_starts_full_or_as_told_and_keys_share_its_arithmetic() -> None:
    bucket = TokenBucket(rate=4.0, burst=2, now=10.0)
    assert [bucket.take(10.0) for _ in range(2)] == [0.0, 0.0]
    assert bucket.take(10.0) == pytest.approx(0.25) and bucket.peek(10.0) == pytest.approx(0.25)
    assert bucket.take(10.25) == 0.0
    assert bucket.tokens(20.0) == 2.0 and bucket.full(20.0) and not bucket.full(10.25)
    assert bucket.take(10.0) == pytest.approx(0.25)  # a clock going back adds nothing
    started = TokenBucket(rate=10.0, burst=5, now=0.0, tokens=1.0)  # a swarm's first admission
    assert started.take(0.0) == 0.0 and started.take(0.0) == pytest.approx(0.1)
    assert [started.take(1.0) for _ in range(6)].count(0.0) == 5  # burst, not 10 s worth
    keyed = TokenBuckets(rate=4.0, burst=2)
    assert [keyed.take("k", 10.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.25)]
    assert keyed.tokens("k", 10.125) == pytest.approx(0.5) and keyed.tokens("other", 10.0) == 2.0


@pytest.mark.parametrize(
    "host, expected",
    [
        ("192.0.2.7", (4, 0xC0000207)),
        ("::ffff:192.0.2.7", (4, 0xC0000207)),
        ("2001:db8::1", (6, 0x20010DB8 << 96 | 1)),
        ("fe80::1%eth0", (6, 0xFE80 << 112 | 1)),
        ("not-an-address", None),
        (None, None),
    ],
)
def test_parse_address(host, expected) -> None:
    assert parse_address(host) == expected


def test_keys_ipv4_per_address_ipv6_per_64() -> None:
    assert address_key("10.0.0.1") != address_key("10.0.0.2")
    assert address_key("10.0.0.1") == address_key("::ffff:10.0.0.1")
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("0.0.0.1") != address_key("::1")  # families never share a key
    assert address_key(None) == UNKNOWN_ADDRESS


def test_networks() -> None:
    nets = Networks(["127.0.0.0/8", "::1", "10.1.0.0/16"])
    assert nets.contains(parse_address("127.0.0.2"))
    assert nets.contains(parse_address("::1"))
    assert nets.contains(parse_address("::ffff:10.1.200.3"))
    assert not nets.contains(parse_address("10.2.0.1"))
    assert not nets.contains(parse_address("::2"))
    assert not nets.contains(None)
    with pytest.raises(ValueError):
        Networks(["10.0.0.0/33"])


def test_trusted_networks_setting_is_checked() -> None:
    assert load_config(path=None, env={}).limits.trusted_networks == ("127.0.0.0/8", "::1/128")
    assert load_config(path=None, env={"WORLDSERVER_LIMITS_TRUSTED_NETWORKS": ""}).limits.trusted_networks == ()
    with pytest.raises(ConfigError, match=r"^limits.trusted_networks: 'nope' is not a network"):
        load_config(path=None, env={}, overrides={"limits.trusted_networks": "10.0.0.0/8,nope"})


def test_counts_exist_only_while_held() -> None:
    counts = AddressCounts()
    counts.add("a")
    counts.add("a")
    counts.add("b")
    assert (counts.get("a"), counts.get("b"), counts.total, len(counts)) == (2, 1, 3, 2)
    counts.remove("a")
    counts.remove("a")
    counts.remove("b")
    assert (counts.total, len(counts), counts.get("a")) == (0, 0, 0)
    with pytest.raises(KeyError):
        counts.remove("a")  # released twice: a bug, said loudly


def test_connection_cap_per_address_and_trusted_addresses() -> None:
    lim = limits(connections_per_address=2)
    a, b = lim.key("198.51.100.1"), lim.key("198.51.100.2")
    assert lim.connect(a) and lim.connect(a)
    assert not lim.connect(a) and not lim.may_connect(a)
    assert lim.connect(b)  # another address is not affected
    lim.disconnect(a)
    assert lim.connect(a)
    trusting = limits(connections_per_address=1, trusted_networks="198.51.100.0/24")
    key = trusting.key("198.51.100.1")
    assert key is None and all(trusting.connect(key) for _ in range(10))
    assert trusting.key("203.0.113.1") is not None


def test_rates_per_address() -> None:
    lim = limits(handshakes_per_second=1, handshake_burst=3, joins_per_second=0.5, join_burst=1,
                 chat_messages_per_second=1, chat_burst=2)
    a, b = lim.key("2001:db8::1"), lim.key("2001:db8:0:1::1")
    assert [lim.handshake(a, 0.0) for _ in range(4)] == [True, True, True, False]
    assert lim.handshake(lim.key("2001:db8::2"), 0.0) is False  # the same /64
    assert lim.handshake(b, 0.0) is True
    assert lim.handshake(a, 1.0) is True
    assert lim.join_wait(a, 0.0) == 0.0 and lim.join_wait(a, 0.0) == pytest.approx(2.0)
    lim.chat_take(a, 0.0)
    lim.chat_take(a, 0.0)
    assert lim.chat_peek(a, 0.0) == pytest.approx(1.0) and lim.chat_peek(b, 0.0) == 0.0
    off = limits(handshakes_per_second=0, joins_per_second=0, chat_messages_per_second=0)
    assert all(off.handshake(off.key("192.0.2.1"), 0.0) for _ in range(1000))
    assert off.join_wait(off.key("192.0.2.1"), 0.0) == 0.0


def test_penalties_start_after_more_than_the_threshold_a_second_and_end() -> None:
    p = Penalties(threshold=100, seconds=5.0)
    # 100 drops a second, steadily, for 10 s: at the threshold, never penalized.
    assert not any(p.dropped("a", "a-text", i / 100) for i in range(1000))
    assert len(p) == 0
    # Twice that: the bucket (100 at most, 100 a second) is empty after about a second.
    started = [i for i in range(400) if p.dropped("b", "b-text", 20.0 + i / 200)]
    assert started and 190 <= started[0] <= 210 and len(started) == 1  # one penalty, not one per drop
    start = 20.0 + started[0] / 200
    assert p.until == {"b-text": start + 5.0}
    assert p.active("b-text", start + 4.9) and not p.active("a-text", start)
    assert not p.active("b-text", start + 5.0) and len(p) == 0  # over: forgotten
    # Drops counted under one key penalize the key the caller names (an address's ports together).
    for i in range(101):
        p.dropped(7, f"port-{i}", 100.0)
    assert list(p.until) == ["port-100"]
    p.expire(104.9)
    assert len(p) == 1
    p.expire(105.0)
    assert len(p) == 0


def test_penalties_stay_bounded() -> None:
    p = Penalties(threshold=1, seconds=10.0, max_keys=50)
    for i in range(1000):
        p.dropped(i, i, 0.0)
        p.dropped(i, i, 0.0)  # the second drop of a key with a threshold of 1 penalizes it
        assert len(p) <= 50
    assert len(p) == 50
    p.dropped("late", "late", 11.0)
    assert p.dropped("late", "late", 11.0)  # the ended ones made room
    assert len(p) == 1
    with pytest.raises(ValueError):
        Penalties(threshold=0, seconds=1.0)
