"""The pipeline's stages: one thin `run(params, root)` per `dvc.yaml` stage, which reads what the
stage reads, calls the library and writes the stage's outputs. Nothing imports this package
but the command line (`cvrepro <stage>`) and tests."""
