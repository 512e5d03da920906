"""Sub-commands of the ``mlscale`` CLI: each module has ``add_arguments(parser)`` and ``run(args, comm)``."""
