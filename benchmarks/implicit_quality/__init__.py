"""Implicit fusion, measured (``python -m benchmarks.implicit_quality``): FuseChat-3.0 (SFT → DPO / LN-DPO),
WRPO (two α_end) and C-RLFT against SFT-only, on the real models and a task whose answers verify.

* :mod:`.task` -- seeded arithmetic and word problems (graded difficulty; train / held-out split by template and
  by numbers) plus short GSM8K items of ``../shared/corpora``; the few-shot prompt for the base-model source;
* :mod:`.pipeline` -- task, sampling of both sources (``fusion_train.implicit.sample``), verification
  (``score --verify math``) and the tie-break score, ``build`` of the FuseChat-3.0 and WRPO sets; the stage cache;
* :mod:`.train` -- the arms through ``fusion_train.preference.run_sft / run_preference / run_crlft``;
* :mod:`.evaluate` -- greedy held-out exact match and held-out chat bits/byte; the explicit-fusion target (arm 6);
* :mod:`.run` -- the benchmark stage after stage (seeds optionally in parallel processes);
* :mod:`.report` -- mean ± std over seeds, paired differences to SFT-only, markdown, plot, the reading;
* :mod:`.cli` / ``__main__`` -- the command line (``--config default|reduced|gpu|quick``).

Target: SmolLM2-135M-Instruct (its chat template). Sources: Gemma-3-270M (a base model: a few-shot
``Question: / Answer:`` prompt, its continuation cut at the next ``Question:``) and the target itself at a higher
temperature. Score = verified correctness (0/1) + 0.1 × a second score in [0, 1] that breaks ties among
equally-verified responses (half: states "The answer is N"; half: brevity) -- no reward model is available
offline, and these are the two properties greedy exact match rewards.
"""
