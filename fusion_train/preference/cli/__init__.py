"""The ``fusion-train sft | dpo | wrpo | crlft`` subcommands: one module each, over the library entry points in
:mod:`fusion_train.preference.run`; ``common.py`` holds the flag groups they share."""
