"""The paper's sequence-model competitors (§3.3, Tables 2-4), each on the L most recent behaviours.

- :mod:`.sequences`: the shared input, every user's L (default 50, the paper's "limited to
  50 due to memory limitation") most recent history behaviours, each behaviour its item's
  title through the kit's own text pipeline (``text.json``, the item encoder's vocabulary);
- :mod:`.ptum` (Wu et al. 2020) and :mod:`.sumn` (Gu et al. 2021): self-supervised, pre-trained
  once per run folder, then frozen and probed like LURM;
- :mod:`.encoders` (attention pooling, the title encoder) and :mod:`.pretraining` (the
  resumable pre-training loop): the pieces PTUM, SUMN and HAN share;
- :mod:`.textcnn` and :mod:`.han`: supervised, trained end to end per downstream task on the
  probe's split (:mod:`.supervised`).
"""
