"""Chat images: upload validation, re-encoding without metadata, storage and image messages.

Unit tests of worldserver.chat.images (type from the content, Pillow verify, truncation,
EXIF stripped with the orientation applied, animations, pixel budget, the structure walks that
count frames x canvas before decoding) and of worldserver.chat.image_pool with real worker
processes (bombs refused, a worker over its memory or CPU limit, a hung, crashed, lying or
too talkative worker, a full pool), and HTTP tests of ``POST /api/chat/images`` /
``GET /api/chat/images/{id}`` against the real app and chat service, including sending an
image message over ``/ws/chat``. The bombs are built byte by byte (the 154-byte GIF of issue 8
among them) by the builders of tools/attack/image_bomb.py. Stand-in worker programs
(``python -c``) play the workers that misbehave, which a real upload cannot make happen on
cue. Must not: reach any address but 127.0.0.1 or wait without a deadline.
"""

from __future__ import annotations

import io
import os
import resource
import sys

import pytest
import trio
import trio.testing
from PIL import Image

from chat_support import start_chat_server
from tools.attack.image_bomb import bombs, gif_bomb, png_declaring, webp_bomb
from worldclient.chat_client import ChatRequestError, open_chat
from worldserver.chat import images as I
from worldserver.chat.image_pool import ImageWorkers
from worldserver.stats import Stats

EXIF_ORIENTATION = 0x0112
EXIF_MAKE = 0x010F


def picture(fmt: str, size=(40, 20), mode="RGB", exif: bool = False, **save) -> bytes:
    img = Image.new(mode, size, (200, 30, 30) if mode == "RGB" else None)
    for x in range(size[0] // 2):  # the left half is blue: orientation can be checked
        for y in range(size[1]):
            img.putpixel((x, y), (20, 40, 220) if mode == "RGB" else 1)
    out = io.BytesIO()
    if exif:
        data = Image.Exif()
        data[EXIF_MAKE] = "SecretCam GPS 37.5N 127.0E"
        data[EXIF_ORIENTATION] = 6  # rotate 90 degrees clockwise to display
        save["exif"] = data.tobytes()
    img.save(out, fmt, **save)
    return out.getvalue()


def animated_gif(frames: int = 3) -> bytes:
    images = [Image.new("RGB", (16, 16), (i * 80, 0, 0)) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], duration=120, loop=0)
    return out.getvalue()


# issue 8: the 5-frame GIF was accepted after 9.5 s and took the server from 120 MB to 2 GB;
# the 300-frame one (6.9 KB) took 7 s and 800 MB.
EXPECTED = {
    "gif_5_frames_6324x6324": (413, "too_many_pixels"),
    "gif_300_frames_666x1000": (413, "too_many_pixels"),
    "gif_2000_frames_16x16": (413, "too_many_frames"),
    "gif_frame_off_canvas": (413, "too_many_pixels"),
    "png_100000x100000": (413, "too_many_pixels"),
    "webp_3_frames_6000x6000": (413, "too_many_pixels"),
    "webp_canvas_16384x16384": (413, "too_many_pixels"),
}
BOMBS = {name: (data, *EXPECTED[name]) for name, data in bombs().items()}


