"""The library of the VAE pipeline: everything the stages (``stages/``) share, by subject.

    plotting/     the figures
    training/     fitting the model: input pipelines, callbacks, the optimizer, the training run
    estimators/   log p(x) and the inference gaps: importance sampling, quadrature, refinement
    records/      what a run leaves: all-or-nothing outputs, saved networks, curves, the backup
    model/        the model and its equations: the VAE of the seed post (vae), the flow posterior,
                  the VampPrior (prior)
    data/         MNIST's sources, files and binarizations
    plumbing/     params, dvc.yaml, random streams, devices, the console

Each subject imports only subjects listed below it (tests/test_dvc_yaml.py checks it).
"""
