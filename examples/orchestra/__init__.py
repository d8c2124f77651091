"""The Test Orchestra of the playbook as a working example: agents that test the small project in
``sample_project/`` (see ``agents.py``; run it with ``mesh up nodes/orchestra.toml`` and
``mesh run nodes/orchestra-run.toml``)."""
