"""The ``nas`` command line, above every layer of the project (nas_env < slurm < agents < evaluation).

- :mod:`nas_cli.main`: the parser, :func:`~nas_cli.main.main` (the ``nas`` script) and its error handling;
- :mod:`nas_cli.search`: ``nas search``;
- :mod:`nas_cli.evaluation`: ``nas compare``, ``nas report``, ``nas retrain`` and ``nas export``;
- :mod:`nas_cli.arguments`: argparse types shared by the sub-commands (:func:`~nas_cli.arguments.json_object`).

``python -m nas_cli`` is the same as ``nas``.
"""
