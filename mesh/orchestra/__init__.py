"""The Test Orchestra: the playbook's declared orchestra (a conductor, sections of agents, and
failure-handling rules), in TOML beside the node specs, run through a Client (``mesh run``).

    orchestra = load_orchestra("nodes/orchestra-run.toml")
    with mesh.connect() as client:
        report = Conductor(orchestra, client).run()
    print(report.summary())
"""

from .conductor import Conductor, Progress
from .conflicts import Conflict, Settled, by_evidence
from .events import START
from .progress import LiveView
from .report import Outcome, Report, SectionReport
from .spec import Orchestra, Section, load_orchestra, parse_orchestra

__all__ = ["START", "Conductor", "Conflict", "LiveView", "Orchestra", "Outcome", "Progress", "Report", "Section", "SectionReport",
           "Settled", "by_evidence", "load_orchestra", "parse_orchestra"]
