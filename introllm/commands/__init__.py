"""The subcommands of ``introllm``, one module each (installed as ``introllm.commands``): each has an
``add_parser(sub)`` that ``introllm.cli`` collects, flags generated from the command's typed config
(``common.add_config_flags``), and a ``run(args)``. Commands import the libraries (``introllm.sampler``,
``training``, ``server``, ``clients``, ``benchmarks``); no library imports a command."""
