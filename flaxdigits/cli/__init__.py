"""The `flaxdigits` command: main (parse, dispatch, one line per expected failure) and parser (the
arguments of every subcommand).
"""
