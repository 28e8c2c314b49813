"""The composed config printed as a tree at the start of a run."""

from __future__ import annotations

import io

from bionn.config.tree import print_config_tree


def test_tree_has_one_branch_per_group_with_its_resolved_yaml(compose):
    cfg = compose("model=P", "debug=quick")
    out = io.StringIO()
    print_config_tree(cfg, file=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "config"
    assert [line[4:] for line in lines if line[:4] in ("├── ", "└── ")] == [
        "model",
        "dataset",
        "training",
        "runtime",
        "logger",
    ]
    text = out.getvalue()
    assert "name: P" in text and "n_samples: 640" in text and "stats_cache_dir: null" in text
    assert "\x1b[" not in text  # no colour codes outside a terminal
