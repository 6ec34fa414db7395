"""Chat images: upload validation, re-encoding without metadata, storage and image messages.

Unit tests of worldserver.chat.images (type from the content, Pillow verify, truncation,
EXIF stripped with the orientation applied, animations, pixel budget) and HTTP tests of
``POST /api/chat/images`` / ``GET /api/chat/images/{id}`` against the real app and chat service,
including sending an image message over ``/ws/chat``. Must not: reach any address but
127.0.0.1 or wait without a deadline.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from chat_support import start_chat_server
from worldclient.chat_client import ChatRequestError, open_chat
from worldserver.chat import images as I

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
    statuses = [(await upload(server, token, picture("PNG"))).status_code for _ in range(7)]
    assert statuses[:5] == [201] * 5 and statuses[-1] == 429
    response = await upload(server, token, picture("PNG"))
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
