"""The implicit-fusion benchmark's task: held-out problems are unseen (template or numbers), gold answers verify."""
from benchmarks.implicit_quality import task as T
from fusion_train.implicit.verify.math import verify_math


def test_split_is_disjoint_and_pure():
    train = T.generate("train", 60, (1, 2, 3), 0, "salt")
    held = T.generate("heldout", 40, (1, 2, 3), 0, "salt")
    key = lambda p: p["prompt_id"].split("-", 1)[1]
    assert len({key(p) for p in train}) == 60 and len({key(p) for p in held}) == 40
    assert not {key(p) for p in train} & {key(p) for p in held}
    train_names = {t.name for t in T.TRAIN_TEMPLATES}
    assert all(p["template"] in train_names for p in train)
    assert {p["kind"] for p in held} == {"unseen template", "unseen numbers"}
    for p in held:
        nums = [int(x) for x in p["prompt_id"].split("-")[2:]]
        assert T.split_of(p["template"], nums, "salt") == "heldout"
        if p["template"] in train_names:
            assert T.number_bucket(p["template"], nums, "salt") == 0
    # deterministic, and another task seed draws other problems from the same split
    assert T.generate("train", 60, (1, 2, 3), 0, "salt") == train
    other = T.generate("train", 60, (1, 2, 3), 1, "salt")
    assert {key(p) for p in other} != {key(p) for p in train}
    assert not {key(p) for p in other} & {key(p) for p in held}


def test_gold_answers_verify_and_are_positive():
    for p in T.generate("heldout", 30, (1, 2, 3), 0, "s") + T.generate("train", 30, (1, 2, 3), 0, "s"):
        gold = int(p["gold"])
        assert gold >= 0
        assert verify_math("... The answer is %d." % gold, p["gold"])[0]
        assert not verify_math("The answer is %d." % (gold + 1), p["gold"])[0]


def test_few_shot_cut():
    assert T.cut_at_stop(" 3 + 4 = 7. The answer is 7.\n\nQuestion: What is 2 + 2?") == " 3 + 4 = 7. The answer is 7.\n"
    assert "{{ bos_token }}" in T.few_shot_template() and "messages[-1]" in T.few_shot_template()
