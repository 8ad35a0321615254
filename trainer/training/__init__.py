"""Training a PRM: the config, the trainer (which evaluates with ../evaluating), mixtures of datasets and the model card."""
