"""The `flaxdigits` command: commands (the table: one row per subcommand, its arguments and its
handler), commands_train/_export/_serve/_release (those functions, by group), parser (the table as
argparse) and main (parse, dispatch, one line per expected failure).
"""
