"""The recipient's QR token drawn as an inline SVG (segno), for the shop to pass on once.

The code holds the token itself (what the robot's camera reads and `handoff/verify` checks),
black on white with a 4-module quiet zone so a phone screen or a print scans; it carries
`role="img"` and a label so a screen reader announces what it is.
"""

from __future__ import annotations

from html import escape

import segno


def qr_svg(text: str, label: str) -> str:
    code = segno.make(text, error="m")
    svg: str = code.svg_inline(scale=4, border=4, dark="#000", light="#fff", omitsize=True,
                               svgclass="qr-code", lineclass=None, title=label)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{escape(label)}" ', 1)
