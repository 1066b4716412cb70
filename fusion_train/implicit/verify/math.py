"""Final-answer extraction and normalised comparison for math prompts (``fusion-train score --verify math``).

Extraction, first rule that finds something wins: the last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced
braces); the last "The answer is X" / "final answer: X" (also 答案是 X); the last GSM8K-style "#### X";
the last number in the text. Comparison: both answers normalised (``$``, ``\\text{}``, ``\\left``/``\\right``,
thousands separators, a trailing period, units of degrees and percent dropped; ``\\dfrac`` -> ``\\frac``);
equal as numbers (integers, decimals, ``a/b``, ``\\frac{a}{b}``, ``a\\times10^{b}``, ``3e8``) within a relative
tolerance of 1e-6, otherwise equal as normalised strings.
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Optional, Tuple

__all__ = ["extract_answer", "normalize", "to_number", "answers_match", "verify_math"]

_ANSWER_IS = re.compile(r"(?:the\s+(?:final\s+)?answer\s+is|final\s+answer\s*[:：]|answer\s*[:：]|答案是|答案为|答案[:：])"
                        r"\s*[:：]?\s*(.+)", re.IGNORECASE)
_HASHES = re.compile(r"####\s*(.+)")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def _boxed(text: str) -> Optional[str]:
    """The content of the last \\boxed{...} or \\fbox{...} (nested braces balanced); None without one."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        m = re.findall(r"\\boxed\s+([^\s$]+)", text)  # \boxed 5
        return m[-1] if m else None
    start, depth = starts[-1], 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return None


def extract_answer(text: str) -> Optional[str]:
    """The response's final answer (see the module doc), or None when it has none."""
    boxed = _boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    for pattern in (_ANSWER_IS, _HASHES):
        found = pattern.findall(text)
        if found:
            answer = found[-1].strip()
            # "The answer is 42. Next ..." -> the first sentence only
            answer = re.split(r"\.\s|\n", answer)[0].strip().rstrip(".")
            if answer:
                inner = _boxed(answer)
                return inner.strip() if inner else answer
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def normalize(answer: str) -> str:
    s = str(answer).strip()
    s = re.sub(r"\\text\{([^{}]*)\}|\\mathrm\{([^{}]*)\}|\\textbf\{([^{}]*)\}",
               lambda m: next(g for g in m.groups() if g is not None), s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\left", "").replace("\\right", "")
    s = s.replace("$", "").replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\ ", "")
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("°", "").replace("\\%", "").replace("%", "")
    s = s.replace("\\cdot", "*").replace("×", "\\times")
    s = re.sub(r"(\d),(\d{3})(?!\d)", r"\1\2", s)
    s = re.sub(r"(\d),(\d{3})(?!\d)", r"\1\2", s)  # twice: 1,234,567
    s = re.sub(r"\s+", "", s).rstrip(".")
    s = re.sub(r"^[a-zA-Z]\s*=", "", s)  # "x = 5" -> "5"
    return s


def to_number(answer: str) -> Optional[float]:
    """The value of a normalised answer that is a plain number, fraction or power-of-ten product; else None."""
    s = normalize(answer)
    m = re.fullmatch(r"(-?)\\frac\{([^{}]+)\}\{([^{}]+)\}", s) or re.fullmatch(r"(-?)\\frac(\d)(\d)", s)
    if m:
        num, den = to_number(m.group(2)), to_number(m.group(3))
        if num is None or den in (None, 0):
            return None
        return (-1 if m.group(1) else 1) * num / den
    m = re.fullmatch(r"(-?[\d.]+)\*?\\times10\^\{?(-?\d+)\}?", s)
    if m:
        try:
            return float(m.group(1)) * 10.0 ** int(m.group(2))
        except ValueError:
            return None
    m = re.fullmatch(r"(-?\d+)/(\d+)", s)
    if m and int(m.group(2)) != 0:
        return float(Fraction(int(m.group(1)), int(m.group(2))))
    try:
        return float(s)
    except ValueError:
        return None


def answers_match(predicted: Optional[str], gold: str, rel_tol: float = 1e-6) -> bool:
    if predicted is None:
        return False
    a, b = to_number(predicted), to_number(gold)
    if a is not None and b is not None:
        return abs(a - b) <= rel_tol * max(1.0, abs(b))
    return normalize(predicted) == normalize(gold)


def verify_math(text: str, gold: str) -> Tuple[bool, str]:
    """``(correct, verdict)``: the verdict names the extracted answer (``answer 18``) or ``no answer``."""
    predicted = extract_answer(text)
    if predicted is None:
        return False, "no answer"
    gold_answer = extract_answer(gold) if ("\\boxed" in gold or "####" in gold) else gold
    return answers_match(predicted, gold_answer or gold), "answer %s" % predicted[:80]
