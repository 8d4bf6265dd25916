"""The report: the MLP-vs-CNN comparison of trained runs at each epoch count (compare), the
robustness and canvas measurements as tables (robustness) and curves (plots). It reads runs and
measurement files.
"""
