"""The inference benchmark (``python -m bologan.bench --inference``): settings and the run
(``inference``), the timed call (``inference_timing``), meter and energy figures
(``inference_energy``), figure and summary (``inference_report``), the flags (``inference_cli``).

Importing this package is cheap: nothing here imports TensorFlow at import time."""
