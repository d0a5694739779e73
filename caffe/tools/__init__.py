"""Command-line tools. Each ``caffe/tools/<name>.py`` module with ``COMMAND`` (its name on the
command line), ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int`` is a subcommand of
``caffe`` (and may also be installed as its own console script)."""
