"""The streaming component: the features, labels and drift dataflows.

Every flow has one layout: pure steps, ``config.py`` (settings resolved at the
edge), ``metrics.py``, ``bytewax_flow.py`` (the only Bytewax code: sources,
sinks, ``build_flow``), ``run.py`` (recovery, running, ``flow_from_env``) and
``commands.py`` (its CLI). Pieces they share live in :mod:`.common`.
"""
