"""The drawing page: Gradio Blocks over the runtime (app, views, components), the guard in front
of every route its server mounts and the budgets it holds each route to (guard, budgets,
temp_files), and the address it binds (hosting).
"""