def rss_bytes() -> int:
    """This process's resident memory now."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- unit --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, ext", [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("GIF", "gif")])
def test_each_format_is_accepted_and_reencoded(fmt, ext) -> None:
    clean = I.process_image(picture(fmt), 10**6)
    assert clean.format == fmt and clean.ext == ext and (clean.width, clean.height) == (40, 20)
    assert I.sniff(clean.data) == fmt
    with Image.open(io.BytesIO(clean.data)) as img:
        img.load()
        assert img.size == (40, 20)


def test_exif_is_stripped_and_orientation_applied() -> None:
    original = picture("JPEG", exif=True)
    assert b"SecretCam" in original
    clean = I.process_image(original, 10**6)
    assert b"SecretCam" not in clean.data and b"Exif" not in clean.data
    assert (clean.width, clean.height) == (20, 40)  # turned as the orientation said
    with Image.open(io.BytesIO(clean.data)) as img:
        assert not img.getexif()
        top = img.convert("RGB").getpixel((10, 5))
        assert top[2] > 150  # the blue half is on top now


def test_png_text_chunks_and_icc_are_dropped() -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "home address: 1 Secret Street")
    data = picture("PNG", pnginfo=info, icc_profile=b"\0" * 200)
    assert b"Secret Street" in data
    clean = I.process_image(data, 10**6)
    assert b"Secret Street" not in clean.data and b"iCCP" not in clean.data


def test_lies_and_damage_are_refused() -> None:
    with pytest.raises(I.ImageRejected) as info:
        I.process_image(b"just some text, named cat.png", 10**6)
    assert info.value.code == "unsupported_type" and info.value.status == 415
    png = picture("PNG", size=(300, 200))
    with pytest.raises(I.ImageRejected) as info:
        I.process_image(png[: len(png) // 2], 10**6)
    assert info.value.code == "corrupt" and "PNG" in info.value.message
    jpeg = picture("JPEG", size=(300, 200))
    with pytest.raises(I.ImageRejected) as info:
        I.process_image(jpeg[: len(jpeg) // 2], 10**6)
    assert info.value.code == "corrupt"
    with pytest.raises(I.ImageRejected) as info:  # PNG magic, then garbage
        I.process_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, 10**6)
    assert info.value.code == "corrupt"
    with pytest.raises(I.ImageRejected) as info:
        I.process_image(b"", 10**6)
    assert info.value.code == "empty"
    with pytest.raises(I.ImageRejected) as info:
        I.process_image(png, 100)
    assert info.value.code == "too_large" and info.value.status == 413


def test_pixel_bombs_are_refused_before_decoding() -> None:
    out = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(out, "PNG")  # tiny file, 100 megapixels
    data = out.getvalue()
    assert len(data) < 100_000
    with pytest.raises(I.ImageRejected) as info:
        I.process_image(data, 10**6)
    assert info.value.code == "too_many_pixels"


def test_the_bomb_builders_make_images_pillow_accepts() -> None:
    """Small versions of the bombs are real images: the refusals below are the budget's."""
    assert len(gif_bomb((6324, 6324), 5)) == 154  # the size of issue 8's file
    for data, fmt in ((gif_bomb((16, 16), 5), "GIF"), (webp_bomb((16, 16), 5), "WEBP")):
        clean = I.process_image(data, 10**6)
        assert clean.format == fmt and clean.frames == 5 and (clean.width, clean.height) == (16, 16)
        with Image.open(io.BytesIO(clean.data)) as img:  # (equal frames may be merged)
            img.load()
            assert img.format == fmt and img.size == (16, 16)


def test_structure_walks_count_frames_and_canvas_without_decoding() -> None:
    assert I.measure(gif_bomb((6324, 6324), 5), "GIF") == I.Shape(6324, 6324, 5)
    assert I.measure(gif_bomb((10, 10), 3, offset=(500, 7)), "GIF") == I.Shape(501, 10, 3)
    assert I.measure(gif_bomb((16, 16), 5000), "GIF", max_frames=300).frames == 301  # stops early
    assert I.measure(animated_gif(4), "GIF") == I.Shape(16, 16, 4)  # Pillow's own file
    junk = gif_bomb((16, 16), 2)
    junk = junk[:-1] + b"stray bytes" + junk[19 + 19:]  # two more frames after garbage
    assert I.measure(junk, "GIF").frames == 4
    assert I.measure(webp_bomb((6000, 6000), 3), "WEBP") == I.Shape(6000, 6000, 3)
    assert I.measure(picture("WEBP"), "WEBP") == I.Shape(40, 20, 1)  # lossy still (VP8)
    assert I.measure(picture("WEBP", lossless=True), "WEBP") == I.Shape(40, 20, 1)  # VP8L
    assert I.measure(png_declaring(100_000, 3), "PNG") == I.Shape(100_000, 3, 1)
    assert I.measure(picture("JPEG"), "JPEG") is None  # Pillow reads it without allocating
    for truncated in (b"GIF89a", b"RIFF\0\0\0\0WEBP", b"\x89PNG\r\n\x1a\n"):
        assert I.measure(truncated, I.sniff(truncated)) is None


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bombs_are_refused_before_decoding(name) -> None:
    data, status, code = BOMBS[name]
    with pytest.raises(I.ImageRejected) as info:
        I.process_image(data, 10**6)
    assert (info.value.status, info.value.code) == (status, code)


