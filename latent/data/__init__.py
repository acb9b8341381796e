"""Where MNIST comes from (verified downloads), its files, and its binarizations."""
