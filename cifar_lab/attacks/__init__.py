"""Adversarial examples: the threat model, the network seen from [0, 1] pixels, FGSM/PGD
(`pgd`), AutoAttack and APGD through `pyautoattack` (`autoattack`), adversarial training
objectives (`training`: FGSM with a random start, PGD-AT, TRADES) and the robustness evaluation
`predict` runs with `attack=` (`robustness`, `flags`, `report`).

A layer above `data` and below `models`: the LightningModule trains with `training`'s
objectives, so nothing here imports models, evaluation, training or build. One PGD
implementation serves evaluation and training alike.
"""
