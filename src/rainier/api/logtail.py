"""Where the last N lines of a task's log begin, found by reading backwards in blocks."""

from __future__ import annotations

from pathlib import Path

BLOCK = 1 << 16


def tail_offset(path: Path, lines: int) -> int:
    """The byte offset of the start of the file's last `lines` lines (0 if it has fewer).

    A final line without its newline counts as a line, as `tail -n` counts it."""
    if lines <= 0:
        return path.stat().st_size if path.exists() else 0
    if not path.exists():
        return 0
    with open(path, "rb") as fh:
        end = fh.seek(0, 2)
        pos = end
        seen = 0
        skip_last = True  # the newline that ends the last line does not start a new one
        while pos > 0:
            step = min(BLOCK, pos)
            pos -= step
            fh.seek(pos)
            block = fh.read(step)
            for i in range(len(block) - 1, -1, -1):
                if block[i] != 0x0A:
                    skip_last = False
                    continue
                if skip_last and pos + i == end - 1:
                    skip_last = False
                    continue
                seen += 1
                if seen == lines:
                    return pos + i + 1
        return 0
