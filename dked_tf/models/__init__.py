"""Models: backbones (`backbones`), necks (`necks`), the `OrientedDetector` (`detector`) and the
named presets (`presets.build_model`, `presets.build_detector`, `count_params`, `gflops`)."""
