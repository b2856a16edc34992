"""The dataset: the labels index and its checks, images, masks, the manifest, splits, processed arrays,
label corrections, the diff between versions, and the generated demo."""