def test_limits_are_the_callers() -> None:
    three = animated_gif(3)
    with pytest.raises(I.ImageRejected) as info:
        I.process_image(three, 10**6, I.ImageLimits(max_frames=2))
    assert info.value.code == "too_many_frames"
    with pytest.raises(I.ImageRejected) as info:
        I.process_image(three, 10**6, I.ImageLimits(max_total_pixels=3 * 16 * 16 - 1))
    assert info.value.code == "too_many_pixels"
    assert I.process_image(three, 10**6, I.ImageLimits(max_total_pixels=3 * 16 * 16)).frames == 3


def test_animation_keeps_its_frames() -> None:
    clean = I.process_image(animated_gif(3), 10**6)
    assert clean.format == "GIF" and clean.frames == 3
    with Image.open(io.BytesIO(clean.data)) as img:
        assert img.n_frames == 3


def test_image_files(tmp_path) -> None:
    files = I.ImageFiles(tmp_path / "chat-images")
    clean = I.process_image(picture("PNG"), 10**6)
    image_id = files.save(clean)
    assert I.IMAGE_ID_RE.fullmatch(image_id)
    path, ctype = files.find(image_id)
    assert path == tmp_path / "chat-images" / f"{image_id}.png" and ctype == "image/png"
    assert path.read_bytes() == clean.data
    assert files.find("../../etc/passwd") is None and files.find("A" * 22) is None
    assert [p.name for p in (tmp_path / "chat-images").iterdir()] == [f"{image_id}.png"]


# -- worker processes --------------------------------------------------------------------------

PY = sys.executable


def stand_in(code: str) -> list[str]:
    """A worker program that misbehaves as ``code`` says."""
    return [PY, "-c", code]


HANG = "import sys, time; sys.stdin.buffer.read(); time.sleep(3600)"


async def test_workers_make_clean_images_and_refuse_bombs() -> None:
    stats = Stats()
    pool = ImageWorkers(max_bytes=10**6, stats=stats)
    clean = await pool.process(picture("JPEG", exif=True))
    assert clean.format == "JPEG" and (clean.width, clean.height) == (20, 40)
    assert b"SecretCam" not in clean.data
    for name in ("gif_5_frames_6324x6324", "webp_3_frames_6000x6000"):
        data, status, code = BOMBS[name]
        with pytest.raises(I.ImageRejected) as info:
            await pool.process(data)
        assert (info.value.status, info.value.code) == (status, code)
    assert pool.running == set()


async def test_a_worker_over_its_memory_limit_is_refused_and_the_server_keeps_its_memory() -> None:
    out = io.BytesIO()
    Image.new("RGB", (4000, 4000), (1, 2, 3)).save(out, "PNG")  # 56 KB; 64 MB once decoded
    data = out.getvalue()
    stats = Stats()
    small = ImageWorkers(max_bytes=10**6, memory_mb=16, stats=stats)
    rss, peak = rss_bytes(), peak_rss_bytes()
    with pytest.raises(I.ImageRejected) as info:
        await small.process(data)
    assert (info.value.status, info.value.code) == (413, "too_much_memory")
    assert stats.get("drop.chat_image_worker_memory") == 1 and small.running == set()
    # Decoding here would have taken 64 MB; the server grew by less than half of that.
    assert rss_bytes() - rss < 32 * 2**20 and peak_rss_bytes() - peak < 32 * 2**20
    clean = await ImageWorkers(max_bytes=10**6, stats=stats).process(data)  # the default limit
    assert (clean.width, clean.height) == (4000, 4000)  # so the image itself was fine


async def test_a_worker_over_its_cpu_limit_is_refused() -> None:
    stats = Stats()
    spin = ("import sys; from worldserver.chat.image_worker import limit_self; limit_self(64, 1);"
            " sys.stdin.buffer.read()\nwhile True: pass")
    pool = ImageWorkers(max_bytes=10**6, cpu_seconds=1, stats=stats, command=stand_in(spin))
    with pytest.raises(I.ImageRejected) as info:
        await pool.process(picture("PNG"))
    # The kernel's SIGXCPU after one CPU second, or the wall deadline on a crowded machine.
    assert info.value.code == "too_slow"
    assert stats.get("drop.chat_image_worker_timeout") == 1 and pool.running == set()


