"""The run on disk: one home for what a run writes and reads back.

    checkpoint   the checkpoint format, read once into a typed `RunCheckpoint` (the only
                 `torch.load`), its file names, `ckpt_path=auto`
    rng          the random generators' states a checkpoint carries for exact resumes
    saving       checkpoints written atomically (a Lightning `CheckpointIO`)
    callbacks    best.ckpt / last.ckpt, resumable into any folder, stored paths confined
    resume_state the training state a resume hands to Lightning, checked against this run's own
                 loops, optimizer, schedule, callbacks and module first
    rebuild      a run's config rebuilt from a checkpoint (resume and predict), trusted objects only
    record       metrics.json from start to end (`RunRecord`), read back by report

Base layer: it imports no other cifar-lab package but `errors` and `files`.
"""
