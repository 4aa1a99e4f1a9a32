"""Time and energy to a quality target: the numbers, the report section and the figures."""
