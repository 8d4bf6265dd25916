"""The static site's sources (page, JavaScript preprocessing, styles, the npm lock of
onnxruntime-web), installed as package data: `flaxdigits web` assembles the site from them.
"""
