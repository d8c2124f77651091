"""The Test Orchestra: the playbook's declared orchestra (a conductor, sections of agents, and
failure-handling rules), in TOML beside the node specs, run through a Client (``mesh run``)."""

from .spec import Orchestra, Section, load_orchestra, parse_orchestra

__all__ = ["Orchestra", "Section", "load_orchestra", "parse_orchestra"]