async def test_a_hung_worker_is_killed_at_the_deadline(autojump_clock) -> None:
    stats = Stats()
    pool = ImageWorkers(max_bytes=10**6, cpu_seconds=5, stats=stats, command=stand_in(HANG))
    start = trio.current_time()
    with pytest.raises(I.ImageRejected) as info:
        await pool.process(picture("PNG"))
    assert (info.value.status, info.value.code) == (422, "too_slow")
    assert trio.current_time() - start == pytest.approx(pool.deadline_seconds)
    assert stats.get("drop.chat_image_worker_timeout") == 1 and pool.running == set()


@pytest.mark.parametrize(
    "code, status, error, counter",
    [
        ("import os; os.abort()", 422, "decode_failed", "drop.chat_image_worker_failed"),
        ("import sys; sys.stdout.write('{\"ok\": true, \"format\": \"EXE\", \"width\": 1,"
         " \"height\": 1, \"frames\": 1, \"bytes\": 0}\\n')", 422, "decode_failed",
         "drop.chat_image_worker_failed"),
        ("import sys; sys.stdout.write('{\"ok\": false, \"code\": \"Evil Code\"}\\n')", 422,
         "decode_failed", "drop.chat_image_worker_failed"),
        ("import sys; sys.stdout.write('[' * 2000 + ']' * 2000 + '\\n')", 422, "decode_failed",
         "drop.chat_image_worker_failed"),  # a header nested deeper than json.loads recurses
        ("import os; os._exit(75)", 413, "too_much_memory", "drop.chat_image_worker_memory"),
        ("import sys\nwhile True: sys.stdout.buffer.write(b'x' * 65536)", 413, "too_large",
         "drop.chat_image_output_too_large"),
    ],
)
async def test_workers_that_crash_lie_or_talk_too_much_are_refused(code, status, error, counter) -> None:
    stats = Stats()
    pool = ImageWorkers(max_bytes=4096, stats=stats, command=stand_in(code))
    with pytest.raises(I.ImageRejected) as info:
        await pool.process(picture("PNG"))
    assert (info.value.status, info.value.code) == (status, error)
    assert stats.get(counter) == 1 and pool.running == set()


async def test_a_full_pool_refuses_at_once() -> None:
    stats = Stats()
    pool = ImageWorkers(max_bytes=10**6, workers=1, cpu_seconds=600, stats=stats, command=stand_in(HANG))
    refused = []

    async def upload() -> None:
        try:
            await pool.process(picture("PNG"))
        except I.ImageRejected as exc:
            refused.append(exc.code)

    async with trio.open_nursery() as nursery:
        for _ in range(1 + pool.max_waiting):  # one runs, the others wait (for up to 600 s)
            nursery.start_soon(upload)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(I.ImageRejected) as info:
            await pool.process(picture("PNG"))
        assert (info.value.status, info.value.code) == (503, "busy")
        assert refused == [] and stats.get("drop.chat_image_busy") == 1
        nursery.cancel_scope.cancel()  # a cancelled upload takes its worker with it
    assert pool.running == set()


async def test_waiting_for_a_worker_has_a_deadline(autojump_clock) -> None:
    stats = Stats()
    pool = ImageWorkers(max_bytes=10**6, workers=1, cpu_seconds=5, stats=stats, command=stand_in(HANG))
    outcomes = []

    async def upload() -> None:
        try:
            await pool.process(picture("PNG"))
        except I.ImageRejected as exc:
            outcomes.append((exc.code, trio.current_time()))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(upload)
    # Two waited wait_seconds and gave up; the one that ran hung until its deadline.
    assert sorted(code for code, _ in outcomes) == ["busy", "busy", "too_slow"]
    assert [t for code, t in outcomes if code == "busy"] == [pool.wait_seconds] * 2
    assert stats.get("drop.chat_image_busy") == 2 and pool.running == set()


# -- HTTP and WebSocket ------------------------------------------------------------------------


@pytest.fixture
async def server(nursery, tmp_path):
    return await start_chat_server(nursery, tmp_path, **{"chat.max_image_bytes": "200000"})


async def upload(server, token, data: bytes, content_type="image/png"):
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with server.http() as http:
        return await http.post("/api/chat/images", content=data, headers=headers)


