"""Ridge-regression baseline of a dataset: per-output R-squared on its test split.

Fits ridge regression (bionn.baseline: closed form, training split streamed,
alpha chosen on the validation split) and caches the result under
`<stats cache dir>/baseline/`, where the sweep report finds it
(`bionn.baseline.cached_baseline`). Prints a JSON object as its last line.

    python scripts/baseline_ridge.py --dataset dmedium --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from bionn.baseline import baseline_path, cached_baseline
from bionn.config.dataset import resolve_dataset
from bionn.config.errors import ConfigError
from bionn.data.dataset import KineticsDataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", required=True, help="a name in conf/dataset/ or a dataset YAML file")
    parser.add_argument("--cache-dir", help="statistics cache folder (default: $BIONN_CACHE_DIR/stats)")
    parser.add_argument("--config-dir", help="the conf/ folder (default: ./conf)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    try:
        cfg = resolve_dataset(args.dataset, args.config_dir)
    except ConfigError as err:
        print(f"baseline_ridge: {err}", file=sys.stderr)
        return 2
    ds = KineticsDataset(cfg, source=args.dataset)
    started = time.time()
    result = cached_baseline(ds, args.cache_dir, compute=True)
    result = {
        **result,
        "cache_file": str(baseline_path(ds, args.cache_dir)),
        "seconds": round(time.time() - started, 1),
    }
    if not args.json:
        print(f"ridge on {ds.name}: test r2_mean {result['r2_mean']:.4f} (alpha {result['alpha']:g})")
        for j, value in enumerate(result["r2_per_output"]):
            print(
                f"  output {j:2d} (component {j // 4 + 1}, species {'E S ES P'.split()[j % 4]}): {value:.4f}"
            )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
