"""Learning: the epoch engine, networks, augmentation, training, evaluation, prediction, metrics and pictures."""
