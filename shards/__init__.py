"""Converters: raw dataset layouts -> WebDataset tar shards + index.json.

    python -m shards digits --out data/digits

Each FORMAT is one module with a `convert(args) -> dict` that yields samples into a
`ShardSetWriter`; see ../shared/DATASETS.md for the layouts and shards/__main__.py for the CLI.
"""
