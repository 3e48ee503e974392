"""The ``hec`` command line (click). Importing it must stay cheap: no openfhe, no onnxruntime."""
