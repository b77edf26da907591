"""Repair dirty text instead of dropping the document.

Text exported from PDFs, Word and older systems carries broken characters: Windows-1252
punctuation decoded as C1 controls (U+0096 is an en dash), mojibake ("â€”" for "—"), and U+FFFD
where an extractor lost a character. One such character used to quarantine the whole document.
Here each defect gets a severity:

* **repaired** — the intended character is known: C1 controls that are Windows-1252
  punctuation, mojibake, lone surrogates (ftfy does the decoding; every step it took is recorded);
  stray C0 controls such as backspace or form feed's rarer siblings are removed.
* **warning** — information was lost upstream and cannot be restored: U+FFFD is kept (default,
  ``quality.replacement_chars: keep``) or removed (``remove``), and the document is indexed.
* **failure** — the document is quarantined: it is *dangerous* (terminal escape sequences: ESC,
  8-bit CSI with parameters, OSC/DCS; NUL) or *mostly broken* (more than
  ``quality.max_bad_char_share`` of its characters were lost or removed).

Pure Python, no Airflow; :func:`repair_text` is cheap on clean text (an ASCII fast path) so the
step costs little on a full ingest (bench/repair_scifact.py measures it).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# ESC (7-bit escapes), NUL, 8-bit OSC (U+009D) and DCS (U+0090), and an 8-bit CSI that carries
# parameters (U+009B 31m): what a terminal would act on. U+009D and U+0090 are undefined in
# Windows-1252, so no mis-decoded punctuation looks like them.
DANGEROUS = re.compile(r"[\x00\x1b\x90\x9d]|\x9b[0-9;?]+[ -/]*[@-~]")
# C0 controls but tab, newline, form feed, carriage return (and ESC/NUL, dangerous above); DEL
STRAY_C0 = re.compile(r"[\x01-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")
C1 = re.compile(r"[\x80-\x9f]")
REPLACEMENT = "\ufffd"
SURROGATE = re.compile(r"[\ud800-\udfff]")

_STEP_NAMES = {
    "fix_c1_controls": "c1_as_cp1252",
    "decode_inconsistent_utf8": "mojibake",
    "replace_lossy_sequences": "lossy_mojibake",
    "fix_surrogates": "surrogates",
    "restore_byte_a0": "mojibake",
}


@dataclass
class Repair:
    """What :func:`repair_text` did to one text."""

    text: str
    repairs: dict[str, int] = field(default_factory=dict)  # kind -> characters or steps repaired
    warnings: dict[str, int] = field(default_factory=dict)  # kind -> count (information lost upstream)
    dangerous: str | None = None  # why the text must be quarantined, if it must
    bad_chars: int = 0  # characters lost upstream (U+FFFD) or with no meaning (removed controls)
    length: int = 0  # characters of the text as given

    def bad_share(self) -> float:
        """The "mostly broken" measure: bad characters over the text's length as given."""
        return self.bad_chars / max(self.length, 1)

    def findings(self) -> list[dict[str, Any]]:
        """One entry per kind, for the run report and the state store."""
        out = [{"severity": "repaired", "kind": k, "count": n} for k, n in sorted(self.repairs.items())]
        out += [{"severity": "warning", "kind": k, "count": n} for k, n in sorted(self.warnings.items())]
        return out


def _ftfy_config() -> Any:
    import ftfy

    # only what repairs breakage: no quote uncurling, width folding, ligature or HTML changes,
    # no terminal-escape removal (escapes are refused, not silently dropped)
    return ftfy.TextFixerConfig(
        unescape_html=False, remove_terminal_escapes=False, fix_encoding=True, restore_byte_a0=True,
        replace_lossy_sequences=True, decode_inconsistent_utf8=True, fix_c1_controls=True,
        fix_latin_ligatures=False, fix_character_width=False, uncurl_quotes=False, fix_line_breaks=False,
        fix_surrogates=True, remove_control_chars=False, normalization=None, explain=True,
    )


_CONFIG: Any = None


def repair_text(text: str, replacement_chars: str = "keep") -> Repair:
    """Repair what can be repaired, say what was lost, and flag what is dangerous."""
    global _CONFIG
    if replacement_chars not in ("keep", "remove"):
        raise ValueError(f"quality.replacement_chars must be 'keep' or 'remove', not {replacement_chars!r}")
    out = Repair(text, length=len(text))
    m = DANGEROUS.search(text)
    if m is not None:
        ch = m.group(0)[0]
        what = {"\x00": "a NUL character", "\x1b": "a terminal escape (ESC)", "\x90": "an 8-bit DCS control",
                "\x9d": "an 8-bit OSC control", "\x9b": "an 8-bit CSI escape sequence"}[ch]
        out.dangerous = (f"text contains {what} at character {m.start()}: terminal control characters are refused, "
                         "not repaired; strip them at the source or re-export the text")
        return out
    if text.isascii() and STRAY_C0.search(text) is None:  # the common case: nothing to do
        return out
    repairs: Counter[str] = Counter()
    if C1.search(text) or not text.isascii():
        import ftfy

        if _CONFIG is None:
            _CONFIG = _ftfy_config()
        before_c1 = len(C1.findall(text))
        fixed, steps = ftfy.fix_and_explain(text, _CONFIG)
        if fixed != text:
            for action, name in steps or []:
                if action == "encode":
                    continue  # the decode step that follows names the repair
                if action == "decode" or name in _STEP_NAMES:
                    kind = "mojibake" if action == "decode" else _STEP_NAMES[name]
                    if kind in ("mojibake", "c1_as_cp1252") and before_c1:
                        kind = "c1_as_cp1252"  # C1 controls were Windows-1252 punctuation
                    repairs[kind] += 1
                else:
                    repairs[name] += 1
            if "c1_as_cp1252" in repairs:  # count characters, not steps
                repairs["c1_as_cp1252"] = max(before_c1 - len(C1.findall(fixed)), 1)
            text = fixed
    left_c1 = C1.findall(text)  # C1 with no Windows-1252 meaning (U+0081, U+008D, U+008F)
    stray = STRAY_C0.findall(text)
    if left_c1 or stray:
        text = C1.sub("", STRAY_C0.sub("", text))
        repairs["control_chars_removed"] += len(left_c1) + len(stray)
    lost = text.count(REPLACEMENT)
    if lost:
        if replacement_chars == "remove":
            text = text.replace(REPLACEMENT, "")
            out.warnings["replacement_chars_removed"] = lost
        else:
            out.warnings["replacement_chars"] = lost
    out.bad_chars = lost + len(left_c1) + len(stray)
    out.text, out.repairs = text, dict(repairs)
    return out
