#!/usr/bin/env bash
# The GPU checks in one call, on a machine with an NVIDIA GPU and a package index:
#   bash benchmarks/gpu.sh              tests of the model, estimator, training and multi-GPU
#                                       code on the GPU, then benchmarks/benchmark.py (training
#                                       examples/s at batch 128 and 1024, log p(x) with k = 1000
#                                       and 5000 on the 10k test set)
#   IWAE50=1 bash benchmarks/gpu.sh     and then the IWAE k = 50 run on dynamic binarization with
#                                       Burda et al.'s full schedule (3,280 epochs; hours)
# It installs TensorFlow's CUDA build into .venv-gpu (docs/reproducibility.md, "Running on a GPU") and stops with
# a message where TensorFlow sees no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-gpu
. .venv-gpu/bin/activate
pip install -q -r requirements.txt "tensorflow[and-cuda]==2.21.0"
python -c '
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
if not gpus:
    raise SystemExit("TensorFlow sees no GPU here: nothing to check")
print("TensorFlow sees", [tf.config.experimental.get_device_details(g)["device_name"] for g in gpus])
'
python -m pytest -q tests/test_vae.py tests/test_flow.py tests/test_importance_sampling.py \
    tests/test_train.py tests/test_strategy.py tests/test_inference_gap.py
dvc repro prepare
python benchmarks/benchmark.py --only train eval
if [ "${IWAE50:-0}" = 1 ]; then
    dvc exp run -n gpu-iwae50-dreg -S latent_dim=50 -S 'hidden_units=[500,500]' \
        -S binarization=dynamic -S train_samples=50 -S gradient_estimator=dreg \
        -S lr_schedule=iwae -S epochs=3280 -S batch_size=20 -S patience=3280 -S ema=true
    python tools/results.py add gpu-iwae50-dreg --exp gpu-iwae50-dreg --command "IWAE50=1 bash benchmarks/gpu.sh"
fi
