"""``introllm experiment``'s engine (installed as ``introllm.experiment``): the grid of train and eval
jobs run as subprocesses of the public CLI (``runner``), its Markdown report (``report``) and the
statistics behind its intervals (``stats``)."""
