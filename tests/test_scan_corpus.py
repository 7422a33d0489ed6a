"""The decode engine against the real corpus, through ``edge-agent scan decode``, scored
against the expected texts next to both plain engines (zxing-cpp, ZBar) on the same images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import zxingcpp
from pyzbar import pyzbar

from edge_agent.scan.engine import load_image

CORPUS = Path(__file__).parent / "fixtures" / "barcodes"
IMAGES = sorted(p for p in CORPUS.glob("*/*") if p.suffix in {".png", ".jpg", ".webp"})


def expected(image: Path) -> str | None:
    txt = image.with_suffix(".txt")
    # bytes, then UTF-8: text mode would turn the QR codes' CR LF into LF
    return txt.read_bytes().decode("utf-8") if txt.exists() else None


def run_cli(paths: list[Path]) -> tuple[int, list[dict[str, object]], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent", "scan", "decode", *map(str, paths)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def test_corpus_reads_more_than_both_peers_together_without_false_positive() -> None:
    assert len(IMAGES) > 90
    status, records, stderr = run_cli(IMAGES)
    assert status == 0, stderr
    assert [r["image"] for r in records] == [str(p) for p in IMAGES]

    total = read = zxing_read = zbar_read = union_read = 0
    false_positives: list[str] = []
    wrong: list[str] = []
    for image, record in zip(IMAGES, records, strict=True):
        want = expected(image)
        codes = record["codes"]
        assert isinstance(codes, list)
        texts = [c["text"] for c in codes]
        grey = load_image(str(image))
        zx = [r.text for r in zxingcpp.read_barcodes(grey, text_mode=zxingcpp.TextMode.Plain)]
        zb = [r.data.decode("utf-8", "replace") for r in pyzbar.decode(grey)]
        if want is None:
            if texts:
                false_positives.append(f"{image.name}: {texts}")
            continue
        total += 1
        read += want in texts
        zxing_read += want in zx
        zbar_read += want in zb
        union_read += want in zx or want in zb
        wrong.extend(f"{image.name}: {t!r}" for t in texts if t != want)

    print(f"engine {read}/{total}, zxing-cpp {zxing_read}, ZBar {zbar_read}, union {union_read}")
    assert false_positives == []
    assert wrong == []
    assert read > union_read
    assert union_read >= zxing_read >= zbar_read  # the peers really ran


def test_garbage_empty_truncated_and_missing_files_get_an_error_and_the_rest_decodes(
    tmp_path: Path,
) -> None:
    good = CORPUS / "qrcode-1" / "1.webp"
    png = (CORPUS / "code128-1" / "1.png").read_bytes()
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(bytes(range(256)) * 7)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(png[:40])
    forged = tmp_path / "forged.webp"
    forged.write_bytes(b"RIFF\x16\x00\x00\x00WEBPVP8L" + b"\xff" * 10)
    missing = tmp_path / "missing.png"
    paths = [empty, garbage, good, truncated, forged, missing]

    status, records, stderr = run_cli(paths)

    assert status == 1
    by_name = {Path(str(r["image"])).name: r for r in records}
    assert len(records) == len(paths)
    for bad in (empty, garbage, truncated, forged, missing):
        record = by_name[bad.name]
        assert record["codes"] == []
        assert str(bad) in str(record["error"])
        assert str(bad) in stderr
    assert "empty file" in str(by_name["empty.png"]["error"])
    assert by_name["1.webp"]["codes"] == [{"format": "QRCode", "text": expected(good)}]
    assert "error" not in by_name["1.webp"]
    assert "Traceback" not in stderr
