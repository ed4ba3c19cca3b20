"""Safe image decoding for untrusted payloads.

Validators send base64-encoded JPEGs, but a miner is an open network service: the
payload may be empty, not base64, not an image, truncated, a decompression bomb,
or an unusual mode (CMYK, 16-bit, palette, alpha, animated). Everything here turns
such input into either an RGB ``PIL.Image`` or an ``ImageDecodeError`` with a short
reason, enforcing size limits *before* the pixels are decoded:

* the base64 text is length-checked before it is decoded (``max_b64_chars``);
* only common still-image formats are parsed at all (``formats``): Pillow can open
  dozens of exotic formats (EPS even runs Ghostscript) that no validator sends;
* the declared width x height is checked from the header, before any pixel buffer is
  allocated (``max_pixels``), and Pillow's own bomb guard ``Image.MAX_IMAGE_PIXELS`` is
  set to the same limit (``apply_pil_limit``) so code paths that skip us are bounded too;
* the container structures that Pillow parses in Python, one block at a time, are counted
  first by cheap walks and refused above generous caps: JPEG marker segments and scans,
  PNG chunks (``check_png_chunks``), GIF extension blocks, sub-blocks and stray bytes
  (``check_gif_blocks``), TIFF strips and tiles (``check_tiff_strips``); a crafted file of a
  million tiny blocks would otherwise hold a decode thread for seconds;
* alpha is flattened in bands of rows (``_to_rgb``), so a large transparent picture costs
  its decoded pixels and the RGB result, not four more full-size copies;
* whatever a malformed file makes a decoder raise becomes ``ImageDecodeError``, so a
  hostile payload is logged as bad input, never as a crash with a traceback.
"""
from __future__ import annotations

import base64
import binascii
import functools
import io
import logging
import re
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

#: Largest base64 payload accepted by default (characters). A 4K JPEG at high quality
#: is a few MB; 16 MiB of base64 is ~12 MiB of bytes.
DEFAULT_MAX_B64_CHARS = 16 * 1024 * 1024
#: Largest decoded image accepted by default (pixels): admits 8K (7680x4320 = 33 MP).
DEFAULT_MAX_PIXELS = 40_000_000
#: Formats parsed by default: what validators and image datasets use (multi-picture
#: JPEGs, MPO, are opened by the JPEG plugin).
DEFAULT_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
#: Most scans (start-of-scan markers) accepted in a JPEG. Encoders write 1 (baseline) to a
#: few dozen (progressive); libjpeg runs every scan of a progressive file over every block,
#: repeated ones included, so 0.42 MiB of repeated tiny scans took 9.5 s to decode (16 MiB:
#: minutes per request, holding a decode thread). libjpeg-turbo's own tools refuse over 500.
DEFAULT_MAX_JPEG_SCANS = 100


