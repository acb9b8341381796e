"""Several devices: training runs under tf.distribute.MirroredStrategy (two logical CPUs here)."""

import json
import subprocess
import sys
import textwrap

from tests.conftest import REPO

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[1])
    from latent.training import fit as train
    from tests.test_train import TRAIN_PARAMS, make_splits
    splits = make_splits()
    p = TRAIN_PARAMS
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    snapshot_images = splits["test"].images[:10].astype(np.float32)
    run = train.fit(p, splits["train"], splits["valid"], snapshot_images, strategy=strategy,
                    report=lambda m: None)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "device": run.device,
                      "valid_elbo": [r.logs["val_elbo"] for r in run.records],
                      "variable_types": sorted({type(v.value).__name__
                                                for v in run.model.weights})}))
""")


def test_training_under_mirrored_strategy_with_two_logical_devices():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(REPO)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and "2 replicas" in report["device"]
    assert report["variable_types"] == ["MirroredVariable"]  # one copy per device, kept in sync
    valid = report["valid_elbo"]
    assert len(valid) == 3 and valid[-1] > valid[0]
