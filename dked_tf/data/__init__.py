"""Readers and writers of HRSC2016 and DOTA, the synthetic dataset, tiling, the tf.data pipeline."""

from dked_tf.data.records import DatasetInfo, ImageRecord

__all__ = ["DatasetInfo", "ImageRecord"]
