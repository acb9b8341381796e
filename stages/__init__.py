"""Stages of the VAE pipeline (one module per DVC stage) and the modules they share.

Stages: fetch, fetch_larochelle, prepare, train, evaluate, figures. Each stage module has a
``main()`` and runs as ``python -m stages.<name>``; dvc.yaml lists exactly the params each reads.
Shared code: params (load and validate params.yaml), atomic (all-or-nothing outputs), runtime
(logging, errors, devices), sources (verified MNIST downloads), datasets (prepared splits),
vae (the model), likelihood (ELBO and importance-sampled log p(x) on saved networks).
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notes) hides the stages' own progress;
# set before any stage imports TensorFlow. Override by exporting TF_CPP_MIN_LOG_LEVEL yourself.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
