"""Start-up image verification without a pixel decode (aicore/data/verify.py)."""
import cv2
import numpy as np
import pytest

from aicore.data.verify import check_image, jpeg_ok, png_ok
from aicore.errors import DataError


def _encoded(ext: str) -> bytes:
    img = np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    ok, enc = cv2.imencode(ext, img)
    assert ok
    return enc.tobytes()


def test_png_structure():
    data = _encoded(".png")
    assert png_ok(data)
    assert not png_ok(data[:-20])  # truncated
    flipped = bytearray(data)
    flipped[60] ^= 0xFF  # inside the compressed pixel data: its CRC no longer matches
    assert not png_ok(bytes(flipped))
    assert not png_ok(b"\x89PNG\r\n\x1a\n this is not really a png")


def test_jpeg_structure():
    data = _encoded(".jpg")
    assert jpeg_ok(data) and not jpeg_ok(data[: len(data) // 2])


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp"])
def test_check_image_accepts_good_and_refuses_broken(tmp_path, ext):
    good, bad = tmp_path / f"good{ext}", tmp_path / f"bad{ext}"
    good.write_bytes(_encoded(ext))
    bad.write_bytes(_encoded(ext)[:30])
    check_image(good)
    with pytest.raises(DataError, match="corrupt"):
        check_image(bad)


def test_misnamed_image_still_accepted(tmp_path):
    """A file OpenCV reads is never refused: a JPEG named .png fails the PNG check and is
    then decoded, which succeeds."""
    path = tmp_path / "really_a_jpeg.png"
    path.write_bytes(_encoded(".jpg"))
    assert not png_ok(path.read_bytes())
    check_image(path)
