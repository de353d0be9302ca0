"""Datasets: the record type (`records`), readers and writers of HRSC2016 (`hrsc`) and DOTA /
Task1 (`dota`), image files (`images`), the built-in synthetic sets (`synthetic`: easy scenes,
`realistic`: harbours, coasts and open sea), DOTA tiling and merging (`split`), augmentation
(`augment`) and the tf.data pipeline (`pipeline`).

Import from the modules (`from dked_tf.data.hrsc import read_hrsc`); the readers load without
TensorFlow, `augment` and `pipeline` need it.
"""
