"""What the tests share: drawings, toy ONNX models, MNIST, fuzzing, free ports, the browser."""
