"""Tagging metrics: macro ROC-AUC and PR-AUC over tags (scikit-learn under the hood)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def tagging_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """labels, probs: (n_clips, n_tags). Tags with only one class in `labels` have no
    AUC and are skipped; `n_tags_scored` says how many counted."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, np.float64)
    if labels.shape != probs.shape:
        raise ValueError(f"labels {labels.shape} and probabilities {probs.shape} differ in shape")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probabilities contain NaN or infinite values")
    scored = [k for k in range(labels.shape[1]) if 0 < labels[:, k].sum() < len(labels)]
    if not scored:
        return {"roc_auc": float("nan"), "pr_auc": float("nan"), "n_tags_scored": 0}
    y, p = labels[:, scored], probs[:, scored]
    return {"roc_auc": float(roc_auc_score(y, p, average="macro")),
            "pr_auc": float(average_precision_score(y, p, average="macro")),
            "n_tags_scored": len(scored)}
