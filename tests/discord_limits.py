"""Discord's message limits, checked on the JSON payload a message is sent with (what the preview writes and what
discord.py posts): content 2000, 10 embeds, title 256, description 4096, 25 fields, field name 256 and value 1024
(both non-empty), footer 2048, author 256, 6000 characters over all embeds."""

from __future__ import annotations

from typing import Any


def embed_size(e: dict[str, Any]) -> int:
    """Characters Discord counts for one embed (title, description, field names and values, footer, author)."""
    size = len(e.get("title") or "") + len(e.get("description") or "")
    size += sum(len(str(f.get("name", ""))) + len(str(f.get("value", ""))) for f in e.get("fields") or ())
    size += len((e.get("footer") or {}).get("text") or "") + len((e.get("author") or {}).get("name") or "")
    return size


def payload_problems(payload: dict[str, Any]) -> list[str]:
    """Every limit the payload breaks ([] when it fits)."""
    out: list[str] = []
    content = payload.get("content") or ""
    if len(content) > 2000:
        out.append(f"content {len(content)} > 2000")
    embeds = payload.get("embeds") or []
    if len(embeds) > 10:
        out.append(f"{len(embeds)} embeds > 10")
    total = 0
    for i, e in enumerate(embeds):
        total += embed_size(e)
        for key, limit in (("title", 256), ("description", 4096)):
            if len(e.get(key) or "") > limit:
                out.append(f"embed {i} {key} {len(e.get(key) or '')} > {limit}")
        fields = e.get("fields") or []
        if len(fields) > 25:
            out.append(f"embed {i}: {len(fields)} fields > 25")
        for f in fields:
            if not 0 < len(str(f.get("name", ""))) <= 256 or not 0 < len(str(f.get("value", ""))) <= 1024:
                out.append(f"embed {i}: field {str(f.get('name'))[:30]!r} out of bounds")
        if len((e.get("footer") or {}).get("text") or "") > 2048:
            out.append(f"embed {i} footer > 2048")
    if total > 6000:
        out.append(f"embeds total {total} > 6000")
    if not content and not embeds:
        out.append("empty message")
    return out
