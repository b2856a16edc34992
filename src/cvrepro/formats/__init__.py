"""Importers and exporters as plug-ins: COCO, YOLO, Pascal VOC, mask folders, ImageFolder <-> data/raw + data/labels.

One folder per format (`coco/`, `yolo/`, ...), each with NAME, TASK, `detect`, `read` and `write`;
`registry` lists them; `transfer` holds the drivers; `common` the in-memory `Dataset` they share.
Source layouts: docs/import-export.md.
"""
