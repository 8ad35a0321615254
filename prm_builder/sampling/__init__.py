"""The model_sampled config's engine: the request scheduler, Monte Carlo search, the generation cache, the backends and the judge."""
