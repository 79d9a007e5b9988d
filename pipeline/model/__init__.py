"""Everything that builds, trains or runs a Keras model."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any module of this package imports TensorFlow
