"""Benchmark of the chat store (``worldserver.chat.sqlite_store``) at a million messages.

Job: fill a fresh :class:`SqliteChatStore` in a temporary directory with ``--messages``
generated chat messages (English, Korean with particles, and both mixed; word frequencies
follow a Zipf law) spread over ``--rooms`` rooms (the first, the lobby, holds half of them),
inserting one transaction per 50,000 rows, and report the build time and the file size. Then,
on a reopened store (cold SQLite cache, warm OS cache), time ``--searches`` random searches
within a room -- substrings of 3+ characters of real words in English and Korean, 2-character
Korean substrings (the short-query path), and two-term queries -- and report p50/p99/max in
milliseconds per kind and overall; then, apart, worst cases (queries with 1-2 character
terms that find nothing in the biggest room, so the bounded scans run to their end), and
history pages, since pages and single appends (each one committed transaction).

Must not: touch any file outside its temporary directory (removed afterwards, also on
errors), open sockets, or start a server.

Usage: ``python tools/bench/chat_search.py [--messages 1000000] [--rooms 100]
[--searches 500] [--seed 1] [--cache-mib 4] [--mmap-mib 0] [--json]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from worldserver.chat.sqlite_store import (  # noqa: E402
    MIXED_QUERY_SCAN,
    SHORT_QUERY_SCAN,
    SqliteChatStore,
)

BATCH = 50_000  # rows per transaction while filling

ENGLISH = """
the a to and of in is it you that for on this with be are was have at not but what so
can just like all my your we they do if me about one get out up how there when know now
time good great nice love see look picture photo photos gallery art artist painting paint
colour color light wall room hall exhibition museum frame canvas sculpture portrait
landscape beautiful amazing awesome wonderful lovely interesting strange favorite
favourite question answer where who which why here come go walk meet friend friends
hello hi hey thanks thank please sorry welcome morning evening night today tomorrow
yesterday weekend music sound voice camera lens shadow window door stairs floor ceiling
blue red green yellow black white orange purple golden silver bright dark soft sharp
think feel make made take taken find found show shown tell told talk talking chat
message people everyone someone anyone nobody tour guide map entrance exit upstairs
downstairs corner center centre left right north south east west sea sky mountain river
city street night-time sunset sunrise cloud clouds rain snow summer winter spring autumn
modern classic abstract digital print prints series collection curator opening closing
ticket free open closed soon later again really very much many more most less best
""".split()

KOREAN_NOUNS = """
갤러리 사진 작품 전시 미술관 작가 그림 풍경 하늘 바다 도시 여행 친구 오늘 내일 시간 사람
세상 음악 영화 커피 날씨 주말 아침 저녁 공간 조명 색깔 느낌 이야기 기억 마음 생각 질문
대답 벽 입구 출구 전시회 관람객 조각 설치 영상 디자인 건축 서울 부산 한국 초상화 액자
카메라 렌즈 그림자 창문 계단 천장 바닥 구석 가운데 왼쪽 오른쪽 산 강 거리 노을 구름
비 눈 여름 겨울 봄 가을 현대 고전 추상 디지털 작업 시리즈 소장품 큐레이터 개막 표
""".split()

KOREAN_PARTICLES = "에서 을 를 이 가 은 는 의 에 으로 로 와 과 도 만 까지 부터 에게 처럼".split()

KOREAN_OTHER = """
좋아요 멋져요 봤어요 만나요 있어요 없어요 가요 와요 예뻐요 감사합니다 안녕하세요 정말 너무
아주 같이 함께 다시 어디 언제 왜 어떻게 여기 저기 거기 지금 방금 벌써 아직 진짜 완전
좋네요 멋지네요 예쁘네요 궁금해요 알려주세요 보여주세요 기다릴게요 들어가요 나가요 올라가요
""".split()


def vocabulary() -> tuple[list[str], list[str]]:
    """(English words, Korean words: nouns, nouns with particles, other words)."""
    korean = list(KOREAN_NOUNS) + list(KOREAN_OTHER)
    korean += [n + p for n in KOREAN_NOUNS for p in KOREAN_PARTICLES]
    return list(ENGLISH), korean


def zipf_cum_weights(n: int, s: float = 1.07) -> list[float]:
    total, out = 0.0, []
    for rank in range(1, n + 1):
        total += 1.0 / rank**s
        out.append(total)
    return out


class TextGen:
    """Random chat lines: 60 % English, 30 % Korean, 10 % mixed; 2 to 16 words."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.english, self.korean = vocabulary()
        rng.shuffle(self.english)
        rng.shuffle(self.korean)
        self.en_w = zipf_cum_weights(len(self.english))
        self.ko_w = zipf_cum_weights(len(self.korean))

    def words(self, lang: str, k: int) -> list[str]:
        if lang == "en":
            return self.rng.choices(self.english, cum_weights=self.en_w, k=k)
        return self.rng.choices(self.korean, cum_weights=self.ko_w, k=k)

    def line(self) -> str:
        r = self.rng.random()
        k = self.rng.randint(2, 16)
        if r < 0.6:
            words = self.words("en", k)
            if self.rng.random() < 0.3:
                words[0] = words[0].capitalize()
            text = " ".join(words)
        elif r < 0.9:
            text = " ".join(self.words("ko", k))
        else:
            words = self.words("en", k // 2 + 1) + self.words("ko", k // 2 + 1)
            self.rng.shuffle(words)
            text = " ".join(words)
        return text + self.rng.choice(("", "", "", "!", "?", ".", " ㅋㅋ", " :)"))


def room_of(rng: random.Random, rooms: list[int]) -> int:
    """Half of the messages go to the lobby (rooms[0]), the rest spread over the others."""
    if len(rooms) == 1 or rng.random() < 0.5:
        return rooms[0]
    return rng.choice(rooms[1:])


def build(store: SqliteChatStore, n: int, n_rooms: int, rng: random.Random, quiet: bool) -> dict:
    owner = store.create_identity("bench", "bench", hashlib.sha256(b"bench").digest(), 0.0).id
    rooms = [store.create_room("lobby" if i == 0 else f"room-{i}", owner, i % 3 == 0 and i > 0, 0.0).id
             for i in range(n_rooms)]
    gen = TextGen(rng)
    authors = [f"user{i}" for i in range(2000)]
    t0 = time.perf_counter()
    ts = 1_700_000_000.0
    done = 0
    while done < n:
        count = min(BATCH, n - done)
        rows = []
        for _ in range(count):
            ts += 0.01
            rows.append((room_of(rng, rooms), ts, rng.choice(authors), "text", gen.line(), None))
        store.bulk_insert(rows)
        done += count
        if not quiet:
            rate = done / (time.perf_counter() - t0)
            print(f"  filled {done:>9,} messages ({rate:,.0f}/s)", file=sys.stderr, end="\r")
    seconds = time.perf_counter() - t0
    if not quiet:
        print(file=sys.stderr)
    return {"rooms": rooms, "seconds": seconds, "gen": gen}


def queries(gen: TextGen, rng: random.Random, count: int) -> list[tuple[str, str]]:
    """(kind, query): en / ko (3+ char substrings), ko2 (2-char Korean), two (two terms)."""
    out = []

    def word(lang: str, min_len: int) -> str:
        while True:
            if rng.random() < 0.5:  # by frequency (common words) or uniformly (rare ones)
                w = gen.words(lang, 1)[0]
            else:
                w = rng.choice(gen.english if lang == "en" else gen.korean)
            if len(w) >= min_len:
                return w

    def substring(w: str, length: int) -> str:
        start = rng.randint(0, len(w) - length)
        return w[start:start + length]

    for i in range(count):
        r = rng.random()
        if r < 0.4:
            w = word("en", 3)
            q = substring(w, rng.randint(3, len(w)))
            out.append(("en", q.upper() if rng.random() < 0.2 else q))
        elif r < 0.75:
            w = word("ko", 3)
            out.append(("ko", substring(w, rng.randint(3, len(w)))))
        elif r < 0.9:
            out.append(("ko2", substring(word("ko", 2), 2)))
        else:
            out.append(("two", f"{word('en', 3)} {substring(word('ko', 3), 3)}"))
    return out


def summary(samples_ms: list[float]) -> dict:
    ordered = sorted(samples_ms)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]

    return {
        "count": len(ordered),
        "p50_ms": round(pct(50), 3),
        "p99_ms": round(pct(99), 3),
        "max_ms": round(ordered[-1], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


def run(n: int, n_rooms: int, searches: int, seed: int, quiet: bool, cache_mib: int = 4, mmap_mib: int = 0) -> dict:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:
        path = os.path.join(tmp, "chat.sqlite3")
        store = SqliteChatStore(path)
        try:
            built = build(store, n, n_rooms, rng, quiet)
        finally:
            store.close()
        size = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp))
        rooms, gen = built["rooms"], built["gen"]

        # reopened: SQLite's own cache starts empty; sized as the server's chat.db_* settings
        store = SqliteChatStore(path, cache_mib=cache_mib, mmap_mib=mmap_mib)
        try:
            max_id = n  # bulk-inserted ids are 1..n
            by_kind: dict[str, list[float]] = {}
            hits: dict[str, list[int]] = {}
            all_ms = []
            for kind, q in queries(gen, rng, searches):
                room = room_of(rng, rooms)
                t0 = time.perf_counter()
                found = store.search(room, q, 20)
                ms = (time.perf_counter() - t0) * 1000
                by_kind.setdefault(kind, []).append(ms)
                hits.setdefault(kind, []).append(len(found))
                all_ms.append(ms)
            # Worst cases, timed apart: in the lobby (the biggest room), queries that find
            # nothing, so the bounded scans run to their end -- 1-2 character terms only
            # (SHORT_QUERY_SCAN messages) and a common word plus a 2-character term
            # (MIXED_QUERY_SCAN matches of the word).
            worst_ms: dict[str, list[float]] = {"short_miss": [], "mixed_miss": []}
            for i in range(40):
                absent = chr(0xD7A0 - 1 - i) + chr(0xD7A0 - 41 - i)  # rare syllables: no hits
                common = gen.words("en", 1)[0] if i % 2 else gen.english[0]
                for kind, q in (("short_miss", absent), ("mixed_miss", f"{common} {absent}")):
                    t0 = time.perf_counter()
                    store.search(rooms[0], q, 20)
                    worst_ms[kind].append((time.perf_counter() - t0) * 1000)
            hist_ms, since_ms = [], []
            for _ in range(searches):
                room = room_of(rng, rooms)
                before = rng.choice([None, rng.randint(1, max_id)])
                t0 = time.perf_counter()
                store.history(room, before, 50)
                hist_ms.append((time.perf_counter() - t0) * 1000)
                after = rng.randint(0, max_id)
                t0 = time.perf_counter()
                store.since(room, after, 100)
                since_ms.append((time.perf_counter() - t0) * 1000)
            append_ms = []
            for i in range(200):
                room = room_of(rng, rooms)
                t0 = time.perf_counter()
                store.append(room, "bench", "text", gen.line(), None, f"bench-{i}", time.time())
                append_ms.append((time.perf_counter() - t0) * 1000)
        finally:
            store.close()
    search = {"all": summary(all_ms)}
    for kind, samples in sorted(by_kind.items()):
        search[kind] = summary(samples) | {"mean_hits": round(statistics.fmean(hits[kind]), 1)}
    return {
        "messages": n,
        "rooms": n_rooms,
        "build_seconds": round(built["seconds"], 1),
        "build_rows_per_second": round(n / built["seconds"]),
        "db_megabytes": round(size / 1e6, 1),
        "short_query_scan": SHORT_QUERY_SCAN,
        "mixed_query_scan": MIXED_QUERY_SCAN,
        "cache_mib": cache_mib,
        "mmap_mib": mmap_mib,
        "search": search,
        "search_worst_case": {k: summary(v) for k, v in worst_ms.items()},
        "history": summary(hist_ms),
        "since": summary(since_ms),
        "append": summary(append_ms),
        "sqlite": sqlite3.sqlite_version,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages to store")
    parser.add_argument("--rooms", type=int, default=100, help="rooms (the first gets half)")
    parser.add_argument("--searches", type=int, default=500, help="searches to time")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache-mib", type=int, default=4, help="SQLite page cache (chat.db_cache_mib)")
    parser.add_argument("--mmap-mib", type=int, default=0, help="SQLite memory map, 0 = none (chat.db_mmap_mib)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.rooms < 1 or args.searches < 1:
        parser.error("--messages, --rooms and --searches must be positive")
    result = run(args.messages, args.rooms, args.searches, args.seed, quiet=args.json,
                 cache_mib=args.cache_mib, mmap_mib=args.mmap_mib)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['messages']:,} messages in {result['rooms']} rooms: built in "
          f"{result['build_seconds']} s ({result['build_rows_per_second']:,}/s), "
          f"{result['db_megabytes']} MB on disk")
    print(f"{'':17} {'count':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'hits':>6}")
    rows = [(f"search {k}", v) for k, v in result["search"].items()]
    rows += [(f"worst {k}", v) for k, v in result["search_worst_case"].items()]
    rows += [("history", result["history"]), ("since", result["since"]), ("append", result["append"])]
    for name, s in rows:
        print(f"{name:17} {s['count']:>6} {s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f} {s['max_ms']:>8.2f}"
              f" {s.get('mean_hits', ''):>6}")
    print(f"SQLite {result['sqlite']} (cache {result['cache_mib']} MiB, memory map {result['mmap_mib']} MiB), "
          f"Python {result['python']}, {result['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
