"""Benchmarks, run as `dked-tf bench NAME` or `python -m dked_tf.bench NAME`.

Every benchmark measures its competitors side by side in one run (the machine is shared and
noisy, so only ratios measured together are meaningful), prints a table and writes JSON.
"""
