"""Text from documents and file names made safe to show: no terminal control sequences, in every front end.

A document or a file name may hold escape sequences (an OSC that renames the terminal window, ESC[2J that clears
the screen) or other control characters. Everything the terminal front ends print and the Discord bot sends
goes through `printable`; JSON output keeps the text verbatim, escaped by `json_text`.
"""

from __future__ import annotations

import json
import re

# C0 controls but tab and newline, DEL, C1 controls (U+0080-U+009F: 8-bit CSI, OSC, ...)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_AND_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
def printable(text: object, one_line: bool = False) -> str:
    """`text` without control characters (tab and newline kept); with `one_line`, newlines, tabs and carriage
    returns become spaces too (a file name in a table). Only the characters go: what followed an ESC ("[2J")
    stays as inert text, so no character of the surrounding markup (a closing backtick) can be taken with it."""
    text = str(text)
    if one_line:
        return _CONTROL_AND_BREAKS.sub(lambda m: " " if m.group() in "\t\n\r\u2028\u2029" else "", text)
    return _CONTROL.sub(lambda m: "" if m.group() != "\r" else "", text)


def json_text(value, **kwargs) -> str:
    """`json.dumps(value)` with non-ASCII kept readable but every control character escaped: JSON escapes C0
    itself; DEL and C1 (which some terminals obey) become \\u escapes too."""
    kwargs.setdefault("ensure_ascii", False)
    return re.sub(r"[\x7f-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, **kwargs))
