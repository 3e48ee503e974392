"""ONNX conformance tier: ONNX's own node test cases, adapted as a user would, run through hec."""
