"""MoCo v1/v2 pretraining: maths (:mod:`.moco`), split BN, augmentations, schedule, config, engine."""
