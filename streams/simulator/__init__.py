"""Empty on purpose: the simulator moved out of the streams component.

A repo's simulator is ``simulate(config)`` in its own ``simulator.py`` (the
fraud one: ``examples/fraud/simulator.py``), driven by :mod:`loopline.simulation`
(``loopline simulate``, ``loopline demo``). This package stays only while
pyproject.toml still lists ``loopline.streams.simulator``; delete both together.
"""