async def test_upload_download_and_send(server, tmp_path) -> None:
    token = await server.join("painter")
    response = await upload(server, token, picture("PNG", exif=False))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["type"] == "image/png" and (body["width"], body["height"]) == (40, 20)
    image_id = body["id"]
    assert (tmp_path / "data" / "chat-images" / f"{image_id}.png").is_file()
    async with server.http() as http:
        got = await http.get(f"/api/chat/images/{image_id}")
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.content.startswith(b"\x89PNG")
        assert (await http.get("/api/chat/images/AAAAAAAAAAAAAAAAAAAAAA")).status_code == 404
        assert (await http.get("/api/chat/images/..%2F..%2Fchat.sqlite3")).status_code == 404
    async with open_chat(server.url, token) as chat:
        lobby = chat.public_room
        message = await chat.send(lobby, "my painting", kind="image", image=image_id)
        assert message["kind"] == "image" and message["image"] == image_id
        history, _ = await chat.history(lobby)
        assert history[-1]["image"] == image_id and history[-1]["text"] == "my painting"
        with pytest.raises(ChatRequestError) as info:
            await chat.send(lobby, kind="image", image="B" * 22)
        assert info.value.code == "not_found"


async def test_a_jpeg_named_png_is_stored_as_jpeg(server, tmp_path) -> None:
    token = await server.join("namer")
    response = await upload(server, token, picture("JPEG", exif=True), content_type="image/png")
    assert response.status_code == 201
    body = response.json()
    assert body["type"] == "image/jpeg"
    assert (tmp_path / "data" / "chat-images" / f"{body['id']}.jpg").is_file()
    async with server.http() as http:
        got = await http.get(body["url"])
    assert got.headers["content-type"] == "image/jpeg" and got.content.startswith(b"\xff\xd8\xff")
    assert b"SecretCam" not in got.content


@pytest.mark.parametrize(
    "data, status, code",
    [
        (b"hello, I am text in a file called photo.png", 415, "unsupported_type"),
        (picture("PNG", size=(200, 100))[:300], 422, "corrupt"),
        (b"GIF89a" + b"\x00" * 50, 422, "corrupt"),
        (b"", 400, "empty"),
    ],
)
async def test_bad_uploads_get_clear_errors(server, data, status, code) -> None:
    token = await server.join("liar")
    response = await upload(server, token, data)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code and response.json()["error"]
    assert server.stats.get("drop.chat_image_rejected") == 1
    ok = await upload(server, token, picture("GIF"), content_type="image/gif")  # the server is fine
    assert ok.status_code == 201


@pytest.mark.parametrize("name", ["gif_5_frames_6324x6324", "gif_300_frames_666x1000",
                                  "png_100000x100000", "webp_3_frames_6000x6000"])
async def test_bomb_uploads_are_refused_and_cost_the_server_nothing(server, name) -> None:
    data, status, code = BOMBS[name]
    token = await server.join("bomber")
    rss = rss_bytes()
    response = await upload(server, token, data, content_type="image/gif")
    assert response.status_code == status, response.text
    assert response.json()["code"] == code and response.json()["error"]
    assert server.stats.get("drop.chat_image_rejected") == 1
    assert rss_bytes() - rss < 32 * 2**20  # issue 8's GIF took 2 GB
    assert server.chat.image_workers.running == set()
    ok = await upload(server, token, picture("GIF"), content_type="image/gif")
    assert ok.status_code == 201


async def test_a_full_pool_refuses_uploads_before_reading_them(server) -> None:
    token = await server.join("queuer")
    server.chat.image_workers.max_waiting = 0  # as if the waiting room were full
    response = await upload(server, token, picture("PNG"))
    assert response.status_code == 503 and response.json()["code"] == "busy"
    assert response.headers["retry-after"] == "1"
    assert server.stats.get("drop.chat_image_busy") == 1
    assert server.stats.get("drop.chat_image_rejected") == 1


async def test_upload_needs_a_token_and_a_small_body(server) -> None:
    response = await upload(server, None, picture("PNG"))
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    response = await upload(server, "not-a-token", picture("PNG"))
    assert response.status_code == 401
    token = await server.join("heavy")
    response = await upload(server, token, b"\x89PNG\r\n\x1a\n" + bytes(300_000))
    assert response.status_code == 413 and response.json()["code"] == "too_large"


async def test_uploads_are_rate_limited(server) -> None:
    token = await server.join("uploader")
    # A bucket that does not refill within the test: the burst, not the machine's speed
    # (each upload runs a worker process), decides which uploads pass.
    server.chat.uploads.rate = 1e-6
    statuses = [(await upload(server, token, picture("PNG"))).status_code for _ in range(7)]
    assert statuses == [201] * 5 + [429] * 2
    response = await upload(server, token, picture("PNG"))
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
