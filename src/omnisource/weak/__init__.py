"""Learning from weakly-labelled web data: weak-label pre-training (Ghadiyaram et al. 2019) and
Sub-Pseudo Labels (SPL), then fine-tuning or linear-probe evaluation on the target."""
