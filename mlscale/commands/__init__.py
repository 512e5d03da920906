"""Sub-commands of the ``mlscale`` CLI.

Each module has ``add_arguments(parser)`` and ``run(args, comm)``.
"""
