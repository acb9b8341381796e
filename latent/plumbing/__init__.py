"""What every stage needs to run: params (validated), the pipeline's definition (dvc.yaml), the
random streams, the devices, and the console (progress lines, one-line errors)."""
