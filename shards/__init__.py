"""Converters: raw dataset layouts -> WebDataset tar shards + index.json.

    python -m shards FORMAT --src RAW_DIR --out OUT_DIR [--size PX] [--split ...]

One module per FORMAT (celeba, faces, anime, mnistm, usps, svhn, maps, digits, digits_m for
`digits-m`), each with `add_arguments(parser)` and `convert(args, writer) -> index fields`;
common.py holds what they share (layout checks, image reading, writing items), labelled.py the
digit datasets' shared layouts, writer.py the shard writer, index.py `python -m shards index`. Layouts: docs/data.md.
"""
