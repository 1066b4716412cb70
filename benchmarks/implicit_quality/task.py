"""The verifiable task: seeded multi-step arithmetic and word problems with gold answers, graded by difficulty,
plus GSM8K items from ``../shared/corpora`` (their ``#### n`` answers verify).

Held-out problems are unseen twice over: the held-out set is every problem of the *held-out templates* plus the
problems of the training templates whose numbers fall in the held-out number bucket (sha256 of template +
numbers); training problems come from the training templates with numbers outside that bucket. The split is a
pure function of (template, numbers, salt), so no seed, count or difficulty can move a problem across it.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

SUFFIX = " Give the final answer as a number."
# difficulty -> operand range; level 3 also gets one step more in the templates that take a third number
RANGES = {1: (2, 9), 2: (10, 49), 3: (20, 99)}


@dataclass(frozen=True)
class Template:
    name: str
    text: str
    arity: int
    answer: Callable[..., int]
    valid: Callable[..., bool] = lambda *n: True


def _tpl(name, text, arity, answer, valid=None):
    return Template(name, text, arity, answer, valid or (lambda *n: True))


TRAIN_TEMPLATES: Tuple[Template, ...] = (
    _tpl("add", "What is {0} + {1}?", 2, lambda a, b: a + b),
    _tpl("sub", "What is {0} - {1}?", 2, lambda a, b: a - b, lambda a, b: a > b),
    _tpl("add_sub", "What is {0} + {1} - {2}?", 3, lambda a, b, c: a + b - c, lambda a, b, c: a + b > c),
    _tpl("mul", "What is {0} times {1}?", 2, lambda a, b: a * b, lambda a, b: min(a, b) <= 12),
    _tpl("apples", "Tom has {0} apples. He buys {1} more apples and then gives {2} apples to a friend. How many "
                   "apples does Tom have now?", 3, lambda a, b, c: a + b - c, lambda a, b, c: a + b > c),
    _tpl("boxes", "A box holds {0} pencils. How many pencils are in {1} boxes?", 2, lambda a, b: a * b,
         lambda a, b: b <= 12),
    _tpl("pages", "Sara reads {0} pages every day for {1} days. How many pages does she read in total?", 2,
         lambda a, b: a * b, lambda a, b: b <= 12),
)
HELDOUT_TEMPLATES: Tuple[Template, ...] = (
    _tpl("mul_add", "What is {0} times {1} plus {2}?", 3, lambda a, b, c: a * b + c, lambda a, b, c: b <= 12),
    _tpl("marbles", "Lily had {0} marbles. She lost {1} marbles and then found {2} more. How many marbles does she "
                    "have now?", 3, lambda a, b, c: a - b + c, lambda a, b, c: a > b),
    _tpl("change", "A pen costs {0} dollars. Ben buys {1} pens and pays with a {2}-dollar bill. How much change "
                   "does he get?", 3, lambda a, b, c: c - a * b, lambda a, b, c: b <= 9 and c > a * b),
)
TEMPLATES = {t.name: t for t in TRAIN_TEMPLATES + HELDOUT_TEMPLATES}


def number_bucket(template: str, numbers: Sequence[int], salt: str, buckets: int = 4) -> int:
    h = hashlib.sha256(("%s\x1f%s\x1f%s" % (salt, template, ",".join(map(str, numbers)))).encode()).digest()
    return int.from_bytes(h[:4], "big") % buckets


def split_of(template: str, numbers: Sequence[int], salt: str) -> str:
    """``"heldout"`` or ``"train"`` (see the module doc)."""
    if template not in {t.name for t in TRAIN_TEMPLATES}:
        return "heldout"
    return "heldout" if number_bucket(template, numbers, salt) == 0 else "train"


def _draw(t: Template, level: int, rng: random.Random) -> Tuple[int, ...]:
    lo, hi = RANGES[level]
    while True:
        nums = [rng.randint(lo, hi) for _ in range(t.arity)]
        if t.name in ("mul", "boxes", "pages", "mul_add", "change"):
            nums[1] = rng.randint(2, 9 if level < 3 else 12)  # a small multiplier keeps products checkable
        if t.name == "change":
            nums[2] = (nums[0] * nums[1] // 10 + 1 + rng.randint(0, 2)) * 10
        if t.valid(*nums):
            return tuple(nums)


def generate(split: str, n: int, levels: Sequence[int], seed: int, salt: str) -> List[Dict]:
    """``n`` distinct problems of ``split`` (``train`` | ``heldout``), difficulty levels cycled over ``levels``,
    templates cycled over the split's templates; prompt rows in fusion-train's prompt format."""
    templates = TRAIN_TEMPLATES if split == "train" else TRAIN_TEMPLATES + HELDOUT_TEMPLATES
    rng = random.Random("%s/%s/%d" % (salt, split, seed))
    out: List[Dict] = []
    seen = set()
    i = 0
    while len(out) < n:
        t = templates[i % len(templates)]
        level = levels[(i // len(templates)) % len(levels)]
        i += 1
        for _ in range(1000):
            nums = _draw(t, level, rng)
            if (t.name, nums) not in seen and split_of(t.name, nums, salt) == split:
                break
        else:
            continue
        seen.add((t.name, nums))
        pid = "%s-%s-%s" % (split, t.name, "-".join(map(str, nums)))
        out.append({"prompt_id": pid, "domain": "math", "gold": str(t.answer(*nums)),
                    "messages": [{"role": "user", "content": t.text.format(*nums) + SUFFIX}],
                    "template": t.name, "level": level,
                    "kind": "unseen template" if t.name not in {x.name for x in TRAIN_TEMPLATES} else "unseen numbers"})
    return out


def gsm8k_items(corpora: Path, n_train: int, n_heldout: int, salt: str, max_chars: int = 260) -> Tuple[List, List]:
    """Short GSM8K test items of ``code_math.jsonl`` (gold = the ``#### n`` answer), split by a hash of the item
    id; the shortest questions first (the small models have a chance there)."""
    path = Path(corpora) / "code_math.jsonl"
    rows = []
    if not path.exists():
        return [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            o = json.loads(line)
            if not str(o.get("source", "")).startswith("gsm8k"):
                continue
            q, a = o["messages"][0]["content"], o["messages"][1]["content"]
            if "####" not in a or len(q) > max_chars:
                continue
            gold = a.split("####")[-1].strip().replace(",", "")
            rows.append((len(q), o["id"], q, gold))
    rows.sort()
    train, held = [], []
    for _, rid, q, gold in rows:
        part = "heldout" if number_bucket("gsm8k", [len(rid)], salt + rid) == 0 else "train"
        bucket = held if part == "heldout" else train
        cap = n_heldout if part == "heldout" else n_train
        if len(bucket) < cap:
            bucket.append({"prompt_id": "%s-gsm8k-%s" % (part, rid.replace("/", "_")), "domain": "math",
                           "gold": gold, "messages": [{"role": "user", "content": q + SUFFIX}],
                           "template": "gsm8k", "level": 0, "kind": "gsm8k (corpus)"})
        if len(train) >= n_train and len(held) >= n_heldout:
            break
    return train, held


def few_shot_template(examples: Optional[Sequence[Tuple[str, str]]] = None) -> str:
    """A Jinja chat template that turns the last user turn into a few-shot completion prompt for a base model
    (Gemma-3-270M): solved examples in the same ``Question: / Answer:`` layout, then the question."""
    examples = examples or FEW_SHOT
    shots = "".join("Question: %s\nAnswer: %s\n\n" % (q, a) for q, a in examples)
    shots = shots.replace("{", "{{ '{' }}").replace("}", "{{ '}' }}")
    return ("{{ bos_token }}" + shots + "Question: {{ messages[-1]['content'] }}\nAnswer:")


# worked examples outside every template (no problem of the task is ever a shot)
FEW_SHOT = (
    ("A bag has 6 red balls and 5 blue balls. How many balls are in the bag?" + SUFFIX,
     "6 + 5 = 11. The answer is 11."),
    ("Max had 20 stickers and used 8 of them. How many stickers are left?" + SUFFIX,
     "20 - 8 = 12. The answer is 12."),
    ("There are 4 rows of chairs with 7 chairs in each row. How many chairs are there?" + SUFFIX,
     "4 * 7 = 28. The answer is 28."),
)
FEW_SHOT_STOP = "\nQuestion:"


def cut_at_stop(text: str, stop: str = FEW_SHOT_STOP) -> str:
    """A base model continues past its answer with the next few-shot question: keep what comes before it."""
    i = text.find(stop)
    return text if i < 0 else text[:i]
