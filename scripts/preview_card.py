"""Draw one message of a ``--discord-preview`` as a Discord-like card PNG (the pictures in README.md).

    .venv/bin/python scripts/preview_card.py PREVIEW_DIR/signals 0003-signal-<id>.json docs/img/signal.png
    .venv/bin/python scripts/preview_card.py PREVIEW_DIR/signals 0009-follow_up-stopped-<id>.json docs/img/follow-up.png

The card shows what the payload holds: the content line, each embed's colour bar, title, description, fields,
footer, and the chart attached to it (scaled). Emoji are left out (the plotting font has none). A tool for the
documentation: the bot never needs it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imread

BG, CARD, FG, DIM, TITLE = "#313338", "#2b2d31", "#dbdee1", "#949ba4", "#f2f3f5"
EMOJI = {"🟢 ": "", "🔴 ": "", "👁 ": "", "🎯 ": "", "🛑 ": "", "⚠️ ": "", "⌛ ": "", "↪ ": "", "−": "-", "—": "-",
         "…": "..."}
WIDTH_PX = 900
DPI = 100


def plain(text: str) -> str:
    for k, v in EMOJI.items():
        text = text.replace(k, v)
    text = re.sub(r"\*\*(.+?)\*\*", r"\1", text)
    return "".join(c if ord(c) < 0x2500 or c in "·•" else "?" for c in text)


def wrap(text: str, width: int) -> list[str]:
    out: list[str] = []
    for para in plain(text).splitlines() or [""]:
        out += textwrap.wrap(para, width) or [""]
    return out


def card(payload: dict[str, Any], chart: Path | None, out: Path) -> None:
    lines: list[tuple[str, str, float, str]] = []  # (text, colour, size, weight)
    if payload.get("content"):
        lines += [(t, FG, 10, "normal") for t in wrap(payload["content"], 110)]
        lines.append(("", FG, 6, "normal"))
    embed = payload["embeds"][0]
    lines += [(t, TITLE, 11, "bold") for t in wrap(embed.get("title", ""), 92)]
    lines += [(t, FG, 9, "normal") for t in wrap(embed.get("description", ""), 118)]
    for f in embed.get("fields") or ():
        lines.append((plain(str(f["name"])), TITLE, 9, "bold"))
        lines += [(t, FG, 9, "normal") for t in wrap(str(f["value"]), 118)]
    image = imread(str(chart)) if chart is not None and chart.is_file() else None
    footer = wrap((embed.get("footer") or {}).get("text", ""), 130)
    line_px = 17
    chart_px = int(image.shape[0] * (WIDTH_PX - 80) / image.shape[1]) if image is not None else 0
    height = 40 + line_px * (len(lines) + len(footer)) + chart_px + 30
    fig = Figure(figsize=(WIDTH_PX / DPI, height / DPI), dpi=DPI, facecolor=BG)
    FigureCanvasAgg(fig)
    colour = f"#{int(embed.get('color') or 0x4E5058):06x}"
    fig.patches.append(matplotlib.patches.Rectangle((20 / WIDTH_PX, 10 / height), (WIDTH_PX - 40) / WIDTH_PX,
                                                    (height - 20) / height, transform=fig.transFigure, color=CARD, zorder=-2))
    fig.patches.append(matplotlib.patches.Rectangle((20 / WIDTH_PX, 10 / height), 4 / WIDTH_PX, (height - 20) / height,
                                                    transform=fig.transFigure, color=colour, zorder=-1))
    y = height - 30
    for text, col, size, weight in lines:
        fig.text(36 / WIDTH_PX, y / height, text, color=col, fontsize=size, fontweight=weight, va="center")
        y -= line_px
    if image is not None:
        ax = fig.add_axes((36 / WIDTH_PX, (y - chart_px) / height, (WIDTH_PX - 80) / WIDTH_PX, chart_px / height))
        ax.imshow(image)
        ax.axis("off")
        y -= chart_px + 8
    for text in footer:
        fig.text(36 / WIDTH_PX, y / height, text, color=DIM, fontsize=8, va="center")
        y -= line_px
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, facecolor=BG)
    # a palette of 96 colours keeps the picture small enough for a README (Pillow comes with matplotlib)
    from PIL import Image

    with Image.open(out) as img:
        small = img.convert("RGB").quantize(colors=96)
    small.save(out, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a destination folder of a --discord-preview directory")
    parser.add_argument("message", help="the message's JSON file name in that folder")
    parser.add_argument("out", type=Path, help="the PNG to write")
    args = parser.parse_args(argv)
    path = args.folder / args.message
    if not path.is_file():
        print(f"no such message: {path}", file=sys.stderr)
        return 2
    payload = json.loads(path.read_text(encoding="utf-8"))
    card(payload, path.with_suffix(".png"), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