class ImageDecodeError(ValueError):
    """The payload is not an image we can (or are willing to) decode."""


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds enforced before full decoding."""

    max_b64_chars: int = DEFAULT_MAX_B64_CHARS
    max_pixels: int = DEFAULT_MAX_PIXELS
    formats: tuple[str, ...] | None = DEFAULT_FORMATS  # None: any format Pillow knows
    max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS


def apply_pil_limit(limits: DecodeLimits) -> None:
    """Set Pillow's process-wide bomb guard to ``limits.max_pixels``.

    Pillow warns above ``Image.MAX_IMAGE_PIXELS`` and refuses above twice that, in
    ``Image.open`` itself. Keeping it equal to our limit means a larger configured
    limit really admits larger images, and a smaller one also bounds code paths that
    open images without ``decode_image``. Called at import with the defaults, and by the
    miner with its configured limits.
    """
    Image.MAX_IMAGE_PIXELS = int(limits.max_pixels)


apply_pil_limit(DecodeLimits())
# Pillow warns (DecompressionBombWarning) when a header declares more than the limit, one
# warning per distinct size: a stream of hostile headers would flood the log. We refuse
# those images ourselves, from the header, with a logged reason; the warning adds nothing.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def b64_to_bytes(data: str, limits: DecodeLimits = DecodeLimits()) -> bytes:
    """Strictly decode base64 text (standard alphabet, optional data-URI prefix)."""
    if not isinstance(data, (str, bytes)):
        raise ImageDecodeError(f"image payload must be a base64 string, got {type(data).__name__}")
    if not data:
        raise ImageDecodeError("empty image payload")
    if len(data) > limits.max_b64_chars:
        raise ImageDecodeError(f"payload of {len(data)} chars exceeds limit {limits.max_b64_chars}")
    if isinstance(data, str):
        if data.startswith("data:") and "," in data[:100]:
            data = data.split(",", 1)[1]
        try:
            data = data.encode("ascii")
        except UnicodeEncodeError as e:
            raise ImageDecodeError("payload is not base64 (non-ASCII characters)") from e
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageDecodeError(f"invalid base64: {e}") from e


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing alpha on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _WIDE_MODES:
        return _wide_to_rgb(img)
    if (mode == "P" and "transparency" in img.info) or mode in _ALPHA_MODES:
        return _flatten_alpha(img)
    return img.convert("RGB")


#: Pixels converted at a time by ``_flatten_alpha`` and ``_wide_to_rgb``: 256 Kpx bands cost
#: ~5 MB of scratch, and no more time than larger ones.
_BAND_PIXELS = 1 << 18


def _row_bands(img: Image.Image) -> list[tuple[int, int, int, int]]:
    """``img``'s crop boxes of whole rows, ``_BAND_PIXELS`` or so each, top to bottom."""
    w, h = img.size
    rows = max(1, _BAND_PIXELS // max(w, 1))
    return [(0, top, w, min(top + rows, h)) for top in range(0, h, rows)]


#: Single-channel modes of more than 8 bits (16-bit integers, 32-bit integers and floats).
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _wide_to_rgb(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float single-channel picture as 8-bit grey RGB, scaled from its
    range: 16-bit from 0-65535; 32-bit integers from 0-65535 if any value exceeds 255, else as
    8-bit levels; floats from 0-1 if no value exceeds 1, else like the integers; NaN as 0.

    Converted one band of rows at a time (``_row_bands``): the whole picture as a
    float32 array, its uint8 copy and the grey picture cost 9 bytes a pixel besides the
    decoded pixels and the RGB result, so a blank 40 Mpx 16-bit PNG of 100 KB peaked at
    +433 MB per request and twelve concurrent ones took the miner from 0.8 to 2.9 GB
    (operator review); in bands the scratch is one band."""
    bands = _row_bands(img)
    if img.mode == "F":  # the largest finite value, band by band (getextrema says NaN after one NaN pixel)
        top = 0.0
        for box in bands:
            band = np.asarray(img.crop(box), dtype=np.float32)
            finite = band[np.isfinite(band)]
            top = max(top, float(finite.max())) if finite.size else top
    else:
        top = float(img.getextrema()[1])  # in C, no copy
    if img.mode.startswith("I;16") or top > 255:
        hi = 65535.0
    elif img.mode == "F" and top <= 1.0:
        hi = 1.0
    else:
        hi = 255.0
    grey = Image.new("L", img.size)
    scale, half = np.float32(255.0 / hi), np.float32(0.5)
    for box in bands:
        band = np.array(img.crop(box), dtype=np.float32)
        np.nan_to_num(band, copy=False, nan=0.0, posinf=hi, neginf=0.0)
        band *= scale
        band += half
        np.clip(band, 0, 255, out=band)
        grey.paste(Image.fromarray(band.astype(np.uint8), "L"), box[:2])
    return grey.convert("RGB")


#: Modes whose alpha ``_to_rgb`` composites on white (and P with a transparent colour).
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _composite_on_white(img: Image.Image) -> Image.Image:
    if img.mode == "P":  # with a transparent colour
        img = img.convert("RGBA")
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite an image with alpha on white, to RGB, one band of rows at a time.

    Done on the whole picture, compositing makes four full-size copies (RGBA copy, white
    background, composite, RGB): a blank 40 Mpx RGBA PNG of 150 KB peaked at +770 MB with
    its decoded pixels, +310 MB in bands. Compositing is per pixel, so bands give the same
    bytes while the scratch stays at one band; what remains is the decoded picture and the
    RGB result (Pillow keeps both at 4 bytes a pixel)."""
    bands = _row_bands(img)
    if len(bands) <= 1:
        return _composite_on_white(img)
    out = Image.new("RGB", img.size)
    for box in bands:
        out.paste(_composite_on_white(img.crop(box)), box[:2])
    return out


@functools.lru_cache(maxsize=16)
def _pillow_formats(formats: tuple[str, ...] | None) -> list[str] | None:
    """``formats`` that this Pillow can open (Image.open raises KeyError on unknown names)."""
    if formats is None:
        return None
    Image.init()
    return [f for f in formats if f in Image.OPEN]


#: The next marker between segments, as libjpeg finds it: stray bytes, fill bytes (FF FF)
#: and stuffed zeros (FF 00) before it are skipped, with a warning there, here in silence.
_JPEG_MARKER = re.compile(rb"\xff([^\x00\xff])")
#: The end of a scan's entropy-coded data: the first marker that is not a stuffed zero
#: (FF 00), a fill byte or a restart marker (FF D0-D7).
_JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
#: Most marker segments walked: a real file has a few dozen (APPn, DQT, DHT, SOF, SOS ...).
MAX_JPEG_SEGMENTS = 10_000


def jpeg_scans(raw: bytes, stop_above: int = 1 << 30) -> int:
    """The start-of-scan segments of the first picture in JPEG bytes, found the way libjpeg
    reads them: from marker to marker (stray bytes, fill bytes and stuffed zeros between
    segments skipped), a segment's content skipped by its length (so an EXIF thumbnail's
    scans are not counted), a scan's entropy-coded data skipped to its first real marker;
    stops at the end-of-image marker (data after it, a motion photo's video or MPO frames,
    does not count) and as soon as the count passes ``stop_above``. Searches run in C
    (``re``), so 16 MiB of hostile bytes cost milliseconds; more than ``MAX_JPEG_SEGMENTS``
    segments is refused (``ImageDecodeError``) rather than walked."""
    n, i, size, segments = 0, 2, len(raw), 0
    while n <= stop_above:
        m = _JPEG_MARKER.search(raw, i)
        if m is None:
            break
        marker, i = m.group(1)[0], m.end()
        if marker == 0xD9:  # end of image
            break
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise ImageDecodeError(f"JPEG with more than {MAX_JPEG_SEGMENTS} marker segments")
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            continue
        if i + 1 >= size:
            break
        i += int.from_bytes(raw[i:i + 2], "big")  # the length counts its own two bytes
        if marker == 0xDA:
            n += 1
            m = _JPEG_SCAN_END.search(raw, i)
            if m is None:
                break
            i = m.start()
    return n


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Most chunks other than image data (IDAT, fdAT) walked in a PNG. Pillow reads every chunk
#: in Python, those before the image data when it opens the file, those after when it loads
#: it: 12 MiB of empty private chunks (a million) held a decode thread ~3 s. Real files have
#: tens (IHDR, PLTE, gAMA, cHRM, iCCP, tEXt/iTXt, eXIf, tIME, IEND ...); an animated PNG adds
#: one fcTL a frame. 10 000 is far above any real picture and costs Pillow ~30 ms.
MAX_PNG_CHUNKS = 10_000
#: Image data chunks (IDAT, fdAT) are many in real files, but each carries data: encoders split
#: the zlib stream into chunks of 8 KiB (libpng's default) to 64 KiB (Pillow) or write one.
#: Allowed: MAX_PNG_CHUNKS plus one per this many bytes of file, so 8 KiB chunks up to the
#: payload limit (~1 500) and even 1 KiB ones pass, while a file of empty IDATs is refused.
PNG_BYTES_PER_DATA_CHUNK = 1024
_PNG_CHUNK_HEADER = struct.Struct(">I4s")


def check_png_chunks(raw: bytes) -> None:
    """Walk the chunk list of PNG bytes (length and type of each, no data read, no CRC or
    decompression) up to IEND; raise ``ImageDecodeError`` as soon as there are more than
    ``MAX_PNG_CHUNKS`` chunks besides image data, or more image data chunks (IDAT, fdAT)
    than ``MAX_PNG_CHUNKS + len(raw) // PNG_BYTES_PER_DATA_CHUNK``. A truncated or malformed
    list just ends the walk: Pillow reports it. At most ~35 000 steps, a few milliseconds."""
    size, i = len(raw), len(_PNG_SIGNATURE)
    max_data = MAX_PNG_CHUNKS + size // PNG_BYTES_PER_DATA_CHUNK
    other = data = 0
    while i + 8 <= size:
        length, cid = _PNG_CHUNK_HEADER.unpack_from(raw, i)
        if cid == b"IDAT" or cid == b"fdAT":
            data += 1
            if data > max_data:
                raise ImageDecodeError(f"PNG with more than {max_data} image data chunks (IDAT/fdAT) "
                                       f"in {size} bytes exceeds the limit")
        elif cid == b"IEND":
            break
        else:
            other += 1
            if other > MAX_PNG_CHUNKS:
                raise ImageDecodeError(f"PNG with more than {MAX_PNG_CHUNKS} chunks besides image data "
                                       f"(last {cid!r}) exceeds the limit")
        i += 12 + length  # length, type, data, CRC


#: GIF limits. Pillow parses a GIF in Python up to the image descriptor of the frame it
#: decodes, the first (``open_image`` never seeks further; later blocks cost nothing), one
#: extension, one sub-block, one stray byte at a time: 2.4 million comment blocks took 2 s and
#: +450 MB (each kept as a bytes object); 6 million sub-blocks in one extension, or 12 MB of
#: stray bytes between blocks, took 2 s too. Real GIFs have a few extensions before the first
#: image (NETSCAPE loop, graphic control, maybe comment, XMP, ICC profile): at most 10 000.
MAX_GIF_EXTENSIONS = 10_000
#: Sub-blocks of those extensions: comments and ICC profiles use 255-byte sub-blocks, XMP
#: (which uses its text bytes as lengths) ~40-byte ones: 100 000 is megabytes of metadata.
MAX_GIF_SUB_BLOCKS = 100_000
#: Bytes between blocks that are none of extension, image, trailer: encoders write none
#: (Pillow skips them one by one; a stray zero after image data is the odd real case).
MAX_GIF_STRAY_BYTES = 10_000
_GIF_BLOCK_START = re.compile(rb"[!,;]")


def check_gif_blocks(raw: bytes) -> None:
    """Walk GIF bytes the way Pillow reads them to its first image: header, logical screen
    descriptor, global colour table, then extension blocks with their sub-block chains, stray
    bytes skipped, until an image descriptor or the trailer. Raise ``ImageDecodeError`` as
    soon as a count passes ``MAX_GIF_EXTENSIONS``, ``MAX_GIF_SUB_BLOCKS`` or
    ``MAX_GIF_STRAY_BYTES``; stray bytes are skipped by a C search, so the walk takes at most
    ~110 000 steps. Truncated data just ends the walk: Pillow reports it."""
    size = len(raw)
    if size < 13:
        return
    flags = raw[10]
    i = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    extensions = sub_blocks = stray = 0
    while i < size:
        if raw[i] != 0x21:  # not an extension introducer ("!")
            m = _GIF_BLOCK_START.search(raw, i, i + MAX_GIF_STRAY_BYTES - stray + 1)
            stray += (m.start() if m else min(size, i + MAX_GIF_STRAY_BYTES - stray + 1)) - i
            if stray > MAX_GIF_STRAY_BYTES:
                raise ImageDecodeError(f"GIF with more than {MAX_GIF_STRAY_BYTES} stray bytes between blocks")
            if m is None or m.group() != b"!":
                return  # image descriptor (",") or trailer (";"): Pillow's C decoder takes over
            i = m.start()
        extensions += 1
        if extensions > MAX_GIF_EXTENSIONS:
            raise ImageDecodeError(f"GIF with more than {MAX_GIF_EXTENSIONS} extension blocks before its first image")
        i += 2  # introducer, label
        while i < size and (n := raw[i]):
            sub_blocks += 1
            if sub_blocks > MAX_GIF_SUB_BLOCKS:
                raise ImageDecodeError(f"GIF with more than {MAX_GIF_SUB_BLOCKS} extension sub-blocks before its first image")
            i += n + 1
        i += 1  # block terminator


#: Most strips or tiles accepted in a TIFF's first picture. Pillow builds one Python entry per
#: strip when it opens the file and decodes them one by one: 1.5 million one-row strips (a 9 MB
#: file) held a decode thread 8.6 s and 554 MB (operator review). Real files have one strip per
#: 1-64 rows or 256 px tiles: a 40 Mpx picture of one-row strips at 2 000 px wide has 20 000.
MAX_TIFF_STRIPS = 20_000
_TIFF_OFFSET_TAGS = (273, 324)  # StripOffsets, TileOffsets
#: Every header Pillow opens as a TIFF (``TiffImagePlugin.PREFIXES``: the standard four and two
#: byte-order mixes it accepts too): a file it reads must not pass here unchecked.
TIFF_PREFIXES = (b"MM\x00*", b"II*\x00", b"MM*\x00", b"II\x00*", b"MM\x00+", b"II+\x00")


def check_tiff_strips(raw: bytes) -> None:
    """Read the entry list of a TIFF's first image directory (classic or BigTIFF, either byte
    order) and raise ``ImageDecodeError`` when its StripOffsets or TileOffsets count exceeds
    ``MAX_TIFF_STRIPS``; at most one directory is read, no pixel data. A malformed header just
    ends the check: Pillow reports it."""
    order = {b"II": "<", b"MM": ">"}.get(raw[:2])
    if order is None or len(raw) < 16:
        return
    big = raw[2] == 43  # as Pillow tells BigTIFF (any header it accepts, TIFF_PREFIXES, is read)
    if not big:
        ifd, count_fmt, entry_size = struct.unpack_from(order + "I", raw, 4)[0], "H", 12
    else:  # BigTIFF: 8-byte offsets and counts, 20-byte entries
        ifd, count_fmt, entry_size = struct.unpack_from(order + "Q", raw, 8)[0], "Q", 20
    n_size = struct.calcsize(count_fmt)
    if ifd + n_size > len(raw):
        return
    entries = struct.unpack_from(order + count_fmt, raw, ifd)[0]
    start = ifd + n_size
    for k in range(min(entries, (len(raw) - start) // entry_size)):
        at = start + k * entry_size
        tag = struct.unpack_from(order + "H", raw, at)[0]
        if tag in _TIFF_OFFSET_TAGS:
            count = struct.unpack_from(order + ("Q" if big else "I"), raw, at + 4)[0]
            if count > MAX_TIFF_STRIPS:
                raise ImageDecodeError(f"TIFF with {count} {'strips' if tag == 273 else 'tiles'} exceeds the limit "
                                       f"({MAX_TIFF_STRIPS})")


def open_image(raw: bytes, limits: DecodeLimits = DecodeLimits()) -> Image.Image:
    """Decode image bytes into an RGB image (first frame, EXIF orientation applied).

    The header is parsed first; the declared size is checked against ``limits``
    before any pixel data is decoded, so a 20000x20000 bomb costs nothing.
    """
    if not raw:
        raise ImageDecodeError("empty image bytes")
    # A JPEG's segments and scans are counted before Pillow parses its header: Pillow reads
    # every marker segment in Python, so 16 MiB of empty APP1 segments held a decode thread
    # for 6 s (and 420 MB) before the count refused them in milliseconds.
    if raw[:2] == b"\xff\xd8" and (scans := jpeg_scans(raw, limits.max_jpeg_scans)) > limits.max_jpeg_scans:
        raise ImageDecodeError(f"JPEG with more than {limits.max_jpeg_scans} scans ({scans} counted) exceeds the limit")
    # PNG chunks and GIF blocks likewise: Pillow parses them one by one in Python.
    if raw[:8] == _PNG_SIGNATURE:
        check_png_chunks(raw)
    elif raw[:6] in (b"GIF87a", b"GIF89a"):
        check_gif_blocks(raw)
    elif raw[:4] in TIFF_PREFIXES:
        check_tiff_strips(raw)
    try:
        img = Image.open(io.BytesIO(raw), formats=_pillow_formats(limits.formats))
    except Image.DecompressionBombError as e:  # the header declares more than twice MAX_IMAGE_PIXELS
        # Pillow names its own guard (twice its MAX_IMAGE_PIXELS, which the miner sets to ours): say
        # ours where that guard is above it, as the header check below does, else Pillow's words
        guard = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        if guard >= limits.max_pixels:
            raise ImageDecodeError(f"image too large: the size its header declares exceeds limit {limits.max_pixels} "
                                   "pixels") from e
        raise ImageDecodeError(f"image too large: {e}") from e
    except UnidentifiedImageError as e:  # Pillow's message names only its BytesIO object (a memory address)
        raise ImageDecodeError(f"not a recognised image: no allowed format could read it (it starts with {raw[:8]!r})") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageDecodeError(f"not a recognised image: {e}") from e
    except Exception as e:  # a plugin choking on a malformed header (struct.error, IndexError, ...)
        raise ImageDecodeError(f"malformed image header: {type(e).__name__}: {e}") from e
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageDecodeError(f"image has empty size {w}x{h}")
    if w * h > limits.max_pixels:
        raise ImageDecodeError(f"image of {w}x{h} pixels exceeds limit {limits.max_pixels}")
    try:
        img.seek(0)  # animated formats: first frame only
        if img.format == "JPEG" and max(w, h) > 4096:
            # Let libjpeg decode at reduced scale; we resize to 256 anyway.
            img.draft("RGB", (max(w // 8, 256), max(h // 8, 256)))
        img.load()
        img = ImageOps.exif_transpose(img) or img
        return _to_rgb(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, MemoryError) as e:
        raise ImageDecodeError(f"could not decode image: {e}") from e
    except Exception as e:  # malformed data deep in a decoder (EOFError, struct.error, IndexError, ...)
        raise ImageDecodeError(f"could not decode image: {type(e).__name__}: {e}") from e


def decode_image(data: str | bytes, limits: DecodeLimits = DecodeLimits()) -> Image.Image:
    """Base64 text -> RGB PIL image, or ``ImageDecodeError``."""
    return open_image(b64_to_bytes(data, limits), limits)


def encode_image(img: Image.Image, fmt: str = "JPEG", quality: int = 75) -> str:
    """RGB PIL image -> base64 text, encoded the way validators do (JPEG, q=75)."""
    buf = io.BytesIO()
    img = _to_rgb(img)
    if fmt.upper() in ("JPEG", "JPG"):
        img.save(buf, format="JPEG", quality=quality)
    else:
        img.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def load_image_file(path, limits: DecodeLimits = DecodeLimits()) -> Image.Image:
    """Read an image file from disk with the same guarantees as ``decode_image``."""
    with open(path, "rb") as f:
        return open_image(f.read(), limits)
