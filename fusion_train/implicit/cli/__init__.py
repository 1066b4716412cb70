"""Thin command-line faces of the implicit-fusion stages: ``fusion-train sample`` (:mod:`.sample`),
``score`` (:mod:`.score`) and ``build-pairs`` (:mod:`.build_pairs`). Each parses flags into the stage's options
dataclass and calls its library entry point."""
