"""What one stage-2 run did: the funnel from generated to kept images, the folds' AUROC, restarts, time and outputs
(returned by cnn/stage.py, drawn by cnn/plots.py, printed by run_cnn.py)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StageSummary:
    generated: int
    labelled: int
    labelled_by_annotator: int
    kept: int
    kept_labelled: int
    kept_predicted: int
    fold_auroc: dict[str, list[float]]
    restart_caps_hit: dict[str, int]
    seconds: float
    outputs: dict[str, str]
    # images failing each property's rule (an image can fail several); labelled ones excluded if so configured
    rejected_by: dict[str, int] = field(default_factory=dict)
    excluded_labelled: int = 0
    # properties left out for too few labels of one class (skip_scarce_properties): name -> reason
    skipped: dict[str, str] = field(default_factory=dict)
    # the annotator's label fractions on a sample of the kept images (audit_kept): label -> fraction, + "sample"
    kept_audit: dict[str, float] = field(default_factory=dict)

    def funnel_line(self) -> str:
        source = f", {self.labelled_by_annotator} by the annotator" if self.labelled_by_annotator else ""
        rejected = ", ".join(f"{prop} {count}" for prop, count in self.rejected_by.items())
        excluded = f"; {self.excluded_labelled} labelled excluded" if self.excluded_labelled else ""
        skipped = "".join(f"; {prop} not filtered ({why})" for prop, why in self.skipped.items())
        audit = ""
        if self.kept_audit:
            audit = f"; annotator on {int(self.kept_audit['sample'])} kept: " + ", ".join(
                f"{label} {100 * value:.1f} %" for label, value in self.kept_audit.items() if label != "sample")
        return (f"funnel: generated {self.generated} -> labelled {self.labelled}{source} -> kept {self.kept} "
                f"({self.kept_labelled} labelled + {self.kept_predicted} predicted)"
                + (f"; rejected by {rejected}" if rejected else "") + excluded + skipped + audit)
