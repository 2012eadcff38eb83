"""Build target datasets offline: python -m data_pipelines.datasets NAME --manual_dir D --data_dir T."""
from __future__ import annotations

import argparse
import collections

from data_pipelines import datasets


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("name", choices=sorted(datasets.BUILDERS))
    p.add_argument("--manual_dir", required=True, help="the dataset as extracted (see the builder's instructions)")
    p.add_argument("--data_dir", required=True, help="where TFDS writes the prepared dataset")
    p.add_argument("--config", default="first29s", choices=[c.name for c in datasets.CONFIGS])
    p.add_argument("--list_only", action="store_true", help="check the layout and count examples; decode nothing")
    args = p.parse_args(argv)
    if args.list_only:
        b = datasets.builder(args.name, args.data_dir, args.config)
        examples = b.ordered_examples(args.manual_dir)
        print(f"{args.name}: {len(examples)} examples; splits "
              f"{dict(collections.Counter(e.split for e in examples))}")
        return 0
    b = datasets.build(args.name, args.manual_dir, args.data_dir, args.config)
    print(f"{b.info.full_name} in {b.data_path}: "
          + ", ".join(f"{s} {info.num_examples}" for s, info in b.info.splits.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
