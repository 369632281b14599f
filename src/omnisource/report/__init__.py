"""The experiment report: one self-contained HTML page with the pipeline's numbers and plots."""
from .stage import report_stage, write_report

__all__ = ["report_stage", "write_report"]
