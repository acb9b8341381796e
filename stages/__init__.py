"""The stages of the VAE pipeline, one module per DVC stage and nothing else.

fetch, fetch_larochelle, prepare, train, evaluate, inference_gap, ais, figures, explorer: each has
a ``main()`` that reads its params (the ones dvc.yaml lists for it), calls the library
(``latent``) and writes its outputs, and runs as ``python -m stages.<name>``. No stage imports
another.
"""

import sys

from latent.plumbing.runtime import exit_interrupted, start_tensorflow_quietly

# Run as a stage (python -m stages.<name>): TensorFlow's C++ start-up lines would hide the
# stage's own progress and read as failures; start it quietly before any module imports it.
_argv = sys.orig_argv
if "-m" in _argv[:-1] and _argv[_argv.index("-m") + 1].startswith("stages."):
    try:
        start_tensorflow_quietly()
    except KeyboardInterrupt:  # Ctrl-C while TensorFlow starts: the same one line as later
        exit_interrupted()
