"""fusion_train: the thin PyTorch layer of tokalign: sparse-target distillation with MinCE
fusion (``fuse``) and parameter-space merging (``merge``)."""
