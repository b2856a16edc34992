"""Configuration: params.yaml, the only config the stages read, and its composition from conf/ by Hydra."""
