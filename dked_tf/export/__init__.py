"""dked_tf.export: deployment formats.

- `saved_model.export_saved_model` — TF Serving signatures (`serving_default` uint8 images,
  `serving_image_bytes` JPEG/PNG), letterbox and exact rotated NMS in the graph.
- `tflite.export_tflite` — builtin-op .tflite (fp32 / fp16 / int8) with the per-cell decode
  inside and NMS on the host (`tflite/detect.py`), or `nms="fast"` in the graph;
  `dked_tf.evaluation.tflite.evaluate_tflite` for accuracy parity.
- `onnx.export_onnx` — ONNX opset 17 (tf2onnx), checked with onnxruntime.
- `tensorrt.build_tensorrt_engine` / `tensorrt.convert_tftrt` — Jetson routes.

Submodules are imported on use (each pulls TensorFlow and its converter).
"""

__all__ = ["saved_model", "tflite", "onnx", "tensorrt"]
