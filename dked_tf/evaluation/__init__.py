"""Evaluation: devkit-faithful rotated mAP (`metrics`), COCO-style AP50:95 / AP50 / AP75 with
pycocotools' matching (`coco`), scoring folders of result files
(`folders`), running a model over records (`runner`) or a .tflite (`tflite`), localisation
diagnostics (`diagnostics`) and a Keras callback (`callback`).

Import from the modules; `metrics`, `coco` and `folders` load without TensorFlow (so `dked-tf evaluate`
starts fast), the others need it.
"""
