"""Stages of the VAE pipeline (one module per DVC stage) and the modules they share.

Stages: fetch, fetch_larochelle, prepare, train, evaluate, inference_gap, figures. Each stage
module has a ``main()`` and runs as ``python -m stages.<name>``; dvc.yaml lists exactly the params
each reads and every module it imports. Shared code: params (load and validate params.yaml),
atomic (all-or-nothing, byte-stable outputs), runtime (logging, errors, quiet start-up), devices,
sources (verified MNIST downloads), datasets (prepared splits, binarization), vae (the model and
its equations), flow (the IAF posterior's networks and bijector), importance_sampling (log p(x)
and the ELBO of saved networks), history (curves and posterior snapshots of training), backup
(resumable training), plotting (figure helpers).
"""

import sys

from stages.runtime import start_tensorflow_quietly

# Run as a stage (python -m stages.<name>): TensorFlow's C++ start-up lines would hide the
# stage's own progress and read as failures; start it quietly before any module imports it.
_argv = sys.orig_argv
if "-m" in _argv[:-1] and _argv[_argv.index("-m") + 1].startswith("stages."):
    start_tensorflow_quietly()
